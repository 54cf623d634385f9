"""One shaping rule and one staleness rule.

Each profile field says once whether it shapes weights (`profiles.runtime`); every registered model's run is checked
against it through the registry's staleness check (`tasks.status`), on run folders that only record their shaping
(no training). Every other artifact (caches, phantoms, latents, sample cohorts) goes through the same `core.stale`.
"""
from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import torch

from cardiolab.core import read_stamp, stale
from cardiolab.profiles import Profile, get_profile, override, shapes, shaping_fields
from cardiolab.tasks import REGISTRY, ensure_samples, get_task, status

SMOKE = get_profile("smoke")

# Registered models by what they are built on (mask-to-image: stage 2 of the smoke profile's family, ldm). dit-dp
# trains on private latents that it names by path (encoded apart, `encode`), and fine-tunes the public DiT run:
# whatever retrains that DiT retrains dit-dp too (the run id of its init is part of its shaping).
CINE = {"vqgan", "dit", "factorized", "channel-merged", "ddpm", "ldm", "flow", "mask-generator", "mask-to-image",
        "segmenter", "evaluator", "landmarks", "copy-detector"}                      # the prepared cine cache
LATENT = {"dit", "factorized", "channel-merged", "ldm", "flow", "mask-to-image"}    # the VQ-GAN's latents
HR_VQ, HR_LDM, HR_CN, HR_SEG = "highres-vqgan", "highres-ldm", "highres-controlnet", "highres-segmenter"


def built_on(section: str, name: str) -> set[str]:
    """The models whose weights field section.name shapes, directly or through an upstream run (written out
    here, apart from the code, as what a user expects)."""
    if section == "data":
        return CINE | {"dit-dp"}
    if section == "vqgan":
        return {"vqgan", "dit-dp"} | LATENT
    if section == "dit":
        return {"dit", "factorized", "channel-merged", "dit-dp"}
    if section == "baselines":
        if name == "family":
            return {"mask-to-image"}
        if name.startswith("pixel_"):
            return {"ddpm", "mask-generator"}
        if name in ("channels", "batch", "steps"):
            return {"ldm", "flow", "mask-to-image"}
        return {"ddpm", "ldm", "flow", "mask-generator", "mask-to-image"}
    if section == "eval":
        return {"segmenter"} if name.startswith("seg_") else {"evaluator"}
    if section == "highres":
        if name in ("size", "subjects", "holdout", "modality", "batch"):
            return {HR_VQ, HR_LDM, HR_CN, HR_SEG}
        if name.startswith("seg_"):
            return {HR_SEG}
        if name in ("r", "initial_stride", "control_dropout", "cn_steps"):
            return {HR_CN}
        if name in ("unet_channels", "attention_levels", "res_blocks", "train_timesteps", "ldm_steps", "ldm_lr"):
            return {HR_LDM, HR_CN}
        return {HR_VQ, HR_LDM, HR_CN}                                # the VQ-GAN's fields
    return {"dp": {"dit-dp"}, "landmarks": {"landmarks"}, "copydetector": {"copy-detector"}}[section]


def every_field() -> list[tuple[str | None, str]]:
    """(section, field) of every profile section, and (None, field) of the profile's own runtime fields (its
    data source is checked in test_data_source.py)."""
    out = []
    for f in dataclasses.fields(Profile):
        value = getattr(SMOKE, f.name)
        if dataclasses.is_dataclass(value):
            out += [(f.name, g.name) for g in dataclasses.fields(value)]
        elif not shapes(Profile, f.name):
            out.append((None, f.name))
    return out


OTHER = {"amp": "off", "family": "flow", "target": "disc", "loss": "bce_dice", "decoder": "soft_argmax",
         "accountant": "rdp", "params": "attention", "modality": "mr", "device": "cpu"}


