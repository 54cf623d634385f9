"""`python -m cardiolab privacy`: DP-SGD accounting (epsilon, sigma) and the check of a run's privacy.json."""
from __future__ import annotations

import json

HELP = "DP-SGD accounting: epsilon, sigma for a target epsilon, check a run's privacy.json"


def _common(p, accountant: bool = True) -> None:
    p.add_argument("--sample-rate", type=float, required=True, help="Poisson sample rate q = expected batch / N")
    p.add_argument("--steps", type=int, required=True, help="optimizer steps")
    p.add_argument("--delta", type=float, required=True, help="target delta (below 1/N)")
    if accountant:
        p.add_argument("--accountant", choices=("prv", "rdp"), default="prv", help="Opacus accountant (default prv)")


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="<action>")
    e = sub.add_parser("epsilon", help="epsilon spent by DP-SGD with these parameters")
    _common(e)
    e.add_argument("--noise-multiplier", type=float, required=True, help="sigma: noise std / max_grad_norm")
    e.add_argument("--json", action="store_true", help='print {"epsilon": ..., "accountant": ..., "delta": ...}')
    s = sub.add_parser("sigma", help="the noise multiplier that reaches a target epsilon")
    s.add_argument("--epsilon", type=float, required=True, help="target epsilon")
    _common(s)
    s.add_argument("--json", action="store_true", help='print {"noise_multiplier": ..., "epsilon": ..., ...}')
    c = sub.add_parser("check", help="recompute RUN/privacy.json's epsilon and cross-check it against the run "
                                     "(checkpoint accountant, state.json steps, q vs batch and N, unique ids); "
                                     "exit 1 naming each field that disagrees")
    c.add_argument("run", help="run folder holding privacy.json (or the file itself)")


def run(args) -> int:
    from cardiolab.dp import accounting  # lazy: CLI start-up

    if args.action == "epsilon":
        eps = accounting.epsilon(args.sample_rate, args.noise_multiplier, args.steps, args.delta, args.accountant)
        if args.json:
            print(json.dumps({"epsilon": eps, "accountant": args.accountant, "delta": args.delta}))
        else:
            print(f"epsilon {eps:.6g} at delta {args.delta:g} ({args.accountant}: q={args.sample_rate:g}, "
                  f"sigma={args.noise_multiplier:g}, steps={args.steps})")
        return 0
    if args.action == "sigma":
        sig = accounting.sigma(args.epsilon, args.sample_rate, args.steps, args.delta, args.accountant)
        if args.json:
            print(json.dumps({"noise_multiplier": sig, "epsilon": args.epsilon, "accountant": args.accountant,
                              "delta": args.delta}))
        else:
            print(f"noise multiplier {sig:.6g} for epsilon {args.epsilon:g} at delta {args.delta:g} "
                  f"({args.accountant}: q={args.sample_rate:g}, steps={args.steps})")
        return 0
    ok, line = accounting.check_privacy_json(args.run)
    print(line)
    return 0 if ok else 1
