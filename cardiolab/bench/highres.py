"""Where the memory of high-resolution 3D synthesis goes: `python -m cardiolab bench highres`.

One row per switch setting of one stage, each measured in a fresh process (cardiolab.bench.in_fresh_process):
peak memory growth over the process's state before the models were built (CPU: peak RSS; CUDA:
torch.cuda.max_memory_allocated), split into weights (all parameters), gradients + AdamW state of the
trainable ones (4 + 8 bytes per parameter, fp32), and the rest, which is activations and workspace.

Stages (the pipeline after MedLoRD, at volume size X, Y, Z):
- vqgan: one training step of the VQ-GAN autoencoder on a (1, 1, X, Y, Z) volume (L1 + commitment);
- ldm: one training step of the latent UNet (v-prediction) on the (1, C_z, X/4, Y/4, Z/4) latent;
- controlnet: one training step of the slim ControlNet with the UNet frozen, masks at image resolution;
- sample: a short DDIM chain of the controlled UNet, then code snapping and decoding to the image.
"""
from __future__ import annotations

import dataclasses
import gc
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cardiolab.bench.speed import _device_name, _rss_peak_bytes, in_fresh_process
from cardiolab.core import CardiolabError, pick_device, seed_everything
from cardiolab.diffusion import DiffusionConfig, create_scheduler, diffusion_loss, sample
from cardiolab.models.controlnet_slim import ControlledUNet, ControlNetConfig, SlimControlNet
from cardiolab.models.ldm3d import LatentUNet3D, LDM3DConfig
from cardiolab.models.vqgan import LEVELS, VQGAN, VQConfig, decode_sliding

STAGES = ("vqgan", "ldm", "controlnet", "sample")
VQ_FACTOR = 2 ** LEVELS
# Each stage's switches: the baseline value first, then the alternative a row toggles to.
SWITCHES = {
    "vqgan": {"checkpointing": (False, True), "amp": ("none", "bf16")},
    "ldm": {"checkpointing": (False, True), "amp": ("none", "bf16"), "flash_attention": (True, False)},
    "controlnet": {"checkpointing": (False, True), "amp": ("none", "bf16"), "r": (0.5, 1.0),
                   "initial_stride": (2, 1)},
    "sample": {"sliding": (False, True), "code_chunk": (0, 1024), "amp": ("none", "bf16")},
}
OOM_HINT = {"vqgan": "checkpointing=True, amp=bf16", "ldm": "checkpointing=True, amp=bf16",
            "controlnet": "checkpointing=True, amp=bf16, r=0.5, initial_stride=2",
            "sample": "sliding=True, code_chunk=1024, amp=bf16"}
MB = 2 ** 20


@dataclass(frozen=True)
class HighresBench:
    size: tuple[int, int, int] = (64, 64, 32)             # volume (X, Y, Z)
    stage: str = "vqgan"
    vq_channels: tuple[int, ...] = (32, 64)
    unet_channels: tuple[int, ...] = (32, 64, 64, 128)    # MedLoRD: 64, 128, 256, 512
    res_blocks: int = 1
    code_dim: int = 8
    codes: int = 1024
    sample_steps: int = 2                                 # DDIM steps of the `sample` stage (memory: one is enough)
    switches: tuple[tuple[str, object], ...] = ()         # (name, value) pairs over the stage's baseline
    device: str = "auto"
    seed: int = 0

    @property
    def unet_cfg(self) -> LDM3DConfig:
        ch = tuple(self.unet_channels)
        return LDM3DConfig(in_channels=self.code_dim, channels=ch,
                           attention_levels=tuple(i >= len(ch) - 2 for i in range(len(ch))),
                           res_blocks=self.res_blocks, head_channels=32, norm_groups=math.gcd(32, *ch),
                           flash_attention=bool(self._get("flash_attention", True)),
                           checkpointing=bool(self._get("checkpointing", False)))

    def _get(self, name: str, default):
        """A switch's value: set in `switches`, else the stage's baseline, else `default` (not this stage's)."""
        return dict(self.switches).get(name, SWITCHES[self.stage].get(name, (default,))[0])