def other_value(name: str, value):
    """A valid value other than `value` for field `name`."""
    if name in OTHER:
        return OTHER[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 4 if isinstance(value, int) else value * 2 + 0.5
    if isinstance(value, tuple):
        return tuple(other_value(name, v) for v in value)
    raise AssertionError(f"no other value for {name}={value!r}: add one to OTHER")


def changed(section: str | None, name: str) -> Profile:
    if section is None:
        return dataclasses.replace(SMOKE, **{name: other_value(name, getattr(SMOKE, name))})
    part = getattr(SMOKE, section)
    return dataclasses.replace(SMOKE, **{section: dataclasses.replace(part, **{name: other_value(name, getattr(part, name))})})


def record_run(profile: Profile, name: str) -> None:
    """runs/<profile>/<name> as a finished run trained with the profile's shaping (what a trained run records)."""
    run = profile.run(name)
    run.mkdir(parents=True, exist_ok=True)
    shaping = json.loads(json.dumps(get_task(name).shaping(profile)))
    (run / "state.json").write_text(json.dumps({"finished": True, "step": 1, "steps": 1, "config": {"shaping": shaping}}))
    (run / "checkpoint.pt").write_bytes(b"")


def retrained(profile: Profile) -> set[str]:
    """The models `ensure` would retrain after the profile changed to `profile`: the stale ones, then those that
    became stale because an upstream run was retrained, until none is left."""
    out: set[str] = set()
    while todo := {n for n in REGISTRY if status(n, profile) == "stale"} - out:
        for name in todo:
            record_run(profile, name)
        out |= todo
    return out


@pytest.fixture
def trained_root(tmp_path, monkeypatch):
    """A root where every registered model of the smoke profile is trained (as far as staleness can tell)."""
    monkeypatch.setenv("CARDIOLAB_ROOT", str(tmp_path))
    for name in REGISTRY:
        record_run(SMOKE, name)
    assert {n: status(n, SMOKE) for n in REGISTRY} == {n: "finished" for n in REGISTRY}
    return tmp_path


@pytest.mark.parametrize("section,name", every_field(), ids=lambda v: str(v))
def test_a_field_retrains_exactly_the_runs_built_on_it(trained_root, section, name):
    expected = built_on(section, name) if shapes(getattr(SMOKE, section) if section else SMOKE, name) else set()
    assert retrained(changed(section, name)) == expected


def test_runtime_fields_are_the_ones_a_user_expects_to_keep_a_run():
    """Sampling, decoding, evaluation, memory and precision settings; amp in every section that has one."""
    runtime = {(s, n) for s, n in every_field() if not shapes(getattr(SMOKE, s) if s else SMOKE, n)}
    assert {(s, "amp") for s in ("vqgan", "dit", "baselines", "highres")} <= runtime
    assert {("dit", "sample_steps"), ("baselines", "pixel_sample_steps"), ("landmarks", "threshold"),
            ("highres", "code_chunk"), (None, "device")} <= runtime
    assert ("dit", "steps") not in runtime
    assert "amp" not in shaping_fields(SMOKE.dit)
    assert shaping_fields(SMOKE.highres, ("crop", "amp")) == {"crop": (32, 32, 16)}


# ---- the one staleness rule ----------------------------------------------------------------------------------
def test_stale_names_what_changed():
    assert stale({"a": 1, "b": {"c": (1, 2)}, "extra": 0}, {"a": 1, "b": {"c": [1, 2]}}) == ""
    assert stale(None, {"a": 1}) == "missing"
    assert stale({"a": 1}, {"a": 2}) == "a: 1 -> 2"
    assert stale({"s": {"x": 1, "amp": "auto"}}, {"s": {"x": 1}}) == 's.amp: "auto" -> (absent)'
    assert stale({}, {"vqgan_id": "abc"}) == 'vqgan_id: (absent) -> "abc"'


def test_an_unreadable_stamp_is_stale_not_an_error(tmp_path):
    (tmp_path / "latents.pt").write_bytes(b"not a zip")
    (tmp_path / "cohort.json").write_text("{")
    assert read_stamp(tmp_path / "latents.pt") is None
    assert read_stamp(tmp_path / "cohort.json") is None
    assert read_stamp(tmp_path / "none.json") is None
    torch.save({"vqgan_id": "x", "latents": torch.zeros(2)}, tmp_path / "ok.pt")
    assert stale(read_stamp(tmp_path / "ok.pt"), {"vqgan_id": "x"}) == ""


def test_a_stale_run_is_retrained_with_one_line_naming_the_change(trained_root, caplog):
    from cardiolab.engine import ensure_run

    calls = []
    wanted = get_task("ldm").shaping(override(SMOKE, ["baselines.lr=0.5"]))
    with caplog.at_level(logging.INFO, logger="cardiolab.engine"):
        ensure_run(SMOKE.run("ldm"), 1, wanted, calls.append)
    assert calls == [False]                                   # from scratch, not resumed
    assert "ldm: stale (shaping.section.lr: 0.001 -> 0.5), retraining" in caplog.text


@pytest.mark.parametrize("name,field,redrawn", [
    ("dit", "dit.sample_steps", True), ("dit", "dit.n_samples", True), ("dit", "dit.amp", False),
    ("ldm", "baselines.sample_steps", True), ("ldm", "baselines.n_samples", True),
    ("ldm", "baselines.pixel_sample_steps", False), ("ddpm", "baselines.pixel_sample_steps", True),
    ("ddpm", "baselines.sample_steps", False)])
def test_sample_cohorts_are_redrawn_when_their_sampling_settings_change(trained_root, monkeypatch, name, field,
                                                                        redrawn):
    """One rule for every generator's cohort: run id, count, sampling steps and seed (the baselines' cohorts were
    kept when their sample steps changed)."""
    from cardiolab.core import write_json
    from cardiolab.engine import run_id
    from cardiolab.io.cohort import SAMPLES_JSON

    task = get_task(name)
    drawn = []

    def sample_cohort(run, n, steps, seed, out, profile, **kw):
        drawn.append((n, steps))
        write_json(out / SAMPLES_JSON, {"run_id": run_id(run), "n": n, "steps": steps, "seed": seed})
        return out

    monkeypatch.setattr(task, "ensure", lambda profile, run_dir=None: profile.run(name))
    monkeypatch.setattr(task, "sample_cohort", sample_cohort)
    ensure_samples(name, SMOKE)
    ensure_samples(name, SMOKE)
    assert len(drawn) == 1
    ensure_samples(name, changed(*field.split(".")))
    assert len(drawn) == 1 + redrawn
