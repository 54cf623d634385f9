"""RV insertion points in the cache: the one native <-> cache mapping, phantom truth through prepare, and the
label-derived rule checked against that truth."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from cardiolab.data import prepare as prep
from cardiolab.data.datasets import CineDataset, load_manifest
from cardiolab.data.phantom import read_rvip
from cardiolab.io.cohort import Subject
from cardiolab.metrics import landmarks as lm
from cardiolab.profiles import get_profile

SMOKE = get_profile("smoke")


def _grid(swap: bool, flip: tuple[bool, bool]) -> dict:
    return {"shape": [40, 36], "swap": swap, "flip": list(flip), "resampled": [19, 21], "start": [-3, 4]}


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("flip", [(False, False), (True, False), (True, True)])
def test_map_inplane_round_trip(swap, flip):
    pts = np.random.default_rng(0).uniform(0, 35, (50, 2))
    back = prep.map_inplane(prep.map_inplane(pts, _grid(swap, flip), "cache"), _grid(swap, flip), "native")
    assert np.abs(back - pts).max() < 0.5


def test_map_inplane_keeps_nan():
    out = prep.map_inplane(np.array([[np.nan, np.nan], [1.0, 2.0]]), _grid(True, (True, False)), "cache")
    assert np.isnan(out[0]).all()


def _oriented_subject() -> tuple[Subject, np.ndarray]:
    """A subject whose affine swaps and flips x / y (so prepare reorients it), at 1.5 mm (prepare resamples it to
    the smoke 6 mm); LV + MYO disc and an RV blob; returns it and the RV blob's native centroid (x, y)."""
    X, Y, Z, T = 96, 88, 3, 4
    gx, gy = np.indices((X, Y))
    lab = np.where(np.hypot(gx - 50, gy - 40) < 8, 3, np.where(np.hypot(gx - 50, gy - 40) < 12, 2, 0))
    rv = np.hypot(gx - 30, gy - 55) < 7
    lab = np.where(rv & (lab == 0), 1, lab).astype(np.uint8)
    labels = np.repeat(np.repeat(lab[..., None, None], Z, 2), T, 3)
    image = np.choose(labels, [0.1, 0.8, 0.3, 1.0]).astype(np.float32)
    affine = np.array([[0.0, -1.5, 0, 10], [-1.5, 0.0, 0, 5], [0, 0, 8.0, 0], [0, 0, 0, 1]])   # x -> -y, y -> -x
    subject = Subject(id="oriented", image=image, affine=affine, frame_ms=40.0, ed=0, es=2, label_series=labels,
                      info={"Group": "NOR", "Height": 170, "Weight": 70, "Age": 40, "Sex": "M"})
    return subject, np.array(ndimage.center_of_mass(rv))


def test_map_inplane_follows_prepare_through_swap_flip_resample_crop():
    subject, rv_native = _oriented_subject()
    tensors, entry = prep.prepare_subject(subject, SMOKE)
    assert entry["source"]["grid"]["swap"]
    rv_cache = np.array(ndimage.center_of_mass(tensors["labels"][0, ..., 0].numpy() == 1))
    assert np.abs(prep.map_inplane(rv_native, entry["source"]["grid"], "cache") - rv_cache).max() < 0.5


def test_real_data_without_truth_gets_nan_rvip():
    subject, _ = _oriented_subject()
    tensors, _ = prep.prepare_subject(subject, SMOKE)
    assert torch.isnan(tensors["rvip"]).all()


def test_cache_stores_rvip_of_the_phantom(smoke_cache):
    ds = CineDataset(smoke_cache, mode="volume")
    rvip = ds.subject(0)["rvip"]
    cfg = SMOKE.data
    assert tuple(rvip.shape) == (cfg.slices, cfg.frames, 2, 2)


def test_cache_rvip_maps_back_to_the_phantom_truth(smoke_cache, phantom_root):
    entry = load_manifest(smoke_cache)["subjects"][0]
    cached = CineDataset(smoke_cache, mode="volume").subject(0)["rvip"].numpy()      # (D, T', 2, 2)
    native = read_rvip(phantom_root / entry["id"])                                     # (Z, T, 2, 2)
    src = entry["source"]
    k = 1                                                                             # cache frame 1
    t = round(src["ed"] + k * src["frames"] / SMOKE.data.frames) % src["frames"]
    back = prep.map_inplane(cached[:, k], src["grid"], "native")
    want = native[src["slices"], t]
    assert np.nanmax(np.abs(back - want)) < 0.5


def test_label_rule_matches_phantom_truth_in_the_cache(smoke_cache):
    """`metrics.landmarks.from_labels` on the cache labels vs the phantom truth: median <= 1.5 px."""
    ds = CineDataset(smoke_cache, mode="volume")
    errors = []
    for i, record in enumerate(ds.records):
        item = ds.subject(i)
        labels = item["labels"].permute(0, 3, 1, 2).numpy()                          # (D, T, H, W)
        derived = lm.points_from_labels(labels, record["superior"])                   # (D, T, 2, 2)
        errors.append(np.linalg.norm(derived - item["rvip"].numpy(), axis=-1).ravel())
    errors = np.concatenate(errors)
    assert np.nanmedian(errors) <= 1.5
