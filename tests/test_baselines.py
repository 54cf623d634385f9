"""Baseline generators (factorized, channel-merged, ddpm, ldm, flow): train a few steps through the engine,
sample, write a cohort that passes `check`; seeded sampling; shaping ignores sampling-only settings."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from cardiolab.core import CardiolabError
from cardiolab.io.layouts import scan_cohort
from cardiolab.profiles import get_profile

LATENT_MODELS = ["factorized", "channel_merged", "ldm", "flow"]


def _module(name):
    import importlib

    return importlib.import_module(f"cardiolab.tasks.{name}")


def _train(task, tmp_path, fake_stage1, smoke_cache):
    kw = ({"cache_dir": smoke_cache} if task.SPEC.source == "pixels"
          else {"latents": fake_stage1["latents"], "cache_dir": fake_stage1["cache_dir"]})
    return task.train(get_profile("smoke"), out=tmp_path / task.SPEC.name, steps=3, **kw)


@pytest.mark.parametrize("name", LATENT_MODELS)
def test_train_sample_writes_a_checked_cohort(name, tmp_path, fake_stage1, smoke_cache):
    task = _module(name)
    assert task.KIND == "generator"
    run = _train(task, tmp_path, fake_stage1, smoke_cache)
    conf = json.loads((run / "config.json").read_text())
    assert conf["task"] == task.SPEC.name
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


@pytest.mark.parametrize("native, precision", [(True, "bf16"), (False, "fp32")])
def test_sampling_takes_the_runs_batch_and_native_precision(native, precision, monkeypatch, tmp_path, fake_stage1,
                                                            smoke_cache, fake_cpu):
    """Baselines sample in bf16 only where the CPU runs it natively, one training batch per network pass; the
    cohort's samples.json says which."""
    from cardiolab.tasks import common

    from cardiolab import engine

    fake_cpu(avx512_bf16=native, amx=False)
    # where bf16 is native, the training's own check found it sound (here: not timed, the wiring is the test)
    monkeypatch.setattr(engine.precision, "bf16_verdict", lambda fp32, bf16: ("bf16", "auto: test"))
    task = _module("ddpm")
    run = _train(task, tmp_path, fake_stage1, smoke_cache)
    seen = []
    real_sample = common.sample
    monkeypatch.setattr(common, "sample", lambda *a, **kw: seen.append((a[2][0], kw["autocast"])) or real_sample(*a, **kw))
    out = task.sample_cohort(run, n=3, steps=2, seed=0, out=tmp_path / "synth", device="cpu")
    meta = json.loads((out / "samples.json").read_text())
    smoke = get_profile("smoke").baselines
    assert meta["precision"] == precision
    assert meta["batch"] == smoke.pixel_batch == 2
    assert seen == [(2 * 4, precision == "bf16"), (1 * 4, precision == "bf16")]   # studies x 4 slices per pass


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


# ---- two-stage: mask generator -> mask-to-image --------------------------------------------------------

def test_two_stage_masks_then_images(tmp_path, smoke_cache, phantom_root):
    from cardiolab.io.acdc import read_acdc
    from cardiolab.profiles import override
    from cardiolab.tasks import mask_generator, mask_to_image

    stage1 = mask_generator.train(get_profile("smoke"), out=tmp_path / "masks", steps=2, cache_dir=smoke_cache)
    out1 = mask_generator.sample_cohort(stage1, n=2, steps=2, seed=0, out=tmp_path / "synth_masks", device="cpu")
    assert scan_cohort(out1) == (2, [])
    s = next(read_acdc(out1))
    assert s.label_series.shape == (32, 32, 4, 8)
    assert s.label_series.max() <= 3

    profile = override(get_profile("smoke"), ["baselines.family=ddpm"])
    stage2 = mask_to_image.train(profile, out=tmp_path / "m2i", steps=2, cache_dir=smoke_cache)
    out2 = mask_to_image.sample_cohort(stage2, n=2, steps=2, seed=0, out=tmp_path / "synth", mask_run=stage1,
                                       device="cpu")
    assert scan_cohort(out2) == (2, [])
    masks = mask_generator.sample_masks(stage1, 2, 2, seed=0)
    written = [np.asarray(x.label_series) for x in read_acdc(out2)]
    assert np.array_equal(written[0], masks[0].permute(1, 2, 0, 3).numpy())   # the conditioning masks are exported
    meta = json.loads((out2 / "samples.json").read_text())
    assert meta["generator"] == "mask-to-image"
    assert meta["masks"] == str(stage1)

    # a cohort's labels of the wrong geometry: one line naming the subject
    with pytest.raises(CardiolabError, match="label series"):
        mask_to_image.sample_cohort(stage2, n=1, steps=2, seed=0, out=tmp_path / "bad", mask=phantom_root)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(CardiolabError, match="baselines.family"):
        mask_to_image.spec(override(get_profile("smoke"), ["baselines.family=gan"]))


