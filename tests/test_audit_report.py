"""`audit report`: the audit card and the report's privacy section, on a smoke root holding one sample cohort."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cardiolab.__main__ import main


@pytest.fixture(scope="module")
def root(smoke_cache, phantom_root, tmp_path_factory):
    from cardiolab.core import write_json
    from cardiolab.metrics.privacy import attack_summary

    root = tmp_path_factory.mktemp("report")
    (root / "data" / "cache").mkdir(parents=True)
    (root / "data" / "cache" / "smoke").symlink_to(smoke_cache)
    (root / "runs" / "smoke" / "samples").mkdir(parents=True)
    (root / "runs" / "smoke" / "samples" / "dit").symlink_to(phantom_root)
    members = np.r_[np.ones(5, bool), np.zeros(5, bool)]
    write_json(root / "runs" / "smoke" / "audit" / "mia-dit.json", {
        "kind": "cardiolab-audit-mia", "run": "runs/smoke/dit", "n_members": 5, "n_nonmembers": 5, "dp": None,
        "figure": "mia-dit.png", "attacks": {"loss": attack_summary(np.arange(10.0), members, n_boot=10)}})
    mp = pytest.MonkeyPatch()
    mp.setenv("CARDIOLAB_ROOT", str(root))
    assert main(["audit", "report", "--profile", "smoke"]) == 0
    mp.undo()
    return root / "runs" / "smoke"


def test_audit_report_audits_every_sample_cohort(root):
    r = json.loads((root / "audit" / "copies-dit.json").read_text())
    assert {"threshold", "copy_fraction", "memorized_fraction", "per_synthetic"} <= set(r)


def test_audit_card_lists_copies_and_mia(root):
    card = (root / "audit" / "card.md").read_text()
    assert "| dit | pixels |" in card
    assert "| dit | loss |" in card


def test_audit_card_draws_dcr_histograms(root):
    assert (root / "audit" / "figures" / "dcr-copies-dit.png").exists()


def test_report_has_a_privacy_section(root):
    from cardiolab.reporting.report import build_report

    assert "## Privacy audits" in build_report(root).read_text()


def test_audit_report_percentile_150_exits_2(root, monkeypatch, capsys):
    monkeypatch.setenv("CARDIOLAB_ROOT", str(root.parent.parent))
    assert main(["audit", "report", "--profile", "smoke", "--percentile", "150"]) == 2