def check_size(size: tuple[int, ...], unet_channels: tuple[int, ...]) -> None:
    """Every axis must survive the VQ-GAN's /4 and the UNet's /2^(levels-1) exactly."""
    f = VQ_FACTOR * 2 ** (len(unet_channels) - 1)
    if len(size) != 3 or any(s % f for s in size):
        raise CardiolabError(f"--size {','.join(map(str, size))}: every axis must be divisible by {f} "
                             f"(VQ-GAN /{VQ_FACTOR} x UNet /{f // VQ_FACTOR} for {len(unet_channels)} levels)")


def parse_switches(stage: str, items: list[str], only_known: bool = False) -> tuple[tuple[str, object], ...]:
    """['checkpointing=true', 'r=0.5'] -> typed (name, value) pairs; CardiolabError naming a bad --switch.

    only_known: skip switches that another stage has (for `--stage all`); unknown names still fail.
    """
    known = {name for switches in SWITCHES.values() for name in switches}
    out = []
    for item in items:
        name, _, text = item.partition("=")
        if only_known and name in known and name not in SWITCHES[stage]:
            continue
        if name not in SWITCHES[stage] or not text:
            raise CardiolabError(f"--switch {item!r}: stage {stage} has switches "
                                 f"{', '.join(f'{k}=...' for k in SWITCHES[stage])}")
        kind = type(SWITCHES[stage][name][0])
        try:
            value = {"true": True, "false": False}[text.lower()] if kind is bool else kind(text)
        except (KeyError, ValueError):
            raise CardiolabError(f"--switch {item!r}: expected a {kind.__name__}") from None
        if kind is str and value not in SWITCHES[stage][name]:
            raise CardiolabError(f"--switch {item!r}: choose {' or '.join(SWITCHES[stage][name])}")
        out.append((name, value))
    return tuple(out)


