"""`python -m cardiolab sample`: sample a trained generator run into a synthetic cohort (ACDC layout; a volume
cohort for highres-controlnet, conditioned on the masks of --mask)."""
from __future__ import annotations

import inspect
from pathlib import Path

from cardiolab.cli import add_profile

HELP = "sample a trained generator run (the DiT by default) into a synthetic cohort (synth0001, ... ACDC layout)"


def add_arguments(p) -> None:
    add_profile(p)
    p.add_argument("--run", default=None, help="generator run folder (default runs/<profile>/dit)")
    p.add_argument("--n", type=int, default=None, help="number of studies (default: the profile's n_samples)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the profile's sample_steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--cond", default="random", choices=["random", "from-training-distribution", "none"],
                   help="attributes to condition on")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity (0 = deterministic)")
    p.add_argument("--batch", type=int, default=4, help="samples per network pass")
    p.add_argument("--no-gifs", action="store_true", help="skip the animated GIF per sample")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="cohort folder (default runs/<profile>/samples/<model>)")
    p.add_argument("--mask", default=None,
                   help="highres-controlnet: volume-layout cohort whose masks condition the samples "
                        "(default: the profile's holdout volumes)")
    p.add_argument("--conditioning-scale", type=float, default=None,
                   help="highres-controlnet: ControlNet residual scale, >= 0 (0: unconditional; default profile)")


def run(args) -> int:
    from cardiolab.core import CardiolabError
    from cardiolab.profiles import get_profile
    from cardiolab.tasks import get_task, task_of_run

    profile = get_profile(args.profile)
    run_dir = Path(args.run or profile.run("dit"))
    name = task_of_run(run_dir)
    task = get_task(name)
    if task.KIND != "generator":
        raise CardiolabError(f"--run {run_dir}: a {name} run ({task.KIND}), not a generator")
    extra = {k: v for k, v in (("mask", args.mask), ("conditioning_scale", args.conditioning_scale))
             if v is not None}
    params = inspect.signature(task.sample_cohort).parameters
    if unknown := [k for k in extra if k not in params]:
        raise CardiolabError(f"sample --run {run_dir}: --{unknown[0].replace('_', '-')} is not an option of {name}")
    defaults = task.sample_defaults(profile)
    out = task.sample_cohort(run_dir, n=args.n or (None if "mask" in extra else defaults["n"]), steps=args.steps or defaults["steps"],
                             seed=args.seed, out=Path(args.out or profile.samples(name)), guidance=args.guidance,
                             cond=args.cond, eta=args.eta, batch=args.batch, gifs=not args.no_gifs,
                             device=args.device, **extra)
    print(out)
    return 0
