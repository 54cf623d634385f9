"""The `segment` verb: labels written in the input's own geometry (flips, resampling, crop undone), read back by
`check` and `function`; Dice in the input geometry matches the segmenter's own score; bad input exits 2."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cardiolab.profiles import get_profile
from cardiolab.__main__ import main
from cardiolab.data.cines import cohort_volumes
from cardiolab.io.acdc import read_acdc
from cardiolab.io.cohort import write_subject
from cardiolab.evaluation.segment import segment_cohort, segment_subject
from cardiolab.tasks import segmenter as seg


@pytest.fixture(scope="module")
def seg_run(smoke_cache, tmp_path_factory):
    """A smoke segmenter trained briefly on the shared phantom cache (good enough to compare scores)."""
    return seg.train(get_profile("smoke"), out=tmp_path_factory.mktemp("segrun") / "segmenter", steps=200,
                     cache_dir=smoke_cache,
                     evaluate_on=None)


def test_round_trip_is_read_by_check_and_function(phantom_root, seg_run, tmp_path, capsys):
    out = tmp_path / "seg"
    assert main(["segment", "--root", str(phantom_root), "--run", str(seg_run), "--profile", "smoke",
                 "--out", str(out), "--json", str(tmp_path / "s.json")]) == 0
    assert main(["check", "--root", str(out)]) == 0
    assert main(["function", "--root", str(out), "--json", str(tmp_path / "f.json")]) == 0
    before, after = next(iter(read_acdc(phantom_root))), next(iter(read_acdc(out)))
    assert after.label_series.shape == before.image.shape
    assert np.allclose(after.affine, before.affine)
    function = json.loads((tmp_path / "f.json").read_text())
    assert len(function["subjects"]) == len(list(read_acdc(phantom_root)))


def test_dice_in_input_geometry_matches_the_segmenters_own_score(seg_run, tmp_path):
    """A labelled phantom holdout at the smoke profile's own 6 mm (so the comparison measures the crop, roll and
    flip inversion, not the resolution: from 4 mm, nearest-grid effects alone move a thin RV's Dice by ~0.03)."""
    from cardiolab.data.phantom import generate_cohort
    root = tmp_path / "holdout"
    generate_cohort(root, 3, seed=7, size=32, spacing=6.0, slices=6, frames=8)
    summary = segment_cohort(root, tmp_path / "seg", get_profile("smoke"), run=seg_run)
    own = seg.score(seg.load(seg_run), cohort_volumes(root, get_profile("smoke"), all_slices=True))
    rows = summary["per_subject"]
    assert len(rows) == own["n_subjects"] == 3
    for name in ("RV", "MYO", "LV"):
        mine = np.nanmean([r[f"dice_{name}"] for r in rows])
        assert abs(mine - own["dice"][name]) < 0.02, (name, mine, own["dice"][name])


@pytest.mark.parametrize("op", ["flip_x", "swap_xy"])
def test_labels_follow_flipped_and_swapped_affines(phantom_root, seg_run, op):
    subject = next(iter(read_acdc(phantom_root)))
    subject.label_series, subject.labels = None, {}          # both centred from the image alone: same crop
    model = seg.load(seg_run)
    plain = segment_subject(model, subject, get_profile("smoke"))
    other = subject.__class__(**{**subject.__dict__})
    A = subject.affine.copy()
    if op == "flip_x":
        other.image = subject.image[::-1].copy()
        A[:, 3] += A[:, 0] * (subject.image.shape[0] - 1)
        A[:, 0] *= -1
        expect = plain[::-1]
    else:
        other.image = subject.image.swapaxes(0, 1).copy()
        A[:, [0, 1]] = A[:, [1, 0]]
        expect = plain.swapaxes(0, 1)
    other.affine, other.label_series, other.labels = A, None, {}
    assert np.array_equal(segment_subject(model, other, get_profile("smoke")), expect)


def test_bad_inputs_exit_2_and_write_nothing(phantom_root, seg_run, smoke_cache, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["segment", "--profile", "smoke", "--out", str(out)]
    assert main([*args, "--root", str(phantom_root), "--run", str(tmp_path / "nope")]) == 2
    assert not out.exists()
    vq = tmp_path / "notseg"
    vq.mkdir()
    (vq / "config.json").write_text(json.dumps({"task": "vqgan"}))
    assert main([*args, "--root", str(phantom_root), "--run", str(vq)]) == 2
    assert not out.exists()
    broken = tmp_path / "broken"
    write_subject(broken, next(iter(read_acdc(phantom_root))))
    next(broken.glob("*/*_4d.nii.gz")).write_bytes(b"not a nifti")
    assert main([*args, "--root", str(broken), "--run", str(seg_run)]) == 2
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main([*args, "--root", str(phantom_root), "--run", str(seg_run)]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4                                                     # one line per bad input