def test_mask_to_image_on_latents_pools_the_masks(tmp_path, smoke_cache, fake_stage1):
    from cardiolab.profiles import override
    from cardiolab.tasks import mask_to_image
    from cardiolab.tasks.vqgan import encode_cohort

    latents = encode_cohort(fake_stage1["vqgan_run"], smoke_cache, tmp_path / "latents")   # untrained VQ-GAN
    profile = override(get_profile("smoke"), ["baselines.family=flow"])
    run = mask_to_image.train(profile, out=tmp_path / "m2i", steps=2, latents=latents, cache_dir=smoke_cache)
    _, conf = mask_to_image.load(run)
    assert conf["sampler"] == "rflow"
    assert conf["mask_shape"] == [4, 32, 32, 8]
    # --mask DIR: a cohort with the cache's own label series (the real masks) at the smoke geometry
    from cardiolab.data.cines import cohort_geometry
    from cardiolab.io.cohort import write_cines
    from cardiolab.tasks.common import cache_labels, pixel_record

    record = pixel_record(smoke_cache)
    labels, _ = cache_labels(smoke_cache, record["ids"][:2])
    real = write_cines(tmp_path / "real", record["latents"][:2, 0], cohort_geometry(smoke_cache), labels=labels)
    out = mask_to_image.sample_cohort(run, n=2, steps=2, seed=0, out=tmp_path / "synth", mask=real, device="cpu")
    assert scan_cohort(out) == (2, [])
    assert json.loads((out / "samples.json").read_text())["masks"] == str(real)
    with pytest.raises(CardiolabError, match="nope"):
        mask_to_image.sample_cohort(run, n=1, steps=2, seed=0, out=tmp_path / "bad", mask=tmp_path / "nope")
    with pytest.raises(CardiolabError, match="need --n 3"):
        mask_to_image.sample_cohort(run, n=3, steps=2, seed=0, out=tmp_path / "bad", mask=real)
    assert not (tmp_path / "bad").exists()


def test_pixel_models_take_the_pixel_sizes_and_latent_models_ignore_them():
    from cardiolab.profiles import override

    tiny = get_profile("tiny")
    b = tiny.baselines
    ddpm, maskgen, ldm = _module("ddpm"), _module("mask_generator"), _module("ldm")
    for pixel in (ddpm, maskgen):
        section = pixel.SPEC.section(tiny)
        assert (section.channels, section.batch, section.steps, section.sample_steps) == \
            (b.pixel_channels, b.pixel_batch, b.pixel_steps, b.pixel_sample_steps)
        assert pixel.sample_defaults(tiny)["steps"] == b.pixel_sample_steps
        assert pixel.shaping(override(tiny, ["baselines.pixel_steps=7"]))["section"]["steps"] == 7
        assert pixel.shaping(override(tiny, ["baselines.steps=7"])) == pixel.shaping(tiny)
    assert ldm.SPEC.section(tiny) is b
    changed = override(tiny, ["baselines.pixel_channels=8,16", "baselines.pixel_steps=7"])
    assert ldm.shaping(changed) == ldm.shaping(tiny)
    assert not any(k.startswith("pixel_") for k in ddpm.shaping(tiny)["section"])
    assert ddpm.num_parameters(tiny) < ldm.num_parameters(tiny)          # (16, 32, 64) vs (32, 64, 64)
