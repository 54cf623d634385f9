"""RVIP detector task (cardiolab.tasks.landmarks): train / load / predict / score on a smoke cache."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cardiolab.core import CardiolabError
from cardiolab.profiles import get_profile, override
from cardiolab.tasks import landmarks as task


@pytest.fixture(scope="module")
def cache(phantom_root, tmp_path_factory):
    from cardiolab.data.prepare import prepare
    out = tmp_path_factory.mktemp("lm") / "cache"
    prepare(phantom_root, "acdc", get_profile("smoke"), out)
    return out


def test_frame_stacks_wrap_around_the_beat():
    image = torch.arange(4.0).reshape(1, 1, 1, 1, 4).expand(1, 2, 3, 3, 4)       # frame t has value t
    x = task.frame_stacks(image, context=1, frames=[0, 3])
    assert x.shape == (4, 3, 3, 3)
    assert x[0, :, 0, 0].tolist() == [3.0, 0.0, 1.0]
    assert x[1, :, 0, 0].tolist() == [2.0, 3.0, 0.0]


def test_train_load_predict_score(cache, tmp_path):
    profile = override(get_profile("smoke"), ["landmarks.temporal_context=1", "landmarks.augment=true"])
    run = task.train(profile, out=tmp_path / "run", steps=2, cache_dir=cache)
    model = task.load(run, decoder="component")
    assert model.config.decoder == "component"
    assert model.config.in_channels == 3
    scores = (run / "scores.json").read_text()
    assert '"truth": "phantom"' in scores
    assert '"pitfalls"' in scores
    vol = task.cache_volumes(cache, "holdout")[0]
    points, confidence = task.predict(model, vol["image"])
    D, T = vol["image"].shape[1], vol["image"].shape[-1]
    assert points.shape == (D, T, 2, 2)
    assert confidence.shape == (D, T, 2)


def test_truth_is_the_cache_rvip_on_the_phantom(cache):
    vol = task.cache_volumes(cache, "public")[0]
    np.testing.assert_array_equal(task.truth_points(vol, [2]), vol["rvip"][:, [2]].numpy())


def test_stand_in_truth_has_points_where_rv_is(cache):
    vol = {**task.cache_volumes(cache, "public")[0], "has_rvip": False}          # as real data
    frames = torch.nonzero(vol["label_mask"]).flatten().tolist()[:1]
    pts = task.truth_points(vol, frames)
    has_rv = (vol["labels"][..., frames[0]] == 1).flatten(1).any(1).numpy()
    found = ~np.isnan(pts[:, 0]).any((1, 2))
    assert found[~has_rv].sum() == 0
    assert found[has_rv].mean() >= 0.5


def test_bad_sigma_named_before_training(tmp_path):
    profile = override(get_profile("smoke"), ["landmarks.sigma_mm=-1"])
    with pytest.raises(CardiolabError, match="landmarks.sigma_mm"):
        task.train(profile, out=tmp_path / "run", steps=1, cache_dir=tmp_path / "nowhere")
    assert not (tmp_path / "run").exists()


def test_load_rejects_other_runs(tmp_path):
    from cardiolab.engine import CHECKPOINT
    torch.save({"config": {"model": {"channels": [4, 8]}}, "modules": {}}, tmp_path / CHECKPOINT)
    with pytest.raises(CardiolabError, match="not a landmarks run"):
        task.load(tmp_path)


def test_shaping_ignores_decode_only_settings():
    base = get_profile("smoke")
    changed = override(base, ["landmarks.decoder=soft_argmax", "landmarks.threshold=0.6"])
    assert task.shaping(changed) == task.shaping(base)
    assert task.shaping(override(base, ["landmarks.sigma_mm=5"])) != task.shaping(base)



def test_augmentation_follows_the_global_numpy_seed(cache):
    """The engine re-seeds numpy before each step's fetch; augmented items must depend on that seed only,
    so a resumed run sees the same batches."""
    ds = task.LandmarkFrames(task.cache_volumes(cache, "public")[:1], task.model_config(get_profile("smoke")),
                             augment=True)
    items = []
    for seed in (0, 0, 1):
        np.random.seed(seed)
        items.append(ds[0]["image"])
    torch.testing.assert_close(items[0], items[1])
    assert not torch.equal(items[0], items[2])
