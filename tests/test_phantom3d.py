"""The whole-heart 3D phantom: determinism, labels, shapes, intensity ranges, bad geometry."""
from __future__ import annotations

import numpy as np
import pytest

from cardiolab.core import CardiolabError
from cardiolab.data.phantom3d import make_volume
from cardiolab.io.volume import VALID_LABELS

SMOKE = (32, 32, 16)


def test_same_seed_same_bytes():
    a, b = make_volume(2, seed=0, size=SMOKE), make_volume(2, seed=0, size=SMOKE)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.mask.tobytes() == b.mask.tobytes()


@pytest.mark.parametrize("other", [dict(index=3, seed=0), dict(index=2, seed=1)])
def test_other_seed_or_index_differs(other):
    a, b = make_volume(2, seed=0, size=SMOKE), make_volume(size=SMOKE, **other)
    assert a.image.tobytes() != b.image.tobytes()
    assert a.mask.tobytes() != b.mask.tobytes()


@pytest.mark.parametrize("index", range(4))
def test_every_structure_present(index):
    v = make_volume(index, seed=0, size=SMOKE)
    assert sorted(np.unique(v.mask).tolist()) == list(VALID_LABELS)


@pytest.mark.parametrize("size", [SMOKE, (48, 40, 24)])
def test_shapes_dtypes_spacing(size):
    v = make_volume(0, size=size, spacing=(6.0, 6.0, 10.0))
    assert v.image.shape == size
    assert v.mask.shape == size
    assert v.image.dtype == np.float32
    assert v.mask.dtype == np.uint8
    assert v.spacing == (6.0, 6.0, 10.0)


@pytest.mark.parametrize("modality", ["ct", "mr"])
def test_intensities_in_unit_range(modality):
    v = make_volume(1, size=SMOKE, modality=modality)
    assert v.image.min() >= -1.0
    assert v.image.max() <= 1.0
    assert np.isfinite(v.image).all()


def test_ct_hounsfield_scale():
    v = make_volume(0, size=(64, 64, 32))
    air = v.image[0, 0, :]                      # corner of the field of view: outside the body
    lv = v.image[v.mask == 5]
    myo = v.image[v.mask == 4]
    assert np.median(air) < -0.9                # -1000 HU
    assert 0.2 < np.median(lv) < 0.5            # contrast-filled blood: 280-450 HU
    assert np.median(myo) < np.median(lv)


def test_mr_blood_brighter_than_myocardium():
    v = make_volume(0, size=(64, 64, 32), modality="mr")
    assert np.median(v.image[v.mask == 5]) > np.median(v.image[v.mask == 4]) + 0.5


@pytest.mark.parametrize("kw, name", [(dict(size=(32, 32, 4)), "size"), (dict(spacing=(1.0, 1.0, 1.0)), "spacing"),
                                      (dict(spacing=(1.0, 0.0, 1.0)), "spacing"), (dict(modality="pet"), "modality")])
def test_bad_geometry_names_parameter(kw, name):
    with pytest.raises(CardiolabError, match=name):
        make_volume(0, **{"size": SMOKE, **kw})
