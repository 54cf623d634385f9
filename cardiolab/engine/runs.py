"""A run folder on disk: its checkpoint, state.json and metrics.jsonl; whether it is finished, partial or stale
(`ensure_run`: the one staleness rule for runs), and its id."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from cardiolab.core import CardiolabError, fingerprint, read_stamp, stale

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
STATE = "state.json"          # small sidecar: step, steps, finished (readable without loading weights)
METRICS = "metrics.jsonl"


def kept_checkpoint(step: int) -> str:
    """File name of the checkpoint kept at `step` (TrainConfig.keep_every)."""
    return f"checkpoint-{int(step)}.pt"


def kept_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """[(step, path)] of a run's kept checkpoints, by step."""
    found = []
    for path in Path(run_dir).glob("checkpoint-*.pt"):
        step = path.stem.partition("-")[2]
        if step.isdigit():
            found.append((int(step), path))
    return sorted(found)


def load_checkpoint(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load run_dir/checkpoint.pt (or a .pt path) with weights_only=True; clear error if missing or corrupt."""
    path = Path(run_dir)
    path = path / CHECKPOINT if path.is_dir() else path
    if not path.exists():
        raise CardiolabError(f"{path}: no checkpoint (train the model first)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle of a non-tensor object, ...
        raise CardiolabError(f"{path}: cannot load checkpoint ({type(e).__name__}: {e})") from None
    for part in ("modules", "ema"):
        for name, sd in (ckpt.get(part) or {}).items() if isinstance(ckpt, dict) else ():
            bad = [k for k, v in sd.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
            if bad:
                raise CardiolabError(f"{path}: {len(bad)} weights of {part} '{name}' hold NaN or inf (first: {bad[0]});"
                                     " the run diverged, retrain it", exit_code=1)
    return ckpt


def run_status(run_dir: str | os.PathLike, steps: int, match: dict | None = None) -> str:
    """What `ensure_*` should do with run_dir: 'finished' (use it), 'partial' (resume it) or 'fresh' (train anew).

    match: config entries (e.g. {"shaping": ...}) the run must have been trained with, compared by the one
    staleness rule (`core.stale`); a run of another configuration is 'fresh', so a changed profile retrains
    instead of resuming incompatible weights.
    """
    return _run_state(run_dir, steps, match)[0]


def _run_state(run_dir: str | os.PathLike, steps: int, match: dict | None = None) -> tuple[str, str]:
    """(`run_status`, why: '' or what made the run stale)."""
    state = read_stamp(Path(run_dir) / STATE)
    if state is None or not (Path(run_dir) / CHECKPOINT).exists():
        return "fresh", "missing"
    if why := stale(state.get("config", {}), match or {}):
        return "fresh", why
    return ("finished" if state.get("finished") and state.get("step", 0) >= steps else "partial"), ""


def recorded_shaping(run_dir: str | os.PathLike) -> dict:
    """The shaping a run recorded with its last checkpoint (see `ensure_run`); {} for a run without one."""
    path = Path(run_dir) / STATE
    return json.loads(path.read_text()).get("config", {}).get("shaping", {}) if path.exists() else {}


def run_id(run_dir: str | os.PathLike) -> str:
    """Id of a trained run's weights: its recorded shaping and step (samples and latents record it)."""
    path = Path(run_dir) / STATE
    step = json.loads(path.read_text()).get("step") if path.exists() else None
    return fingerprint({"shaping": recorded_shaping(run_dir), "step": step})


def ensure_run(run_dir: str | os.PathLike, steps: int, shaping: dict, train: Callable[[bool], Any],
               require: tuple[str, ...] = ()) -> Path:
    """`train(resume)` unless run_dir finished with exactly this `shaping` (the one staleness rule, `core.stale`).

    shaping: the config fields that shape the run's weights (step counts included) plus the ids of the runs it was
    built from (each task's `shaping(profile)`); the run records it in its config as "shaping". Settings outside it
    (sampling, evaluation, precision) never retrain; a partial run (killed before its last step) is resumed.
    require: files a finished run also writes after training (e.g. "scores.json"); when one is missing (killed
    between the last checkpoint and writing it) the run is resumed, which redoes only that work.
    """
    status, why = _run_state(run_dir, steps, {"shaping": shaping})
    if status == "finished" and not all((Path(run_dir) / name).exists() for name in require):
        status = "partial"
    if status != "finished":
        what = ("partial run, resuming" if status == "partial" else "no run yet" if why == "missing"
                else f"stale ({why}), retraining")
        log.info("%s: %s", run_dir, what)
        train(status == "partial")
    return Path(run_dir)


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The records of run_dir/metrics.jsonl."""
    path = Path(run_dir) / METRICS
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def training_curves(run_dir: str | os.PathLike):
    """metrics.jsonl of a run as a pandas DataFrame indexed by step (for the training figures)."""
    records = read_metrics(run_dir)
    if not records:
        raise CardiolabError(f"{Path(run_dir) / METRICS}: no training log")
    return pd.DataFrame.from_records(records).set_index("step")
