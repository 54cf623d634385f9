"""`python -m cardiolab bench dit|dit-sample|highres`: time a DiT training step or DDIM sampling, or account the
memory of the high-resolution 3D pipeline per switch (see benchmarks/README.md)."""
from __future__ import annotations

import logging

from cardiolab.core import CardiolabError, atomic_path
from cardiolab.profiles import get_profile

HELP = "benchmarks: DiT training step and sampling, 3D pipeline memory per switch -> JSON"

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
    p.add_argument("what", choices=["dit", "dit-sample", "highres"],
                   help="dit: training step; dit-sample: seconds per sample; highres: memory table per switch")
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
    h = p.add_argument_group("highres")
    h.add_argument("--size", default="64,64,32", help="highres: volume X,Y,Z")
    h.add_argument("--stage", default="all", choices=["vqgan", "ldm", "controlnet", "sample", "all"],
                   help="highres: which stage to measure")
    h.add_argument("--switch", action="append", default=[], metavar="K=V",
                   help="highres: fix a switch for every row (checkpointing, amp, flash_attention, r, "
                        "initial_stride, sliding, code_chunk)")
    h.add_argument("--unet-channels", default=None,
                   help="highres: latent UNet widths (default: the profile's, else 32,64,64,128; "
                        "MedLoRD: 64,128,256,512)")
    h.add_argument("--profile", default=None,
                   help="highres: take the VQ-GAN and UNet widths, codebook and residual blocks from this profile "
                        "(full = MedLoRD's)")


def run(args) -> int:
    if args.what == "highres":
        return _highres(args)
    # lazy: CLI start-up
    from cardiolab.bench.speed import DiTBench, bench_dit, bench_dit_sample, dumps, in_fresh_process

    b = DiTBench(input_size=_ints(args.input_size, 4, "input-size"), patch=_ints(args.patch, 4, "patch"),
                 channels=args.channels, hidden=args.hidden, depth=args.depth, heads=args.heads, batch=args.batch,
                 steps=args.steps if args.what == "dit" else 1, warmup=args.warmup, compile=args.compile,
                 checkpointing=args.checkpointing, precision=args.precision, fused_adamw=not args.no_fused_adamw,
                 device=args.device)
    if args.what == "dit":
        result = in_fresh_process(bench_dit, b, timeout=args.timeout)
    else:
        result = in_fresh_process(bench_dit_sample, b, args.steps, 1, timeout=args.timeout)
    _write(args.json, dumps(result))
    return 0


def _highres(args) -> int:
    # lazy: CLI start-up
    from cardiolab.bench.speed import dumps
    from cardiolab.bench.highres import STAGES, HighresBench, bench_stage, check_size, format_table, parse_switches

    size = _ints(args.size, 3, "size")
    widths = {}
    if args.profile:
        hr = get_profile(args.profile).highres
        widths = dict(vq_channels=tuple(hr.vq_channels), codes=hr.codes, code_dim=hr.code_dim,
                      res_blocks=hr.res_blocks, unet_channels=tuple(hr.unet_channels))
    if args.unet_channels:
        widths["unet_channels"] = _ints(args.unet_channels, len(args.unet_channels.split(",")), "unet-channels")
    channels = widths.get("unet_channels", HighresBench.unet_channels)
    check_size(size, channels)
    stages = STAGES if args.stage == "all" else (args.stage,)
    switches = {stage: parse_switches(stage, args.switch, only_known=args.stage == "all") for stage in stages}
    results = {}
    for stage in stages:
        b = HighresBench(size=size, stage=stage, switches=switches[stage], device=args.device, **widths)
        results[stage] = rows = bench_stage(b, timeout=args.timeout)
        print(format_table(rows) + "\n")
    if args.json:
        _write(args.json, dumps(results), echo=False)
    return 0


def _write(path: str | None, text: str, echo: bool = True) -> None:
    if echo:
        print(text)
    if path:
        with atomic_path(path) as tmp:
            tmp.write_text(text + "\n")
