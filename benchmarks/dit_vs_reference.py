"""Training throughput of cardiolab's DiT4D against the reference CardioDiT DiT4D, side by side in one process.

    git clone https://github.com/Cardio-AI/cardiodit .ref/cardiodit     # git-ignored, never committed
    OMP_NUM_THREADS=1 python benchmarks/dit_vs_reference.py --ref-path .ref/cardiodit --json out.json

Both models get the same configuration, the same latents and the same training step (noise, forward,
v-prediction smooth-L1 loss, backward, grad clip, AdamW). The reference runs as its own trainer runs it on
a CPU: fp32, default (foreach) AdamW. Steps of all variants are interleaved round by round, so load from
other processes on a shared machine hits each variant alike; each variant's median step time is reported.
The reference imports `timm` only for a 2-layer MLP; when timm is absent an equivalent stand-in is used.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import types
from pathlib import Path

import torch
from torch import nn

from cardiolab.bench.speed import DiTBench, _device_name, build_dit, dumps, train_step_fn
from cardiolab.core import CardiolabError, machine_info, precision_name, resolve_amp, seed_everything


class _Mlp(nn.Module):
    """Stand-in for timm.models.vision_transformer.Mlp as the reference calls it: fc1, GELU, fc2."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.0, **_):
        super().__init__()
        hidden_features, out_features = hidden_features or in_features, out_features or in_features
        self.fc1, self.act, self.fc2 = nn.Linear(in_features, hidden_features), act_layer(), nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def import_reference(ref_path: Path):
    """The reference repo's DiT4D class (src/models/dit.py), importable without timm installed."""
    if not (ref_path / "src" / "models" / "dit.py").exists():
        raise CardiolabError(f"{ref_path}: no src/models/dit.py (clone github.com/Cardio-AI/cardiodit there)")
    try:
        import timm.models.vision_transformer  # noqa: F401
    except ImportError:
        vt = types.ModuleType("timm.models.vision_transformer")
        vt.Mlp = _Mlp
        for name, mod in {"timm": types.ModuleType("timm"), "timm.models": types.ModuleType("timm.models"),
                          "timm.models.vision_transformer": vt}.items():
            sys.modules.setdefault(name, mod)
    sys.path.insert(0, str(ref_path.resolve()))
    from src.models.dit import DiT4D as RefDiT4D
    return RefDiT4D


def build_reference(cls, b: DiTBench) -> nn.Module:
    return cls(input_size=b.input_size, patch_size=b.patch, in_channels=b.channels, hidden_size=b.hidden,
               depth=b.depth, num_heads=b.heads, mlp_ratio=4.0, class_dropout_prob=0.0, num_classes=0,
               learn_sigma=False, flash_attention=True)


def main(args) -> dict:
    torch.set_num_threads(args.threads)
    b = DiTBench(input_size=tuple(args.input_size), patch=tuple(args.patch), channels=args.channels,
                 hidden=args.hidden, depth=args.depth, heads=args.heads, batch=args.batch, device="cpu")
    ref_cls = import_reference(Path(args.ref_path))
    seed_everything(0)
    variants = {  # name -> (model, fused AdamW, bf16 autocast)
        "reference fp32": (build_reference(ref_cls, b), False, False),
        "cardiolab fp32": (build_dit(b), True, False),
        "cardiolab bf16": (build_dit(b), True, True),
    }
    if args.ref_bf16:
        variants["reference bf16"] = (build_reference(ref_cls, b), False, True)
    if args.compile:
        variants["cardiolab bf16+compile"] = (build_dit(DiTBench(**{**b.__dict__, "compile": True})), True, True)
    params = {k: sum(p.numel() for p in m.parameters()) for k, (m, _, _) in variants.items()}
    steps = {k: train_step_fn(m, b, fused_adamw=f, bf16=bf) for k, (m, f, bf) in variants.items()}
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(args.warmup + args.rounds):
        for k, step in steps.items():
            dt = step()
            if r >= args.warmup:
                times[k].append(dt)
        print(f"round {r}: " + ", ".join(f"{k} {times[k][-1]:.3f}s" for k in steps if times[k]), file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = med["reference fp32"]
    return {"device": _device_name(torch.device("cpu")), "threads": args.threads, "torch": torch.__version__,
            "machine": machine_info("cpu"),
            # what `bench dit` and training use by default here: "cardiolab bf16" or "cardiolab fp32" is that row
            "default_precision": precision_name(resolve_amp("auto", "cpu")),
            "config": b.__dict__, "rounds": args.rounds, "params": params,
            "step_s": med, "samples_per_s": {k: b.batch / v for k, v in med.items()},
            "speedup_vs_reference_fp32": {k: ref / v for k, v in med.items()}, "step_s_all": times}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref-path", default=".ref/cardiodit")
    p.add_argument("--input-size", type=int, nargs=4, default=[4, 32, 32, 8], help="latent D H W T")
    p.add_argument("--patch", type=int, nargs=4, default=[1, 4, 4, 2])
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=8, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids OpenMP stalls on a busy machine)")
    p.add_argument("--ref-bf16", action="store_true", help="also time the reference under bf16 autocast")
    p.add_argument("--compile", action="store_true", help="also time cardiolab with torch.compile'd blocks")
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


if __name__ == "__main__":
    a = parse_args()
    result = main(a)
    text = dumps(result)
    print(text)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(text + "\n")
