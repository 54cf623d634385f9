"""`python -m cardiolab bench dit|dit-sample`: time a DiT training step or DDIM sampling (see benchmarks/README.md)."""
from __future__ import annotations

import logging

from cardiolab.core import CardiolabError, atomic_path

HELP = "benchmark the 4D DiT: training step (dit) or DDIM sampling (dit-sample); writes JSON"

log = logging.getLogger(__name__)


def _ints(text: str, n: int, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n or min(values) < 1:
        raise CardiolabError(f"--{name}: expected {n} positive comma-separated integers, got {text!r}")
    return values


def add_arguments(p) -> None:
    p.add_argument("what", choices=["dit", "dit-sample"], help="dit: training step; dit-sample: seconds per sample")
    p.add_argument("--input-size", default="4,32,32,8", help="latent D,H,W,T")
    p.add_argument("--patch", default="1,4,4,2", help="patch D,H,W,T")
    p.add_argument("--channels", type=int, default=8, help="latent channels C_z")
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=5, help="timed training steps (dit) or DDIM steps (dit-sample)")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    p.add_argument("--compile", action="store_true", help="torch.compile each block")
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing per block")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: what training would pick on this machine (bf16 only where native); fp32; bf16 autocast")
    p.add_argument("--bf16", dest="precision", action="store_const", const="bf16", help="alias of --precision bf16")
    p.add_argument("--no-fused-adamw", action="store_true", help="foreach AdamW instead of the fused kernel")
    p.add_argument("--device", default="auto")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    p.add_argument("--json", default=None, help="write the result here (also printed)")


def run(args) -> int:
    from cardiolab.bench import DiTBench, bench_dit, bench_dit_sample, dumps, in_fresh_process

    b = DiTBench(input_size=_ints(args.input_size, 4, "input-size"), patch=_ints(args.patch, 4, "patch"),
                 channels=args.channels, hidden=args.hidden, depth=args.depth, heads=args.heads, batch=args.batch,
                 steps=args.steps if args.what == "dit" else 1, warmup=args.warmup, compile=args.compile,
                 checkpointing=args.checkpointing, precision=args.precision, fused_adamw=not args.no_fused_adamw,
                 device=args.device)
    if args.what == "dit":
        result = in_fresh_process(bench_dit, b, timeout=args.timeout)
    else:
        result = in_fresh_process(bench_dit_sample, b, args.steps, 1, timeout=args.timeout)
    text = dumps(result)
    print(text)
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(text + "\n")
    return 0