def _count(module: torch.nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def _models(b: HighresBench, device: torch.device):
    vq = VQGAN(VQConfig(channels=tuple(b.vq_channels), code_dim=b.code_dim, codes=b.codes),
               code_chunk=int(b._get("code_chunk", 0)), checkpointing=bool(b._get("checkpointing", False)))
    unet = LatentUNet3D(b.unet_cfg)
    stride = int(b._get("initial_stride", 2))
    embed = (16,) + (32,) * int(round(math.log2(VQ_FACTOR / stride)))
    cn = SlimControlNet(b.unet_cfg, ControlNetConfig(r=float(b._get("r", 0.5)), initial_stride=stride,
                                                     embed_channels=embed, image_downsample=VQ_FACTOR))
    return vq.to(device), unet.to(device), cn.to(device)


def measure(b: HighresBench) -> dict:
    """Run one stage once in this process and account its memory (call through in_fresh_process)."""
    seed_everything(b.seed)
    device = pick_device(b.device)
    base = _rss_peak_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    vq, unet, cn = _models(b, device)
    bf16 = b._get("amp", "none") == "bf16"
    lat = tuple(s // VQ_FACTOR for s in b.size)
    g = torch.Generator().manual_seed(b.seed)
    masks = (torch.rand(1, cn.cfg.mask_channels, *b.size, generator=g) > 0.8).float().to(device)
    if b.stage == "vqgan":
        used, trainable = [vq], vq
    elif b.stage == "ldm":
        used, trainable = [unet], unet
    else:
        model = ControlledUNet(unet, cn)
        used, trainable = [unet, cn] + ([vq] if b.stage == "sample" else []), cn
    weights = sum(_count(m) for m in used)
    t0 = time.perf_counter()
    try:
        if b.stage == "sample":
            optim = 0
            for m in used:
                m.eval()
            sch = create_scheduler(DiffusionConfig(), sampler="ddim")
            with torch.no_grad():
                z = sample(model, sch, (1, b.code_dim, *lat), steps=b.sample_steps, cond=masks, generator=g,
                           device=device, autocast=bf16).to(device)   # sample() returns CPU latents
                z_q = vq.embed(vq.snap(z))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    if b._get("sliding", False):
                        x = decode_sliding(vq, z_q, window=tuple(max(1, s // 2) for s in lat))
                    else:
                        x = vq.decode(z_q)
            out_shape = tuple(x.shape)
        else:
            optim = 3 * _count(trainable, trainable=True)            # grads + AdamW's two moments
            opt = torch.optim.AdamW([p for p in trainable.parameters() if p.requires_grad], lr=1e-4)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                if b.stage == "vqgan":
                    x = torch.rand(1, 1, *b.size, generator=g).to(device) * 2 - 1
                    x_hat, commit, _, _ = vq.train()(x)
                    loss = F.l1_loss(x_hat.float(), x) + commit
                else:
                    x0 = torch.randn(1, b.code_dim, *lat, generator=g).to(device)
                    sch = create_scheduler(DiffusionConfig())
                    net = unet.train() if b.stage == "ldm" else model.train()
                    loss = diffusion_loss(net, sch, x0, cond=masks if b.stage == "controlnet" else None,
                                          generator=g)
            loss.backward()
            opt.step()
            out_shape = ()
    except torch.OutOfMemoryError:
        return {"oom": True, "switches": dict(b.switches), "stage": b.stage, "size": list(b.size)}
    except RuntimeError as e:   # e.g. a kernel's size limit at very large volumes: a row that says so, not a crash
        return {"oom": False, "error": str(e).splitlines()[0][:160], "switches": dict(b.switches),
                "stage": b.stage, "size": list(b.size)}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = _rss_peak_bytes() - base
    return {"stage": b.stage, "switches": dict(b.switches), "size": list(b.size), "oom": False,
            "params": weights, "trainable": _count(trainable, trainable=True) if b.stage != "sample" else 0,
            "weights_bytes": 4 * weights, "grads_optimizer_bytes": 4 * optim,
            "activations_bytes": max(0, peak - 4 * weights - 4 * optim), "peak_bytes": peak,
            "seconds": time.perf_counter() - t0, "output_shape": list(out_shape), "device": _device_name(device)}


def bench_stage(b: HighresBench, timeout: float | None = None) -> list[dict]:
    """The baseline row (b's switches) and one row per switch toggled to its alternative, each in a fresh process."""
    check_size(b.size, b.unet_channels)
    if b.stage not in STAGES:
        raise CardiolabError(f"--stage {b.stage!r}: choose one of {', '.join(STAGES)}")
    fixed = dict(b.switches)
    rows = [_measure_row(b, timeout)]
    for name, (_, alt) in SWITCHES[b.stage].items():
        if name in fixed:
            continue
        rows.append(_measure_row(dataclasses.replace(b, switches=b.switches + ((name, alt),)), timeout))
    return rows


def _measure_row(b: HighresBench, timeout: float | None) -> dict:
    """CPU: a fresh process per row (peak RSS only grows). CUDA: this process, since the allocator's peak
    counter is reset per row and measured over what was allocated before it."""
    if pick_device(b.device).type != "cuda":
        return in_fresh_process(measure, b, timeout=timeout)
    row = measure(b)
    gc.collect()
    torch.cuda.empty_cache()
    return row


def format_table(rows: list[dict]) -> str:
    """A markdown table of one stage's rows (MB), with a line naming switches to try when a row ran out of memory."""
    stage = rows[0]["stage"]
    lines = [f"### {stage} at {'x'.join(map(str, rows[0]['size']))}",
             "| switches | weights MB | grads+AdamW MB | activations MB | peak MB |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        name = ", ".join(f"{k}={v}" for k, v in r["switches"].items()) or "baseline"
        if r["oom"] or r.get("error"):
            lines.append(f"| {name} | {'out of memory' if r['oom'] else 'failed: ' + r['error']} | | | |")
            continue
        lines.append(f"| {name} | {r['weights_bytes'] / MB:.1f} | {r['grads_optimizer_bytes'] / MB:.1f} | "
                     f"{r['activations_bytes'] / MB:.1f} | {r['peak_bytes'] / MB:.1f} |")
    if any(r["oom"] for r in rows):
        lines.append(f"out of memory: try --switch {OOM_HINT[stage]} or a smaller --size")
    return "\n".join(lines)
