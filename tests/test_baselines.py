"""Baseline generators (factorized, channel-merged, ddpm, ldm, flow): train a few steps through the engine,
sample, write a cohort that passes `check`; seeded sampling; shaping ignores sampling-only settings."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from cardiolab.core import CardiolabError
from cardiolab.io.validate import scan_cohort
from cardiolab.profiles import get_profile

LATENT_MODELS = ["factorized", "channel_merged", "ldm", "flow"]


def _module(name):
    import importlib

    return importlib.import_module(f"cardiolab.tasks.{name}")


def _train(task, tmp_path, fake_stage1, smoke_cache):
    kw = ({"cache_dir": smoke_cache} if task.SPEC.source == "pixels"
          else {"latents": fake_stage1["latents"], "cache_dir": fake_stage1["cache_dir"]})
    return task.train("smoke", out=tmp_path / task.SPEC.name, steps=3, **kw)


@pytest.mark.parametrize("name", LATENT_MODELS)
def test_train_sample_writes_a_checked_cohort(name, tmp_path, fake_stage1, smoke_cache):
    task = _module(name)
    assert task.KIND == "generator"
    run = _train(task, tmp_path, fake_stage1, smoke_cache)
    conf = json.loads((run / "config.json").read_text())
    assert conf["model"] == task.SPEC.name
    out = task.sample_cohort(run, n=2, steps=2, seed=0, out=tmp_path / "synth", device="cpu")
    n, problems = scan_cohort(out)
    assert n == 2
    assert problems == []
    meta = json.loads((out / "samples.json").read_text())
    assert meta["generator"] == task.SPEC.name
    assert meta["ids"] == ["synth0001", "synth0002"]


@pytest.mark.parametrize("name", ["factorized", "flow"])
def test_seeded_samples_are_identical(name, tmp_path, fake_stage1, smoke_cache):
    from cardiolab.tasks import common

    task = _module(name)
    run = _train(task, tmp_path, fake_stage1, smoke_cache)
    model, conf = task.load(run)
    draw = lambda seed: common.sample_latents(model, conf, 2, 2, seed)[0]
    a, b, c = draw(3), draw(3), draw(4)
    assert a.shape == (2, 4, 3, 4, 4, 2)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_pixel_ddpm_stacks_slices_of_the_cache_geometry(tmp_path, fake_stage1, smoke_cache):
    from cardiolab.io.acdc import read_acdc

    task = _module("ddpm")
    run = _train(task, tmp_path, fake_stage1, smoke_cache)
    out = task.sample_cohort(run, n=1, steps=2, seed=0, out=tmp_path / "synth", device="cpu")
    assert scan_cohort(out) == (1, [])
    assert json.loads((out / "samples.json").read_text())["generator"] == "ddpm"
    s = next(read_acdc(out))
    assert s.image.shape == (32, 32, 4, 8)              # smoke: 32 px, 4 slices, 8 frames
    assert np.isfinite(s.image).all()


def test_shaping_ignores_sampling_settings_and_load_checks_the_model(tmp_path, fake_stage1, smoke_cache):
    from cardiolab.profiles import override

    flow, ldm = _module("flow"), _module("ldm")
    smoke = get_profile("smoke")
    assert flow.shaping(override(smoke, ["baselines.sample_steps=9", "baselines.n_samples=7"])) == flow.shaping(smoke)
    assert flow.shaping(override(smoke, ["baselines.lr=0.5"])) != flow.shaping(smoke)
    assert flow.shaping(smoke) != ldm.shaping(smoke)
    run = _train(ldm, tmp_path, fake_stage1, smoke_cache)
    with pytest.raises(CardiolabError, match="not a flow run"):
        flow.load(run)
    assert dataclasses.is_dataclass(ldm.load(run)[0].config)
