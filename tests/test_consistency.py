"""Inter-slice consistency and temporal coherence on constructed cines with known answers."""
import numpy as np
import pytest
import torch

from cardiolab.core import CardiolabError
from cardiolab.metrics import consistency as cs

D, S, T = 6, 32, 12


def smooth_cine(full_cycle=True):
    """One noise-free periodic cine (D, H, W, T) and its labels: an LV disc (3) in a ring (2) that shrinks
    base -> apex and contracts mid-cycle; full_cycle=False stops at mid-systole (does not close the beat)."""
    yy, xx = np.mgrid[:S, :S] - (S - 1) / 2
    rad = np.hypot(xx, yy)
    img = np.full((D, S, S, T), -1.0, np.float32)
    lab = np.zeros((D, S, S, T), np.uint8)
    span = 2 * np.pi if full_cycle else np.pi
    for d in range(D):
        for t in range(T):
            r = 9 * (1 - 0.1 * d) * (1 - 0.3 * (1 - np.cos(span * t / T)) / 2)
            pool = 1 / (1 + np.exp(-(r - rad) * 2))
            ring = 1 / (1 + np.exp(-(r + 3 - rad) * 2))
            img[d, ..., t] = -1 + 0.5 * ring + 1.2 * pool
            lab[d, ..., t] = np.where(rad < r, 3, np.where(rad < r + 3, 2, 0))
    return img, lab


def test_known_answers_on_a_linear_ramp():
    ramp = np.broadcast_to(np.arange(T, dtype=np.float32) * 0.01, (D, S, S, T)).copy()
    out = cs.temporal_coherence(ramp)
    assert out["temporal_tv"] == pytest.approx(0.01, rel=1e-4)
    assert out["temporal_tv2"] == pytest.approx(0.0, abs=1e-6)
    assert out["periodicity"] == pytest.approx(T - 1, rel=1e-3)      # never returns to its start
    same = np.broadcast_to(np.random.default_rng(0).normal(size=(1, S, S, T)), (D, S, S, T))
    assert cs.adjacent_slice_ncc(same) == pytest.approx(np.ones(D - 1), abs=1e-5)


def test_zoom_search_removes_expected_shrinkage():
    img, _ = smooth_cine()
    ncc = cs.adjacent_slice_ncc(img)
    assert ncc.shape == (D - 1,)
    assert (ncc > 0.97).all()


def test_shuffled_slice_scores_worse():
    img, lab = smooth_cine()
    order = [0, 1, 4, 3, 2, 5]
    good, bad = cs.inter_slice_consistency(img, lab), cs.inter_slice_consistency(img[order], lab[order])
    assert good["slice_ncc"] > bad["slice_ncc"]
    assert good["slice_ncc_min"] > bad["slice_ncc_min"]
    assert good["lv_area_roughness"] < 0.2 * bad["lv_area_roughness"]


def test_shuffled_frames_score_worse():
    img, lab = smooth_cine()
    order = [0, 1, 6, 3, 4, 5, 2, 7, 8, 9, 10, 11]
    ref = cs.volume_curve(lab)
    good = cs.temporal_coherence(img, lab, ref)
    bad = cs.temporal_coherence(img[..., order], lab[..., order], ref)
    assert good["volume_curve_corr"] == pytest.approx(1.0)
    assert bad["volume_curve_corr"] < 0.9
    assert good["temporal_roughness"] < 0.5 * bad["temporal_roughness"]


def test_periodicity_prefers_a_closed_beat():
    closed, _ = smooth_cine(full_cycle=True)
    open_, _ = smooth_cine(full_cycle=False)
    assert cs.temporal_coherence(closed)["periodicity"] < 0.5 * cs.temporal_coherence(open_)["periodicity"]


def test_cohort_scores_and_errors():
    img, lab = smooth_cine()
    out = cs.cohort_consistency(np.stack([img, img[[0, 1, 4, 3, 2, 5]]]), np.stack([lab, lab]))
    assert out["n"] == 2
    assert out["slice_ncc_std"] > 0
    assert {"slice_ncc", "lv_area_roughness", "temporal_roughness", "periodicity", "volume_curve_corr"} <= set(out)
    assert cs.volume_curve(lab).max() == 1.0
    assert cs.volume_curve(lab).argmax() == 0   # ED first
    with pytest.raises(CardiolabError, match="expected a cine"):
        cs.inter_slice_consistency(img[0])
    with pytest.raises(CardiolabError, match="frames"):
        cs.temporal_coherence(img, lab, np.ones(T + 1))
    areas = cs.lv_areas(torch.from_numpy(lab))                                         # tensors work too
    assert areas.shape == (D, T)
    assert (np.diff(areas[:, 0]) < 0).all()                 # shrinks base -> apex
