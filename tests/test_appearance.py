"""RV-to-LV angle and label-wise intensity statistics (notebook 01's phantom vs real comparison)."""
from __future__ import annotations

import numpy as np
import pytest

from cardiolab.metrics.appearance import angle_summary, cohort_appearance, label_intensities, rv_lv_angles


def two_discs(dr: int, dc: int, size: int = 32) -> np.ndarray:
    """LV disc at the centre, RV disc displaced by (dr rows, dc columns)."""
    r, c = np.indices((size, size))
    lab = np.zeros((size, size), np.uint8)
    lab[np.hypot(r - 16 - dr, c - 16 - dc) < 3] = 1
    lab[np.hypot(r - 16, c - 16) < 4] = 3
    return lab


@pytest.mark.parametrize("dr,dc,angle", [(0, 9, 0.0), (9, 0, 90.0), (-9, 0, -90.0), (7, -7, 135.0)])
def test_angle_convention_down_is_90(dr, dc, angle):
    assert rv_lv_angles(two_discs(dr, dc)[None])[0] == pytest.approx(angle, abs=1e-6)


def test_maps_without_both_structures_are_skipped():
    lab = np.stack([two_discs(9, 0), np.zeros((32, 32), np.uint8)])
    assert rv_lv_angles(lab).shape == (1,)
    assert angle_summary(np.zeros(0))["n"] == 0


def test_label_intensities_mean_per_label_and_mask():
    lab = np.repeat(two_discs(9, 0)[None, :, :, None], 2, axis=-1)              # (D=1, H, W, T=2)
    img = np.where(lab == 3, 0.5, np.where(lab == 1, 0.1, -0.5)).astype(float)
    img[..., 1] = 9.0                                                          # an unlabelled frame: masked out
    stats = label_intensities([img], [lab], [np.array([True, False])])
    assert stats["LV"]["mean"] == pytest.approx(0.5)
    assert stats["RV"]["mean"] == pytest.approx(0.1)
    assert stats["background"]["mean"] == pytest.approx(-0.5)
    assert np.isnan(stats["MYO"]["mean"])


def test_phantom_cache_puts_the_rv_down_and_left(smoke_cache):
    """The phantom after `prepare`, in the display convention: the RV lies in the real ACDC range (51-137 deg)."""
    from cardiolab.data.cines import cache_volumes
    vols = cache_volumes(smoke_cache)
    summary = cohort_appearance([v["image"][0].numpy() for v in vols], [v["labels"].numpy() for v in vols],
                                [v["label_mask"].numpy() for v in vols])
    assert 51 <= summary["rv_lv_angle"]["median"] <= 137
    assert summary["intensity"]["LV"]["mean"] > summary["intensity"]["MYO"]["mean"]
