"""RVIP metrics (cardiolab.metrics.landmarks) against hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest

from cardiolab.core import CardiolabError
from cardiolab.metrics import landmarks as lm

NAN = np.nan


def _square_heart() -> np.ndarray:
    """12x12 labels: LV rows 4-6 x cols 5-7, a 1-px MYO ring around it (rows 3-7, cols 4-8), RV in col 3 rows 4-6.

    The RV touches the ring's left column at rows 4..6 (4-neighbours), so the contact arc runs (4, 4) .. (6, 4).
    """
    lab = np.zeros((12, 12), np.int64)
    lab[3:8, 4:9] = 2
    lab[4:7, 5:8] = 3
    lab[4:7, 3] = 1
    return lab


def test_from_labels_hand_map_up_is_anterior():
    ant, inf = lm.from_labels(_square_heart(), anterior_direction=(-1, 0))
    np.testing.assert_array_equal(ant, [4, 4])
    np.testing.assert_array_equal(inf, [6, 4])


def test_from_labels_naming_follows_anterior_direction():
    ant, inf = lm.from_labels(_square_heart(), anterior_direction=(1, 0))
    np.testing.assert_array_equal(ant, [6, 4])
    np.testing.assert_array_equal(inf, [4, 4])


def test_from_labels_none_without_rv():
    lab = _square_heart()
    lab[lab == 1] = 0
    assert lm.from_labels(lab) is None


def test_from_labels_rejects_zero_direction():
    with pytest.raises(CardiolabError, match="anterior_direction"):
        lm.from_labels(_square_heart(), anterior_direction=(0, 0))


def test_points_from_labels_stack_nan_on_empty_slice():
    stack = np.stack([_square_heart(), np.zeros((12, 12), np.int64)])
    pts = lm.points_from_labels(stack)
    assert pts.shape == (2, 2, 2)
    np.testing.assert_array_equal(pts[0], [[4, 4], [6, 4]])
    assert np.isnan(pts[1]).all()


def test_from_labels_matches_phantom_truth(phantom_root):
    """The label rule, named by the phantom's world rule (superior end = anterior), finds the phantom's named
    RVIPs of every frame in the native grid; goal median <= 1.5 px."""
    from cardiolab.data.phantom import read_rvip
    from cardiolab.io.acdc import read_subject, subject_dirs
    errs = []
    for folder in subject_dirs(phantom_root):
        subject = read_subject(folder)
        truth = read_rvip(folder)                                                  # (Z, T, 2, 2) voxel (x, y)
        derived = lm.points_from_labels(np.moveaxis(subject.label_series, (0, 1), (-2, -1)), subject.affine[2, :2])
        errs.append(np.linalg.norm(derived - truth, axis=-1).ravel())
    assert np.nanmedian(np.concatenate(errs)) <= 1.5


def test_levels_thirds():
    assert lm.levels(7).tolist() == ["basal"] * 3 + ["mid"] * 2 + ["apical"] * 2


def test_septal_angle_and_wraparound():
    pts = np.array([[[0, 0], [0, 1]], [[0, 0], [1, 0]], [[0, 0], [-1, 1]]], float)   # +col, +row, -row+col
    np.testing.assert_allclose(lm.septal_angle(pts), [0, 90, 315])
    # anisotropic: one row step at 2 mm vs one col step at 1 mm -> atan2(2, 1)
    np.testing.assert_allclose(lm.septal_angle(np.array([[0, 0], [1, 1]], float), (2.0, 1.0)),
                               np.degrees(np.arctan2(2, 1)))
    np.testing.assert_allclose(lm.angle_difference(359.0, 1.0), 2.0)
    np.testing.assert_allclose(lm.angle_difference(10.0, 190.0), 180.0)


def test_errors_anisotropic_spacing():
    truth = np.array([[[10, 10], [20, 10]]], float)
    pred = np.array([[[13, 14], [20, 10]]], float)           # 3 rows, 4 cols off
    mm = lm.slice_errors(truth, pred, spacing=(2.0, 0.5), shape=(64, 64))
    np.testing.assert_allclose(mm["anterior"], [np.hypot(6.0, 2.0)])
    np.testing.assert_allclose(mm["inferior"], [0.0])
    px = lm.slice_errors(truth, pred, spacing=(2.0, 0.5), shape=(64, 64), policy=lm.Policy(units="px"))
    np.testing.assert_allclose(px["anterior"], [5.0])


def test_missed_point_under_each_policy():
    truth = np.array([[[10, 10], [20, 10]]], float)
    pred = np.array([[[10, 10], [NAN, NAN]]], float)         # inferior missed
    shape, spacing = (64, 32), (1.0, 2.0)
    bound = lm.slice_errors(truth, pred, spacing, shape, lm.Policy(missed="upper_bound"))
    # farthest pixel-centre corner of (20, 10) in a 64x32 image is (63, 31): 43 rows x 1 mm, 21 cols x 2 mm
    np.testing.assert_allclose(bound["inferior"], [np.hypot(43.0, 42.0)])
    np.testing.assert_allclose(bound["anterior"], [0.0])
    np.testing.assert_allclose(bound["angle"], [180.0])
    excl = lm.slice_errors(truth, pred, spacing, shape, lm.Policy(missed="exclude"))
    assert np.isnan(excl["inferior"][0])
    assert np.isnan(excl["angle"][0])
    np.testing.assert_allclose(excl["anterior"], [0.0])
    # single="drop": the lone anterior prediction no longer counts, so it is missed too
    drop = lm.slice_errors(truth, pred, spacing, shape, lm.Policy(missed="upper_bound", single="drop"))
    np.testing.assert_allclose(drop["anterior"], [np.hypot(63 - 10.0, 2 * (31 - 10.0))])


def test_empty_slice_is_not_scored_but_false_detection_counts():
    truth = np.array([[[NAN, NAN], [NAN, NAN]], [[10, 10], [20, 10]]], float)
    pred = np.array([[[5, 5], [8, 5]], [[10, 11], [20, 30]]], float)
    err = lm.slice_errors(truth, pred, 1.0, (32, 32))
    assert np.isnan(err["anterior"][0])
    np.testing.assert_allclose(err["anterior"][1], 1.0)
    det = lm.detection(truth, pred, 1.0, threshold=5.0)
    # anterior: slice 1 within 5 -> TP; slice 0 has no truth -> FP
    assert det["anterior"] == {"tp": 1, "fp": 1, "fn": 0, "tpr": 1.0, "ppv": 0.5}
    # inferior: slice 1 is 20 px off -> FN and FP; slice 0 -> FP
    assert det["inferior"] == {"tp": 0, "fp": 2, "fn": 1, "tpr": 0.0, "ppv": 0.0}
    assert det["both"]["tp"] == 1


def test_detection_threshold_in_mm():
    truth = np.array([[[10, 10], [20, 10]]], float)
    pred = np.array([[[13, 10], [20, 10]]], float)           # 3 px = 6 mm at 2 mm/px
    assert lm.detection(truth, pred, (2.0, 2.0), 5.0)["anterior"]["tp"] == 0
    assert lm.detection(truth, pred, (2.0, 2.0), 5.0, lm.Policy(units="px"))["anterior"]["tp"] == 1


def test_summarize_subject_mean_and_levels():
    truth = np.zeros((3, 2, 2))
    pred = np.zeros((3, 2, 2))
    pred[0, :, 0] = 1.0     # subject a: errors 1, 0 -> mean 0.5
    pred[2, :, 0] = 4.0     # subject b: error 4
    out = lm.summarize(truth, pred, 1.0, (16, 16), subject=["a", "a", "b"], level=["basal", "mid", "apical"])
    np.testing.assert_allclose(out["slices"]["anterior"]["mean"], 5 / 3)
    np.testing.assert_allclose(out["subjects"]["anterior"]["mean"], (0.5 + 4) / 2)
    np.testing.assert_allclose(out["by_level"]["apical"]["points"]["mean"], 4.0)
    assert set(out["detection"]) == {"5.0", "10.0"}


def test_pitfall_table_headline_moves_with_policy():
    truth = np.array([[[10, 10], [20, 10]], [[10, 10], [20, 10]]], float)
    pred = np.array([[[10, 11], [20, 11]], [[NAN, NAN], [NAN, NAN]]], float)
    rows = {(r["missed"], r["single"], r["units"]): r for r in lm.pitfall_table(truth, pred, (2.0, 2.0), (32, 32))}
    assert len(rows) == 8
    np.testing.assert_allclose(rows[("exclude", "count", "mm")]["mean_error"], 2.0)
    np.testing.assert_allclose(rows[("exclude", "count", "px")]["mean_error"], 1.0)
    assert rows[("upper_bound", "count", "mm")]["mean_error"] > 10.0
    assert rows[("upper_bound", "count", "mm")]["n_scored"] == 4
    assert rows[("exclude", "count", "mm")]["n_scored"] == 2


def test_variant_table_winners_differ():
    truth = np.tile(np.array([[10, 10], [20, 10]], float), (4, 1, 1))
    precise_but_misses = truth.copy()
    precise_but_misses[:2] = NAN                               # exact where found, finds half
    always_close = truth + np.array([0, 3.0])                  # always found, 3 px off
    table = lm.variant_table({"precise": precise_but_misses, "close": always_close,
                              "far": truth + np.array([0, 8.0])},
                             truth, 1.0, (32, 32), policy=lm.Policy(missed="exclude"))
    assert table["winners"]["median_error"] == "precise"
    assert table["winners"]["tpr"] == "close"
    assert table["ranks"]["median_error"][-1] == "far"


def test_policy_rejects_unknown_value():
    with pytest.raises(CardiolabError, match="missed"):
        lm.Policy(missed="ignore")


def test_septal_drift_hand_values():
    """Two slices, two frames: angles 0 / 90 deg on slice 0 over frames, 0 / 0 on slice 1."""
    right, down = [[0, 0], [0, 1]], [[0, 0], [1, 0]]
    pts = np.array([[right, down], [right, right]], float)                  # (D=2, T=2, 2, 2)
    drift = lm.septal_drift(pts)
    assert drift["slices"] == 45.0                                          # frame 0: 0, frame 1: 90
    assert drift["frames"] == 45.0                                          # slice 0: 90 twice (wraps), slice 1: 0


def test_septal_drift_ignores_missing_points():
    pts = np.full((3, 2, 2, 2), np.nan)
    assert lm.septal_drift(pts)["found"] == 0.0
