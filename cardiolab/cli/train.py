"""`python -m cardiolab train <model>`: train one registered model through the shared engine."""
from __future__ import annotations

import inspect
from pathlib import Path

from cardiolab.cli import add_data, add_profile, resolve_profile
from cardiolab.core import CardiolabError
from cardiolab.tasks import REGISTRY, get_task

HELP = "train a registered model in a profile (--resume continues a killed run)"


def add_arguments(p) -> None:
    p.add_argument("model", choices=list(REGISTRY), help="which model to train")
    add_profile(p)
    add_data(p)
    p.add_argument("--out", type=Path, help="run folder (default runs/<profile>/<model>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--steps", type=int, help="override the profile's number of steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latents", type=Path, help="latents.pt (or its folder) to train on (latent models: dit, dit-dp)")
    p.add_argument("--keep-every", type=int, default=None,
                   help="dit: also keep checkpoint-<step>.pt every N steps (for `audit sweep`)")
    p.add_argument("--init", help="dit-dp: the public DiT run to fine-tune, or 'none' (from scratch)")
    p.add_argument("--root", type=Path, help="evaluator: a cohort folder (e.g. real cines) to prepare and train on")
    p.add_argument("--cache", type=Path, help="a prepared cache to train on (models whose train takes cache_dir)")
    p.add_argument("--replayable", action="store_true",
                   help="dit-dp: seeded Poisson masks and noise for bit-exact replay (tests, teaching); privacy.json "
                        "records release: false and export will not call the cohort DP (default: release mode, "
                        "secret noise)")


def run(args) -> int:
    train = get_task(args.model).train
    profile = resolve_profile(args)
    options = (("latents", "latents", args.latents), ("init", "init", args.init), ("root", "root", args.root),
               ("cache", "cache_dir", args.cache), ("keep_every", "keep_every", args.keep_every),
               ("replayable", "replayable", True if args.replayable else None))
    extra = {param: v for _, param, v in options if v is not None}
    params = inspect.signature(train).parameters
    if unknown := [flag for flag, param, v in options if v is not None and param not in params]:
        raise CardiolabError(f"train {args.model}: --{unknown[0]} is not an option of this model")
    out = train(profile, out=args.out, resume=args.resume, steps=args.steps, seed=args.seed, **extra)
    print(f"trained {args.model}: {out}")
    return 0
