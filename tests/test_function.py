"""Cardiac function from label maps: known answers on hand-made ventricles, subjects, cohorts, CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from cardiolab.__main__ import main
from cardiolab.core import CardiolabError
from cardiolab.io.acdc import read_acdc
from cardiolab.io.cohort import LABELS, Subject, make_affine, write_subject
from cardiolab.metrics.function import (cardiac_function, cohort_function, function_from_labels,
                                        volume_curves)

VOXEL_MM = (2.0, 2.0, 5.0)
VOXEL_ML = 2.0 * 2.0 * 5.0 / 1000.0  # 0.02 ml


def beating_series(lv_sides=(6, 5, 4, 3, 4, 5), slices=2, rv_side=(5, 3)) -> np.ndarray:
    """(X, Y, Z, T) labels: an LV cube of side lv_sides[t] x lv_sides[t] x slices, wrapped in a one-voxel
    MYO shell in-plane, and an RV square of side rv_side[0] at frame 0 and rv_side[1] at the LV minimum."""
    T = len(lv_sides)
    series = np.zeros((24, 24, slices, T), np.uint8)
    es = int(np.argmin(lv_sides))
    for t, side in enumerate(lv_sides):
        series[1:side + 3, 1:side + 3, :, t] = LABELS["MYO"]
        series[2:side + 2, 2:side + 2, :, t] = LABELS["LV"]
        rv = rv_side[1] if t == es else rv_side[0]
        series[14:14 + rv, 14:14 + rv, :, t] = LABELS["RV"]
    return series


def test_function_known_answer():
    series = beating_series()
    f = function_from_labels(series, VOXEL_ML)
    assert (f["ed"], f["es"]) == (0, 3)                       # max / min LV volume
    assert f["EDV"] == pytest.approx(36 * 2 * VOXEL_ML)       # 6x6 x 2 slices
    assert f["ESV"] == pytest.approx(9 * 2 * VOXEL_ML)        # 3x3 x 2 slices
    assert f["SV"] == pytest.approx(27 * 2 * VOXEL_ML)
    assert f["EF"] == pytest.approx(75.0)
    assert f["LV_mass"] == pytest.approx((8 * 8 - 36) * 2 * VOXEL_ML * 1.05)   # shell at ED
    assert f["RV_EDV"] == pytest.approx(25 * 2 * VOXEL_ML)
    assert f["RV_ESV"] == pytest.approx(9 * 2 * VOXEL_ML)
    assert f["RV_EF"] == pytest.approx(64.0)


def test_function_given_frames_and_inputs():
    series = beating_series()
    f = function_from_labels(series, VOXEL_ML, ed=1, es=2)
    assert f["EF"] == pytest.approx(100 * (25 - 16) / 25)
    # torch (D, H, W, T) input gives the same numbers as numpy (X, Y, Z, T): only voxel counts matter
    g = function_from_labels(torch.from_numpy(series).permute(2, 0, 1, 3), VOXEL_ML)
    assert g == function_from_labels(series, VOXEL_ML)
    curves = volume_curves(series, VOXEL_ML)
    np.testing.assert_allclose(curves["LV"] / (2 * VOXEL_ML), [36, 25, 16, 9, 16, 25])
    empty = function_from_labels(np.zeros((4, 4, 1, 3), np.uint8), 1.0)
    assert empty["EDV"] == 0
    assert math.isnan(empty["EF"])
    with pytest.raises(CardiolabError, match="es=7 outside 0..5"):
        function_from_labels(series, VOXEL_ML, ed=0, es=7)
    with pytest.raises(CardiolabError, match="must be"):
        function_from_labels(np.zeros(5), 1.0)


def make_subject(sid: str, lv_sides, group: str) -> Subject:
    series = beating_series(lv_sides)
    ed, es = int(np.argmax(lv_sides)), int(np.argmin(lv_sides))
    image = series.astype(np.float32) / 3
    return Subject(id=sid, image=image, affine=make_affine(VOXEL_MM), frame_ms=50.0, ed=ed, es=es,
                   labels={ed: series[..., ed], es: series[..., es]}, info={"Group": group})


def test_cardiac_function_subject_and_disk_round_trip(tmp_path):
    subject = make_subject("patient001", (6, 5, 4, 3, 4, 5), "NOR")
    f = cardiac_function(subject)
    assert f["id"] == "patient001"
    assert f["Group"] == "NOR"
    assert (f["ed"], f["es"]) == (0, 3)
    assert f["EF"] == pytest.approx(75.0)
    write_subject(tmp_path, subject)
    (back,) = list(read_acdc(tmp_path))
    assert cardiac_function(back) == pytest.approx(f)
    no_labels = Subject(id="x", image=subject.image, affine=subject.affine, frame_ms=50.0, ed=0, es=3)
    with pytest.raises(CardiolabError, match="subject x: no labels at the ED and ES frame"):
        cardiac_function(no_labels)


def test_cohort_function_summary():
    subjects = [make_subject("a", (6, 3), "NOR"),        # EF 75
                make_subject("b", (6, 4), "NOR"),        # EF 100 * 20/36
                make_subject("c", (4, 2), "DCM"),        # EF 75
                Subject(id="d", image=np.zeros((2, 2, 1, 2), np.float32), affine=np.eye(4), frame_ms=1.0,
                        ed=0, es=1)]                     # unlabelled: skipped
    table, summary = cohort_function(subjects)
    assert list(table["id"]) == ["a", "b", "c"]
    assert summary["skipped"] == ["d"]
    efs = [75.0, 100 * 20 / 36, 75.0]
    assert summary["all"]["EF"]["mean"] == pytest.approx(np.mean(efs))
    assert summary["all"]["EF"]["std"] == pytest.approx(np.std(efs, ddof=1))
    assert summary["all"]["EF"]["n"] == 3
    assert summary["by_group"]["NOR"]["EF"]["mean"] == pytest.approx(np.mean(efs[:2]))
    assert summary["by_group"]["DCM"]["EF"]["std"] is None   # one subject: no spread
    json.dumps(summary, allow_nan=False)                     # JSON-safe as returned


def test_function_cli_writes_json(tmp_path, capsys):
    root = tmp_path / "cohort"
    write_subject(root, make_subject("patient001", (6, 5, 4, 3, 4, 5), "NOR"))
    write_subject(root, make_subject("patient002", (5, 4, 3, 4), "HCM"))
    out = tmp_path / "out" / "function.json"
    assert main(["function", "--root", str(root), "--layout", "acdc", "--json", str(out)]) == 0
    assert "patient002" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert [s["id"] for s in result["subjects"]] == ["patient001", "patient002"]
    s2 = result["subjects"][1]
    assert s2["EDV"] == pytest.approx(25 * 2 * VOXEL_ML)
    assert s2["EF"] == pytest.approx(100 * 16 / 25)
    assert s2["Group"] == "HCM"
    assert (s2["ed"], s2["es"]) == (0, 2)
    assert set(result["summary"]["by_group"]) == {"HCM", "NOR"}
    assert result["summary"]["all"]["EDV"]["n"] == 2
    assert main(["function", "--root", str(tmp_path / "nowhere")]) == 2   # CardiolabError -> exit 2
    assert "not a folder" in capsys.readouterr().err


def test_phantom_cross_check(tmp_path):
    """The phantom's own ground truth (counted independently) agrees with what `function` measures on disk."""
    phantom = pytest.importorskip("cardiolab.data.phantom")
    from cardiolab.io.layouts import validate_cohort
    subject, truth = phantom.make_subject(2, seed=0, size=32, spacing=6.0, slices=4, frames=8)
    write_subject(tmp_path, subject)
    assert validate_cohort(tmp_path) == []
    (back,) = list(read_acdc(tmp_path))
    f = cardiac_function(back)
    for key in ("EDV", "ESV", "SV", "EF", "LV_mass", "RV_EDV", "RV_ESV", "RV_EF"):
        assert f[key] == pytest.approx(truth[key], rel=1e-6), key
    auto = function_from_labels(back.label_series, back.voxel_ml)   # ED/ES found from the LV curve
    assert auto["EDV"] == pytest.approx(truth["EDV"])
    assert auto["ESV"] == pytest.approx(truth["ESV"])


def test_the_real_side_is_measured_once_per_segmenter(tmp_path, monkeypatch):
    """`synthetic_function` compares every cohort with the same holdout: measured once per process, anew when the
    segmenter's weights change."""
    import torch

    from cardiolab.evaluation import function
    from cardiolab.profiles import get_profile

    calls = []
    monkeypatch.setattr(function, "measure_cohort", lambda root, model, profile, ids=None, source="segment":
                        calls.append(root) or (pd.DataFrame({"EF": [60.0]}), pd.DataFrame({"area": [1.0]})))
    model, smoke = torch.nn.Linear(2, 2), get_profile("smoke")
    first = function._real_measure(tmp_path, model, smoke, ["a", "b"], "segment")
    first[0].loc[0, "EF"] = 0.0                               # a caller's edit does not reach the memo
    again = function._real_measure(tmp_path, model, smoke, ["a", "b"], "segment")
    assert len(calls) == 1 and again[0].EF.tolist() == [60.0]
    with torch.no_grad():
        model.weight.add_(1.0)                                # retrained: measured anew
    function._real_measure(tmp_path, model, smoke, ["a", "b"], "segment")
    function._real_measure(tmp_path, model, smoke, ["a"], "segment")                  # other subjects: anew
    assert len(calls) == 3
