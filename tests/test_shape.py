"""Shape statistics against closed forms (ellipse, disc, crescent), and the per-cohort table."""
import math

import numpy as np
import pytest

from cardiolab.core import CardiolabError
from cardiolab.metrics.shape import cohort_shape_stats, contour_length, region_stats, shape_stats


def _grid(n=96):
    yy, xx = np.mgrid[:n, :n].astype(float)
    return yy - n / 2 + 0.5, xx - n / 2 + 0.5


def test_ellipse_matches_closed_forms():
    yy, xx = _grid()
    a, b = 30.0, 15.0                                   # semi-axes in pixels, long axis along columns
    ellipse = (xx / a) ** 2 + (yy / b) ** 2 <= 1
    stats = region_stats(ellipse, spacing=(1.0, 1.0))
    assert stats["area"] == pytest.approx(math.pi * a * b, rel=0.01)
    assert stats["eccentricity"] == pytest.approx(math.sqrt(1 - b**2 / a**2), abs=0.01)
    assert stats["solidity"] > 0.95
    # Ramanujan's perimeter gives the closed-form roundness of the ellipse.
    h = ((a - b) / (a + b)) ** 2
    perimeter = math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))
    assert stats["roundness"] == pytest.approx(4 * math.pi * math.pi * a * b / perimeter**2, abs=0.03)


def test_disc_is_round_solid_and_not_eccentric():
    yy, xx = _grid()
    r = 20.0
    disc = xx**2 + yy**2 <= r**2
    stats = region_stats(disc, spacing=(2.0, 2.0))      # 2 mm pixels: areas scale by 4, lengths by 2
    assert stats["area"] == pytest.approx(4 * math.pi * r**2, rel=0.01)
    assert stats["roundness"] == pytest.approx(1.0, abs=0.03)
    assert stats["solidity"] == pytest.approx(1.0, abs=0.05)
    assert stats["eccentricity"] < 0.05
    assert contour_length(disc, (2.0, 2.0)) == pytest.approx(2 * 2 * math.pi * r, rel=0.02)


def test_crescent_and_annulus_are_not_solid():
    yy, xx = _grid()
    crescent = (xx**2 + yy**2 <= 25**2) & ((xx - 12) ** 2 + yy**2 > 22**2)
    annulus = (xx**2 + yy**2 <= 25**2) & (xx**2 + yy**2 > 18**2)
    assert region_stats(crescent)["solidity"] < 0.9
    assert region_stats(annulus)["solidity"] < 0.6
    assert region_stats(crescent)["roundness"] < 0.5


def test_anisotropic_spacing_stretches_a_disc_into_an_ellipse():
    yy, xx = _grid()
    disc = xx**2 + yy**2 <= 20**2
    stats = region_stats(disc, spacing=(1.0, 2.0))      # columns twice as wide: a 2:1 ellipse in mm
    assert stats["eccentricity"] == pytest.approx(math.sqrt(1 - 0.25), abs=0.01)


def test_shape_stats_per_structure_and_empty():
    mask = np.zeros((40, 40), np.uint8)
    mask[5:15, 5:15] = 3                                # LV square, no RV, no MYO
    stats = shape_stats(mask, (1.5, 1.5))
    assert set(stats) == {"RV", "MYO", "LV"}
    assert stats["LV"]["area"] == pytest.approx(100 * 1.5 * 1.5)
    assert stats["LV"]["solidity"] == pytest.approx(1.0)
    assert stats["RV"]["area"] == 0
    assert math.isnan(stats["RV"]["roundness"])
    with pytest.raises(CardiolabError):
        shape_stats(np.zeros((2, 4, 4)), (1, 1))


def test_cohort_table_rows():
    series = np.zeros((2, 32, 32, 3), np.uint8)         # (D, H, W, T)
    series[:, 8:24, 8:24, :] = 2
    series[:, 12:20, 12:20, :] = 3
    series[0, 2:6, 2:10, 0] = 1                         # RV only in slice 0, frame 0
    df = cohort_shape_stats([series, series[..., 0]], spacing=(1.0, 1.0), ids=["a", "b"])
    assert list(df.columns) == ["id", "slice", "frame", "structure", "area", "eccentricity", "roundness", "solidity"]
    assert len(df[df.id == "a"]) == 2 * 3 * 2 + 1
    assert len(df[df.id == "b"]) == 2 * 2 + 1
    myo = df[(df.structure == "MYO")]
    assert (myo.area == 16 * 16 - 8 * 8).all()
    assert (myo.solidity < 0.8).all()
    assert len(cohort_shape_stats([series], frames=[1])) == 2 * 2


def test_phantom_masks_have_plausible_shapes(phantom_root):
    from cardiolab.io.acdc import read_subject
    subject = read_subject(phantom_root / "patient001")
    series = subject.label_series.transpose(2, 0, 1, 3)             # (X, Y, Z, T) -> (D, H, W, T)
    df = cohort_shape_stats([series], spacing=subject.spacing[:2], frames=[subject.ed])
    med = df.groupby("structure")[["roundness", "solidity", "eccentricity"]].median()
    assert med.loc["LV", "roundness"] > 0.8
    assert med.loc["LV", "solidity"] > 0.9   # the LV pool is near-circular
    assert med.loc["MYO", "solidity"] < 0.7                                        # a ring around the pool
    assert med.loc["RV", "solidity"] < med.loc["LV", "solidity"]                   # the RV wraps around the septum
