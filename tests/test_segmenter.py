"""Segmenter: shapes, overfitting one labelled slice, train/load/score on a tiny prepared cache."""
import json

import numpy as np
import pytest
import torch

from cardiolab.core import CardiolabError
from cardiolab.io.cohort import Subject, make_affine, write_subject
from cardiolab.models.segmenter import Segmenter, SegmenterConfig
from cardiolab.profiles import get_profile
from cardiolab.tasks import segmenter as seg


def heart(size=32, slices=2, frames=4, seed=0, shift=0.0):
    """A toy short-axis cine: (image (D, H, W, T) in [-1, 1], labels (D, H, W, T) uint8) with RV, MYO, LV."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size / 2 + rng.uniform(-2, 2, 2)[:, None, None]
    image = np.full((slices, size, size, frames), -0.8, np.float32)
    labels = np.zeros((slices, size, size, frames), np.uint8)
    for d in range(slices):
        for t in range(frames):
            r = size * (0.16 - 0.04 * np.sin(np.pi * t / frames) - 0.02 * d)       # LV contracts, shrinks to apex
            rr = np.hypot(yy, xx - 2)
            rv = (np.hypot(yy, xx + r + 4) < r + 3) & (rr > r + 3)
            labels[d, ..., t][rv], image[d, ..., t][rv] = 1, 0.5
            labels[d, ..., t][rr < r + 3], image[d, ..., t][rr < r + 3] = 2, -0.2
            labels[d, ..., t][rr < r], image[d, ..., t][rr < r] = 3, 0.8
    image += shift + 0.05 * rng.standard_normal(image.shape).astype(np.float32)
    return np.clip(image, -1, 1), labels


def write_cohort(root, n=3, labels="series", size=40, slices=4, frames=8, shift=0.0, seed=0):
    """An ACDC-layout cohort of toy hearts at 6 mm in-plane; labels: 'series', 'ed_es' (ACDC-like) or None."""
    for i in range(n):
        image, lab = heart(size, slices, frames, seed=seed + i, shift=shift)
        to_xyzt = lambda a: np.ascontiguousarray(a.transpose(1, 2, 0, 3))  # (D, H, W, T) -> (X, Y, Z, T)
        lab = to_xyzt(lab)
        ed_es = {0: lab[..., 0], frames // 2: lab[..., frames // 2]} if labels == "ed_es" else {}
        write_subject(root, Subject(id=f"sub{seed + i:03d}", image=to_xyzt(image) * 300 + 300,
                                    affine=make_affine((6.0, 6.0, 10.0)), frame_ms=50.0, ed=0, es=frames // 2,
                                    labels=ed_es,
                                    label_series=lab if labels == "series" else None,
                                    info={"Group": "NOR", "Height": 170 + i, "Weight": 70 + i}))
    return root


def make_cache(root, n=8):
    """A prepared smoke cache (the real `prepare`) of n ACDC-like subjects labelled at ED and ES only."""
    from cardiolab.data.prepare import prepare
    cohort = write_cohort(root / "cohort", n=n, labels="ed_es")
    prepare(cohort, "acdc", get_profile("smoke"), root / "cache")
    return root / "cache"


def test_model_and_segment_shapes():
    model = Segmenter(SegmenterConfig(channels=(4, 8, 16)))
    assert model(torch.zeros(3, 1, 32, 32)).shape == (3, 4, 32, 32)
    cine = torch.zeros(2, 1, 3, 30, 28, 5)                   # H, W not multiples of 4: padded inside
    out = seg.segment(model, cine)
    assert out.shape == (2, 3, 30, 28, 5)
    assert out.dtype == torch.int64
    assert seg.segment(model, torch.zeros(1, 30, 28, 5)).shape == (30, 28, 5)
    assert int(out.min()) >= 0
    assert int(out.max()) <= 3
    with pytest.raises(CardiolabError):
        seg.segment(model, torch.zeros(2, 3, 30, 28))


def test_overfits_one_labelled_slice():
    torch.manual_seed(0)
    image, labels = heart(32, slices=1, frames=2)
    x = torch.from_numpy(image[0]).permute(2, 0, 1)[:, None]   # (T, 1, H, W)
    y = torch.from_numpy(labels[0]).permute(2, 0, 1).long()    # (T, H, W)
    model = Segmenter(SegmenterConfig(channels=(8, 16, 32)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = seg.LOSS(model(x), y[:, None])
        opt.zero_grad()
        loss.backward()
        opt.step()
    pred = seg.segment(model, torch.from_numpy(image[0])[None])     # (1, H, W, T) -> (H, W, T)
    from cardiolab.metrics.segmentation import seg_scores
    s = seg_scores(pred.permute(2, 0, 1)[:, None], torch.from_numpy(labels[0]).permute(2, 0, 1)[:, None])
    for name in ("RV", "MYO", "LV"):
        assert s[f"dice_{name}"].min() > 0.8, (name, s)


def test_train_load_score_on_tiny_cache(tmp_path):
    cache = make_cache(tmp_path)
    manifest = json.loads((cache / "manifest.json").read_text())
    public, holdout = manifest["splits"]["public"], manifest["splits"]["holdout"]
    vols = seg.cache_volumes(cache, "public")
    assert [v["id"] for v in vols] == public
    assert vols[0]["image"].shape == (1, 4, 32, 32, 8)
    assert len(seg.FrameSet(vols)) == len(public) * 4 * 2             # subjects x slices x labelled frames (ED, ES)
    with pytest.raises(CardiolabError):
        seg.cache_volumes(cache, "nope")
    run = seg.train(get_profile("smoke"), out=tmp_path / "run", steps=80, cache_dir=cache)
    scores = json.loads((run / "scores.json").read_text())
    assert scores["n_subjects"] == len(holdout) == len(scores["per_subject"])
    assert all(0.5 < scores["dice"][n] <= 1 for n in ("RV", "MYO", "LV")), scores["dice"]
    assert all(0 <= scores["hd95"][n] < 50 for n in ("RV", "MYO", "LV")), scores["hd95"]
    model = seg.load(run)
    again = seg.score(model, seg.cache_volumes(cache, "holdout"))
    assert again["dice"]["mean"] == pytest.approx(scores["dice"]["mean"], abs=1e-6)


def test_cohort_volumes_match_the_cache_geometry(tmp_path):
    series = seg.cohort_volumes(write_cohort(tmp_path / "a", n=1, labels="series"), get_profile("smoke"))[0]
    bare = seg.cohort_volumes(write_cohort(tmp_path / "b", n=1, labels=None), get_profile("smoke"))[0]
    assert series["image"].shape == bare["image"].shape == (1, 4, 32, 32, 8)
    assert series["labels"].shape == (4, 32, 32, 8)
    assert series["spacing"][:2] == (6.0, 6.0)
    assert bool(series["label_mask"].all())
    assert not bool(bare["label_mask"].any())
    assert set(series["labels"].unique().tolist()) == {0, 1, 2, 3}
    assert -1 <= float(series["image"].min()) < float(series["image"].max()) <= 1
    tiny = seg.cohort_volumes(write_cohort(tmp_path / "c", n=1),
                              get_profile("tiny"))[0]   # 6 mm -> 3 mm, 64 px, 6 slices
    assert tiny["image"].shape == (1, 6, 64, 64, 16)


def test_train_on_a_labelled_cohort_folder_needs_no_cache(tmp_path):
    cohort = write_cohort(tmp_path / "syn", n=2, labels="series")
    run = seg.train(get_profile("smoke"), out=tmp_path / "run", steps=3, cohort=cohort, evaluate_on=None)
    config = json.loads((run / "config.json").read_text())
    assert config["data"] == {"cohort": str(cohort)}
    assert config["frames"] == 2 * 4 * 8
    assert not (run / "scores.json").exists()
    assert seg.load(run).config.channels == (8, 16, 32)


def test_randomisation_is_the_default_and_plain_stays_available():
    from cardiolab.profiles import override
    tiny = get_profile("tiny")
    assert tiny.eval.seg_randomise                            # the segmenter that generalises to real cines
    assert 0 < tiny.eval.seg_plain_share < 1
    assert not get_profile("smoke").eval.seg_randomise       # smoke: 20 steps only check that things run
    plain = override(tiny, ["eval.seg_randomise=false"])
    assert seg.shaping(plain) != seg.shaping(tiny)
    assert seg.shaping(tiny)["segmenter"]["seg_randomise"] is True
    assert seg.augmentation(plain) is seg._jitter
    assert seg.augmentation(tiny) is not seg._jitter
    shared = override(tiny, ["eval.seg_plain_share=0.9"])
    assert seg.shaping(shared) != seg.shaping(tiny)


def test_augmentation_randomises_the_batch_and_keeps_labels(tmp_path):
    vols = seg.cohort_volumes(write_cohort(tmp_path / "c", n=1, labels="series"), get_profile("smoke"))
    frames = seg.FrameSet(vols)
    batch = {k: torch.stack([frames[i][k] for i in range(8)]) for k in ("image", "labels")}
    torch.manual_seed(0)
    x, y = seg.augmentation(get_profile("tiny"))(batch["image"], batch["labels"])
    assert x.shape == batch["image"].shape
    assert y.shape == batch["labels"].shape
    assert y.dtype == torch.int64
    assert set(y.unique().tolist()) <= {0, 1, 2, 3}
    assert not torch.equal(x, batch["image"])
    assert not torch.equal(y, batch["labels"])                # warped (alignment: tests/test_randomise.py)
    kept = (y > 0).sum((1, 2)).float() / (batch["labels"] > 0).sum((1, 2)).float()
    assert ((kept > 0.6) & (kept < 1.5)).all(), kept        # toy hearts touch the border: some leave the view


def test_frameset_transform_is_seeded_from_numpy(tmp_path):
    from cardiolab.data.randomise import domain_randomisation
    vols = seg.cohort_volumes(write_cohort(tmp_path / "c", n=1, labels="series"), get_profile("smoke"))
    plain = seg.FrameSet(vols)
    aug = seg.FrameSet(vols, transform=domain_randomisation())
    np.random.seed(3)
    a = aug[0]
    np.random.seed(3)
    b = aug[0]
    assert torch.equal(a["image"], b["image"])
    assert not torch.equal(a["image"], plain[0]["image"])
    assert a["image"].shape == plain[0]["image"].shape
    assert a["labels"].dtype == torch.int64


def test_augmentation_is_applied_in_training_only(tmp_path, monkeypatch):
    from cardiolab.profiles import override
    calls = []
    real = seg.augmentation

    def counting(profile):
        fn = real(profile)
        return lambda x, y: (calls.append(len(x)), fn(x, y))[1]

    monkeypatch.setattr(seg, "augmentation", counting)
    cache = make_cache(tmp_path, n=5)
    profile = override(get_profile("smoke"), ["eval.seg_randomise=true"])
    run = seg.train(profile, out=tmp_path / "run", steps=3, cache_dir=cache)       # trains, then scores holdout
    assert (run / "scores.json").exists()
    assert calls == [profile.eval.seg_batch] * 3                                    # training batches only
