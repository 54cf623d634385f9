"""`python -m cardiolab sample`: sample a trained generator run into a synthetic cohort (ACDC layout; a volume
cohort for highres-controlnet, conditioned on the masks of --mask)."""
from __future__ import annotations

import inspect
from pathlib import Path

from cardiolab.cli import add_profile
from cardiolab.core import CardiolabError
from cardiolab.io.layouts import detect_layout
from cardiolab.profiles import override, run_profile
from cardiolab.tasks import get_task, task_of_run

HELP = "sample a trained generator into a synthetic cohort (ACDC layout, synthetic ids)"


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
    p.add_argument("--batch", type=int, default=None,
                   help="samples per network pass (default: the DiT 4, a baseline its training batch)")
    p.add_argument("--no-gifs", action="store_true", help="skip the animated GIF per sample")
    p.add_argument("--device", default="auto")
    p.add_argument("--mask", type=Path, default=None,
                   help="cohort whose masks condition the samples: label series for mask-to-image (default: stage 1 "
                        "draws masks), a volume-layout cohort for highres-controlnet (default: the holdout volumes)")
    p.add_argument("--out", default=None, help="cohort folder (default runs/<profile>/samples/<model>)")
    p.add_argument("--conditioning-scale", type=float, default=None,
                   help="highres-controlnet: ControlNet residual scale, >= 0 (0: unconditional; default profile)")


def run(args) -> int:
    from cardiolab.plots import save_cohort_gifs          # here, not at the top: matplotlib would slow every verb's --help
    run_dir = Path(args.run or args.profile.run("dit"))
    name = task_of_run(run_dir)
    task = get_task(name)
    if task.KIND != "generator":
        raise CardiolabError(f"--run {run_dir}: a {name} run ({task.KIND}), not a generator")
    options = sampling_options(name, task.sample_cohort, args)
    # the run's own profile (its training --set kept), with this command's --set on top (e.g. dit.sample_steps)
    sampling = override(run_profile(run_dir), args.set)
    if _takes(task.sample_cohort, "profile"):
        options["profile"] = sampling
    defaults = task.sample_defaults(sampling)
    out = task.sample_cohort(run_dir, n=args.n or defaults["n"], steps=args.steps or defaults["steps"],
                             seed=args.seed, out=Path(args.out or args.profile.samples(name)), **options)
    if not args.no_gifs and detect_layout(out) == "acdc":     # a cine cohort (not highres volumes)
        save_cohort_gifs(out)
    print(out)
    return 0


# option -> (its value when not given, the keyword of sample_cohort it sets)
_OPTIONS = {"guidance": (1.0, "guidance"), "cond": ("random", "cond"), "eta": (0.0, "eta"), "batch": (None, "batch"),
            "device": ("auto", "device"), "mask": (None, "mask"),
            "conditioning_scale": (None, "conditioning_scale")}


def _takes(fn, keyword: str) -> bool:
    params = inspect.signature(fn).parameters
    return keyword in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def sampling_options(name: str, sample_cohort, args) -> dict:
    """The keywords of the generator's sample_cohort that the options set; an option the generator does not take
    is dropped when left at its default and refused (naming it) when given."""
    accepted = inspect.signature(sample_cohort).parameters
    out = {}
    for option, (default, keyword) in _OPTIONS.items():
        value = getattr(args, option)
        if keyword in accepted:
            if value is not None:              # None: the generator's own default
                out[keyword] = value
        elif value != default:
            flag = "--" + option.replace("_", "-")
            raise CardiolabError(f"sample {name}: {flag} is not an option of this model")
    return out
