"""The one registry of trainable models: name -> task module. A new model is one file here plus one line below.

A task module holds what a model adds to the engine and exposes:
    NAME, KIND                        registry name; "generator", "autoencoder", "segmenter", "evaluator", ...
    shaping(profile) -> dict          the config fields that shape its weights + ids of the runs it builds on
    num_parameters(profile) -> int
    train(profile, out=None, resume=False, steps=None, seed=0) -> run folder
    ensure(profile, run_dir=None) -> run folder (trained unless finished with the same shaping)
    load(run_dir, ...)                the trained network
    sample_cohort(run_dir, n, steps, seed, out, ...) -> cohort folder      (generators only, with
    sample_defaults(profile) -> {"n", "steps"}; cohorts go through `cardiolab.io.cohort.write_cines`)
Every run records its registry name as config["task"], so `sample --run RUN` finds its generator.
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from types import ModuleType

from cardiolab.core import RUN_CONFIG, CardiolabError, read_stamp, up_to_date
from cardiolab.engine import STATE, run_id, run_status
from cardiolab.io.cohort import SAMPLES_JSON
from cardiolab.profiles import Profile

REGISTRY: dict[str, str] = {
    "vqgan": "cardiolab.tasks.vqgan",
    "dit": "cardiolab.tasks.dit",
    "segmenter": "cardiolab.tasks.segmenter",
    "evaluator": "cardiolab.tasks.evaluator",
    "dit-dp": "cardiolab.tasks.dp",
    "factorized": "cardiolab.tasks.factorized",
    "channel-merged": "cardiolab.tasks.channel_merged",
    "ddpm": "cardiolab.tasks.ddpm",
    "ldm": "cardiolab.tasks.ldm",
    "flow": "cardiolab.tasks.flow",
    "mask-generator": "cardiolab.tasks.mask_generator",
    "mask-to-image": "cardiolab.tasks.mask_to_image",
    "landmarks": "cardiolab.tasks.landmarks",
    "copy-detector": "cardiolab.tasks.copy_detector",
    "highres-vqgan": "cardiolab.tasks.highres_vqgan",
    "highres-ldm": "cardiolab.tasks.highres_ldm",
    "highres-controlnet": "cardiolab.tasks.highres_controlnet",
    "highres-segmenter": "cardiolab.tasks.highres_segmenter",
}

# Runs made before runs recorded config["task"]: recognised by their config sections.
_LEGACY_KEYS = (("dit", "dit"), ("vqgan", "vqgan"), ("evaluator", "evaluator"), ("model", "segmenter"))


def get_task(name: str) -> ModuleType:
    """The task module registered as `name`."""
    if name not in REGISTRY:
        raise CardiolabError(f"unknown model {name!r}: choose one of {', '.join(REGISTRY)}")
    return importlib.import_module(REGISTRY[name])


def task_of_run(run_dir: str | os.PathLike) -> str:
    """The registry name a run folder was trained as (its config.json's "task", or its sections for old runs)."""
    path = Path(run_dir) / RUN_CONFIG
    if not path.exists():
        raise CardiolabError(f"{run_dir}: not a run folder (no {RUN_CONFIG}; train a model first)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CardiolabError(f"{path}: not valid JSON ({e})") from None
    if config.get("task") in REGISTRY:
        return config["task"]
    for key, name in _LEGACY_KEYS:
        if key in config:
            return name
    raise CardiolabError(f"{path}: no model name recorded (config has no 'task')")


def generators() -> list[str]:
    """Registry names of the models that sample synthetic cohorts."""
    return [name for name in REGISTRY if get_task(name).KIND == "generator"]


def status(name: str, profile: Profile) -> str:
    """The state of model `name`'s run of the profile (runs/<profile>/<name>) under the one staleness rule:
    'finished', 'partial', 'stale' (trained with other shaping settings: `ensure` retrains it) or 'missing'."""
    run = profile.run(name)
    # shaping holds the step count, so "finished" with the same shaping is the profile's whole run
    state = run_status(run, 0, {"shaping": get_task(name).shaping(profile)})
    if state == "fresh":
        return "stale" if (run / STATE).exists() else "missing"
    return state


def describe(profile: Profile) -> list[dict]:
    """One row per registered model: name, kind, parameters at the profile's sizes, its run folder and `status`."""
    return [{"name": name, "kind": get_task(name).KIND, "parameters": int(get_task(name).num_parameters(profile)),
             "run": str(profile.run(name)), "status": status(name, profile)} for name in REGISTRY]


def ensure_samples(name: str, profile: Profile, seed: int = 0,
                   run_dir: str | os.PathLike | None = None, out: str | os.PathLike | None = None, **kw) -> Path:
    """Generator `name`'s cohort at the profile's sampling settings (default runs/<profile>/samples/<name>): its run
    ensured (trained unless current), the cohort redrawn unless its samples.json records this run's id and the
    profile's count, sampling steps and this seed (the one staleness rule). kw: more sample_cohort options."""
    task = get_task(name)
    run = task.ensure(profile, run_dir)
    out = Path(out or profile.samples(name))
    n, steps = (task.sample_defaults(profile)[k] for k in ("n", "steps"))
    if not up_to_date(out, read_stamp(out / SAMPLES_JSON), {"run_id": run_id(run), "n": n, "steps": steps, "seed": seed}):
        task.sample_cohort(run, n=n, steps=steps, seed=seed, out=out, profile=profile, **kw)
    return out
