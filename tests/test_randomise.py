"""SynthSeg-style domain randomisation: shapes, labels follow the image, random contrast, determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cardiolab.core import CardiolabError
from cardiolab.data.randomise import domain_randomisation

SIZE = 48


def toy_sample(frames: int = 1) -> dict:
    """LV disc in a MYO ring, an RV crescent-ish disc beside it, textured background: image (C, H, W) in
    [-1, 1] with bSSFP-like ordering (LV bright, MYO dark), labels (H, W) int64."""
    gx, gy = np.indices((SIZE, SIZE))
    d = np.hypot(gx - 24, gy - 22)
    lab = np.where(d < 8, 3, np.where(d < 12, 2, np.where(np.hypot(gx - 24, gy - 36) < 7, 1, 0)))
    value = np.array([-0.5, 0.0, -0.6, 0.3])[lab]
    rng = np.random.default_rng(0)
    image = value[None] + 0.1 * rng.standard_normal((frames, SIZE, SIZE))
    image[:, :, :6] = -1.0                                                  # a dark strip (air / lung)
    return {"image": torch.from_numpy(image.astype(np.float32)), "labels": torch.from_numpy(lab).long()}


def label_means(out: dict) -> np.ndarray:
    img, lab = out["image"][0], out["labels"]
    return np.array([img[lab == k].mean().item() for k in range(4)])


@pytest.mark.parametrize("frames,stack_labels", [(1, False), (5, False), (5, True)])
def test_shapes_dtypes_and_range(frames, stack_labels):
    sample = toy_sample(frames)
    if stack_labels:                                                        # 2D+t labels, one map per frame
        sample["labels"] = sample["labels"][None].repeat(frames, 1, 1)
    out = domain_randomisation(seed=1)(dict(sample))
    assert out["image"].shape == sample["image"].shape
    assert out["labels"].shape == sample["labels"].shape
    assert out["image"].dtype == torch.float32
    assert out["labels"].dtype == torch.int64
    assert out["image"].min() >= -1
    assert out["image"].max() <= 1
    assert set(out["labels"].unique().tolist()) <= {0, 1, 2, 3}
    assert set(out) == {"image", "labels"}


def test_labels_move_with_the_image():
    """Image = its own label map: after the warp both still agree, and the warp did move things."""
    sample = toy_sample()
    sample["image"] = (sample["labels"].float() / 3 * 2 - 1)[None]
    moved = 0
    for seed in range(4):
        out = domain_randomisation(seed=seed, intensity=False, artefacts=False)(dict(sample))
        from_image = torch.round((out["image"][0] + 1) / 2 * 3).long()
        assert (from_image == out["labels"]).float().mean() > 0.97, seed    # disagree only on blurred edges
        moved += int((out["labels"] != sample["labels"]).sum() > 20)
    assert moved >= 3


def test_batch_labels_move_with_each_sample_and_plain_share_keeps_contrast():
    from cardiolab.data.randomise import RandomiseConfig, randomise_batch
    base = toy_sample()
    image = (base["labels"].float() / 3 * 2 - 1)[None, None].repeat(16, 1, 1, 1)       # image = label map
    labels = base["labels"][None].repeat(16, 1, 1)
    torch.manual_seed(0)
    still = RandomiseConfig(plain_share=1.0, plain_jitter=0.0, spatial_prob=1.0)
    x, y = randomise_batch(image, labels, still)
    from_image = torch.round((x[:, 0] + 1) / 2 * 3).long()
    agree = (from_image == y).float().mean((1, 2))
    assert (agree > 0.97).all(), agree                                      # each sample on its own grid
    assert len({tuple(yi.flatten()[::7].tolist()) for yi in y}) == 16       # and every sample its own warp
    torch.manual_seed(0)
    x, _ = randomise_batch(image, labels, RandomiseConfig(plain_share=0.5, plain_jitter=0.0, spatial_prob=0.0))
    kept = torch.tensor([torch.allclose(x[i], image[i], atol=1e-5) for i in range(16)])
    assert 3 <= int(kept.sum()) <= 13                                       # about half kept their contrast
    with pytest.raises(CardiolabError, match="expected image"):
        randomise_batch(image[0], labels)


def test_intensities_differ_per_label_across_draws():
    tf = domain_randomisation(seed=0)
    means = np.stack([label_means(tf(toy_sample())) for _ in range(8)])    # (draws, labels)
    assert (means.std(axis=0) > 0.1).all()                                  # every label's level varies
    assert len({tuple(np.argsort(m)) for m in means}) > 2                   # and their order, not just a gain


def test_deterministic_under_a_fixed_seed():
    a = domain_randomisation(seed=7)(toy_sample())
    b = domain_randomisation(seed=7)(toy_sample())
    c = domain_randomisation(seed=8)(toy_sample())
    assert torch.equal(a["image"], b["image"])
    assert torch.equal(a["labels"], b["labels"])
    assert not torch.equal(a["image"], c["image"])
    np.random.seed(3)                                                       # what seed_everything does
    d = domain_randomisation()(toy_sample())
    np.random.seed(3)
    e = domain_randomisation()(toy_sample())
    assert torch.equal(d["image"], e["image"])


def test_bad_argument():
    with pytest.raises(CardiolabError, match="background_classes"):
        domain_randomisation(background_classes=0)
