"""Planted cohorts (cardiolab.privacy.plant) on tiny tensors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cardiolab.core import CardiolabError
from cardiolab.privacy.plant import (CopyTransforms, apply_transform, draw_transform, plant, read_planted,
                                     write_planted)

SHAPE = (2, 16, 16, 4)   # (D, H, W, T)


def _cines(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *SHAPE), generator=g) * 2 - 1


def test_plant_mixes_copies_and_fresh_cines():
    train, fresh = _cines(5, 0), _cines(3, 1)
    out = plant(train, [f"t{i}" for i in range(5)], fresh, n_copies=4, seed=0)
    assert out.images.shape == (7, *SHAPE)
    assert len(set(out.ids)) == 7
    assert sum(v is not None for v in out.planted.values()) == 4
    assert set(out.transforms) == {k for k, v in out.planted.items() if v is not None}
    assert out.images.abs().max() <= 1.0


def test_untransformed_copy_is_exact_and_fresh_cine_kept():
    train, fresh = _cines(3, 2), _cines(2, 3)
    out = plant(train, ["a", "b", "c"], fresh, n_copies=3, seed=1, cfg=CopyTransforms(p=0.0))
    for sid, src in out.planted.items():
        img = out.images[out.ids.index(sid)]
        if src is None:
            assert any(torch.equal(img, f) for f in fresh)
        else:
            torch.testing.assert_close(img, train["abc".index(src)])


def test_plant_is_seeded():
    train, fresh = _cines(4, 4), _cines(2, 5)
    a = plant(train, list("abcd"), fresh, 3, seed=7)
    b = plant(train, list("abcd"), fresh, 3, seed=7)
    assert a.planted == b.planted
    assert torch.equal(a.images, b.images)


def test_transforms_change_the_cine_but_keep_it_close():
    cine = torch.zeros(SHAPE) - 1
    cine[:, 4:12, 5:11] = 0.8
    t = {"flip": True, "rotation_deg": 10.0, "shift_px": [2.0, -1.0], "intensity_scale": 1.1, "noise_std": 0.03,
         "frame_roll": 1, "noise_seed": 0}
    out, _ = apply_transform(cine, t)
    assert out.shape == cine.shape
    assert not torch.equal(out, cine)
    r = np.corrcoef(out.flatten().numpy(), cine.flatten().numpy())[0, 1]
    other = np.corrcoef(out.flatten().numpy(), _cines(1, 9).flatten().numpy())[0, 1]
    assert r > 0.5
    assert abs(other) < 0.2


def test_draw_transform_respects_ranges():
    rng = np.random.default_rng(0)
    cfg = CopyTransforms(p=1.0)
    for _ in range(50):
        t = draw_transform(rng, cfg)
        assert abs(t["rotation_deg"]) <= 10.0
        assert abs(t["frame_roll"]) <= 2


def test_plant_rejects_other_geometry():
    with pytest.raises(CardiolabError, match="geometry"):
        plant(_cines(2, 0), ["a", "b"], _cines(1, 1)[:, :1], 1)


def test_write_planted_round_trip(tmp_path):
    from cardiolab.io.layouts import read_cohort

    out = plant(_cines(3, 6), ["a", "b", "c"], _cines(2, 7), n_copies=2, seed=0)
    root = write_planted(tmp_path / "planted", out, spacing=(2.0, 2.0, 8.0), frame_ms=40.0, es=2)
    subjects = list(read_cohort(root))
    assert [s.id for s in subjects] == sorted(out.ids)
    assert subjects[0].image.shape == (16, 16, 2, 4)     # (x, y, slice, frame)
    assert read_planted(root) == out.planted


def test_read_planted_missing(tmp_path):
    with pytest.raises(CardiolabError, match="planted.json"):
        read_planted(tmp_path)


def test_labels_move_with_the_copy(tmp_path):
    from cardiolab.io.layouts import read_cohort

    train, fresh = _cines(2, 8), _cines(1, 9)
    train_labels = torch.zeros((2, *SHAPE), dtype=torch.int64)
    train_labels[:, :, 4:8, 2:6] = 3                                   # an off-centre LV
    out = plant(train, ["a", "b"], fresh, 2, seed=0, cfg=CopyTransforms(p=1.0), train_labels=train_labels,
                fresh_labels=torch.zeros((1, *SHAPE), dtype=torch.int64))
    assert out.labels.shape == out.images.shape
    k = next(i for i, sid in enumerate(out.ids) if out.planted[sid] is not None)
    t = out.transforms[out.ids[k]]
    assert t["flip"]
    assert (out.labels[k, :, :, :8] == 3).sum() < (out.labels[k, :, :, 8:] == 3).sum()   # mirrored to the right
    root = write_planted(tmp_path / "p", out, spacing=(2.0, 2.0, 8.0), frame_ms=40.0, es=2)
    assert next(iter(read_cohort(root))).label_series is not None


@pytest.mark.parametrize("family", ["flip", "rotation", "shift", "zoom", "roll", "gain", "gamma", "blur", "noise"])
def test_each_family_changes_every_copy_and_only_its_own_parameters(family):
    from cardiolab.privacy.plant import IDENTITY, family_transforms

    cine = torch.zeros(SHAPE) - 1
    cine[:, 4:12, 5:11] = torch.linspace(0.2, 0.8, SHAPE[-1])
    rng = np.random.default_rng(0)
    for _ in range(5):
        t = draw_transform(rng, family_transforms(family), frames=SHAPE[-1])
        changed = {k for k, v in IDENTITY.items() if t[k] != v}
        assert len(changed) == 1, changed
        out, _ = apply_transform(cine, t)
        assert not torch.equal(out, cine)


def test_family_ranges_are_the_honest_ones():
    from cardiolab.privacy.plant import family_transforms

    rng = np.random.default_rng(1)
    draws = {f: [draw_transform(rng, family_transforms(f), frames=16) for _ in range(200)]
             for f in ("roll", "shift", "zoom", "gamma", "noise", "rotation")}
    rolls = [t["frame_roll"] for t in draws["roll"]]
    assert max(abs(r) for r in rolls) <= 4.0                     # a quarter of 16 frames
    assert any(r != round(r) for r in rolls)                     # fractional phase
    assert max(abs(v) for t in draws["shift"] for v in t["shift_px"]) <= 4.0
    assert all(0.9 <= t["zoom"] <= 1.1 for t in draws["zoom"])
    assert all(0.8 <= t["gamma"] <= 1.25 for t in draws["gamma"])
    assert all(0.02 <= t["noise_std"] <= 0.05 for t in draws["noise"])
    assert max(abs(t["rotation_deg"]) for t in draws["rotation"]) <= 10.0


def test_fractional_roll_of_a_whole_beat_is_the_identity_and_whole_rolls_are_exact():
    from cardiolab.privacy.plant import _roll

    x = torch.rand(2, 3, 3, 8)
    torch.testing.assert_close(_roll(x, 8.0), x)
    torch.testing.assert_close(_roll(x, 2.0), x.roll(2, dims=-1))
    half = _roll(x, 0.5)
    torch.testing.assert_close(half, (x + x.roll(1, dims=-1)) / 2)


def test_unknown_family_names_the_option():
    from cardiolab.privacy.plant import family_transforms

    with pytest.raises(CardiolabError, match="--family"):
        family_transforms("warp")


def test_vqgan_family_needs_a_round_trip():
    from cardiolab.privacy.plant import family_transforms

    train, fresh = _cines(2, 0), _cines(1, 1)
    with pytest.raises(CardiolabError, match="VQ-GAN"):
        plant(train, ["a", "b"], fresh, 1, cfg=family_transforms("vqgan"))
    out = plant(train, ["a", "b"], fresh, 1, cfg=family_transforms("vqgan"), round_trip=lambda x: x * 0.5)
    k = next(i for i, sid in enumerate(out.ids) if out.planted[sid] is not None)
    torch.testing.assert_close(out.images[k], train["ab".index(out.planted[out.ids[k]])] * 0.5)
