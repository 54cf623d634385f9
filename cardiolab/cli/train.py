"""`python -m cardiolab train <model>`: train one model of the pipeline through the shared engine."""
from __future__ import annotations

import importlib
from pathlib import Path

from cardiolab.cli import add_profile
from cardiolab.profiles import get_profile, override

HELP = "train a model (vqgan, dit, segmenter, evaluator) in a profile; --resume continues a killed run"

# model name -> (module, function) with fn(profile, out=None, resume=False, steps=None, seed=0) -> run folder
MODELS = {"vqgan": ("cardiolab.tasks.vqgan", "train"), "dit": ("cardiolab.tasks.dit", "train"),
          "segmenter": ("cardiolab.tasks.segmenter", "train"),
          "evaluator": ("cardiolab.metrics.features", "train_evaluator")}


def add_arguments(p) -> None:
    p.add_argument("model", choices=list(MODELS), help="which model to train")
    add_profile(p)
    p.add_argument("--out", type=Path, help="run folder (default runs/<profile>/<model>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--steps", type=int, help="override the profile's number of steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override one profile field for this run, e.g. --set vqgan.disc_start=4000 (repeatable)")


def run(args) -> int:
    module, fn = MODELS[args.model]
    train = getattr(importlib.import_module(module), fn)
    profile = override(get_profile(args.profile), args.set)
    out = train(profile, out=args.out, resume=args.resume, steps=args.steps, seed=args.seed)
    print(f"trained {args.model}: {out}")
    return 0
