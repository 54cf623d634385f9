"""Shared fixtures: a small phantom cohort on disk that any test can read (generated once per session)."""
from __future__ import annotations

import pytest

# Small but anatomically complete: 48 px x 4 mm = the 192 mm field of view of the tiny profile.
PHANTOM_KW = dict(size=48, spacing=4.0, slices=6, frames=10)
PHANTOM_SUBJECTS = 6      # groups cycle NOR, DCM, HCM, MINF, ARV, NOR: every group at least once


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory):
    """A 6-subject phantom cohort in the ACDC layout (patient001..patient006, seed 0) with
    phantom_truth.json and cohort.json; 48x48 px at 4 mm, 6 slices, 10 frames. Treat it as read-only."""
    from cardiolab.data.phantom import generate_cohort

    root = tmp_path_factory.mktemp("phantom")
    generate_cohort(root, PHANTOM_SUBJECTS, seed=0, **PHANTOM_KW)
    return root
