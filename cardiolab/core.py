"""Small shared pieces: the one exception type, seeding, atomic writes, project paths, the file names of runs
and caches, and the one staleness rule."""
from __future__ import annotations

import contextlib
import ctypes
import glob
import hashlib
import json
import logging
import os
import pickle
import platform
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

log = logging.getLogger(__name__)

# ---- file names of runs and caches: each defined here once ----------------------------------------------
MANIFEST = "manifest.json"      # a prepared cache's index (data.prepare): its subjects, splits and stamp
RUN_CONFIG = "config.json"      # a run's config, precision and machine (engine.Trainer.fit)
SCORES = "scores.json"          # what a trained segmenter, landmark detector or highres VQ-GAN scored
COHORT_FILE = "cohort.json"     # the parameters a phantom cohort (2D or volume) was generated with: its stamp


def is_cache(path: str | os.PathLike) -> bool:
    """Is `path` a prepared cache (a folder holding manifest.json), rather than a cohort folder?"""
    return (Path(path) / MANIFEST).is_file()


class CardiolabError(Exception):
    """The one error cardiolab raises for bad input or config.

    The message names the file (or setting) and the problem; the CLI prints it without a traceback and exits with
    `exit_code`: 2 for bad input (argparse's convention), 1 for a run that failed (a diverged training, a check).
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed python, numpy and torch; on CPU this makes every run repeat to the last digit.

    Returns a torch.Generator seeded the same way, for code that wants its own stream.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        # deterministic mode also fills every new tensor with NaN (a debugging aid for kernels that read memory they
        # never wrote): `fill_` was 5-12 % of CPU training profiles (benchmarks/README.md); off, results are
        # bit-identical. CARDIOLAB_FILL_UNINITIALIZED=1 turns it on (CI runs the numerics tests both ways).
        torch.utils.deterministic.fill_uninitialized_memory = os.environ.get("CARDIOLAB_FILL_UNINITIALIZED") == "1"
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def project_root() -> Path:
    """Where data/ and runs/ live: $CARDIOLAB_ROOT, else the checkout holding this package, else the cwd."""
    if env := os.environ.get("CARDIOLAB_ROOT"):
        return Path(env).resolve()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").exists():
        return checkout
    return Path.cwd()


def to_record(path: str | os.PathLike | None) -> str | None:
    """How a run, latent set, cache manifest or cohort records a path: relative to `project_root()` (posix) when
    it lies under it, else absolute. A root copied or moved elsewhere then still finds its own files; read back
    with `from_record`. None stays None."""
    if path is None:
        return None
    path, root = Path(path).resolve(), project_root()
    try:
        return path.relative_to(root).as_posix() or "."
    except ValueError:
        return str(path)


def from_record(text: str | os.PathLike | None) -> Path | None:
    """The path a record names (`to_record`): a relative one under today's `project_root()`, an absolute one (a
    file outside the root, or a record written before records were relative) as it is. None / "" stay None."""
    if text is None or str(text) == "":
        return None
    path = Path(text)
    return path if path.is_absolute() else project_root() / path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; on success rename it over `path` (file or folder).

    A crash leaves the old `path` (or nothing) in place, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if path.is_dir() and target.is_dir():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_orphans(path: Path) -> None:
    """Remove temporaries of `path` left by a killed writer (".<name>.<pid>.*" whose process is gone)."""
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*"):
        pid = leftover.name[len(path.name) + 2:].split(".")[0].removeprefix("old-")
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    return Path(path)


def write_csv(df, path: str | os.PathLike) -> Path:
    """Write a pandas DataFrame as CSV (no index), atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CardiolabError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise CardiolabError(f"{path}: not valid JSON ({e})") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def fingerprint(obj: Any) -> str:
    """A short stable id of a JSON-able object (e.g. the settings that shaped a run's weights)."""
    text = json.dumps(obj, sort_keys=True, default=_json_default)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when present, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ---- precision ---------------------------------------------------------------------------------
AMP_CHOICES = ("auto", "bf16", "fp16", "off")


def to_device(batch: Any, device: torch.device) -> Any:
    """A batch (tensor, or dicts / lists / tuples of them) moved to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def check_amp(amp: str, field: str = "amp") -> str:
    """`amp` if it is one of AMP_CHOICES, else a CardiolabError naming `field` (e.g. 'vqgan.amp')."""
    if amp not in AMP_CHOICES:
        raise CardiolabError(f"{field}={amp!r}: choose one of {', '.join(AMP_CHOICES)}")
    return amp


# oneDNN's ISA levels in order (ONEDNN_MAX_CPU_ISA caps the kernels a process may use; oneDNN's cpu_isa_traits)
_ONEDNN_ISA = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
               "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16")
_ONEDNN_ALIASES = {"AVX10_1_512": "AVX512_CORE_FP16", "AVX10_1_512_AMX": "AVX512_CORE_AMX",
                   "AVX10_1_512_AMX_FP16": "AVX512_CORE_AMX_FP16"}


def _isa_allows(level: str) -> bool:
    """Does ONEDNN_MAX_CPU_ISA (or its old name DNNL_MAX_CPU_ISA) let this process use `level`? Unset, ALL or
    DEFAULT: yes; an unknown value: no (we cannot tell, so we do not assume the fast path)."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    if cap in ("ALL", "DEFAULT"):
        return True
    cap = _ONEDNN_ALIASES.get(cap, cap)
    return cap in _ONEDNN_ISA and _ONEDNN_ISA.index(cap) >= _ONEDNN_ISA.index(level)


def cpu_features() -> dict:
    """What bf16 hardware this process may use: the CPU's (cpuinfo) capped by the ISA it is allowed.

    ATEN_CPU_CAPABILITY=avx2 caps ATen's own kernels (norms, activations) and ONEDNN_MAX_CPU_ISA oneDNN's
    (matmuls, convolutions); both are how a faster machine emulates a slower one (README, "CPU kinds").
    The probes are private torch helpers, hence getattr: a torch without them counts as "no".
    """
    def has(name: str) -> bool:
        probe = getattr(torch.cpu, name, None)
        return bool(probe()) if probe is not None else False

    aten = torch.backends.cpu.get_cpu_capability()          # "AVX512", "AVX2", "DEFAULT", ...
    avx512 = aten.upper().startswith("AVX512")
    bf16 = avx512 and has("_is_avx512_bf16_supported") and _isa_allows("AVX512_CORE_BF16")
    amx = avx512 and has("_is_amx_tile_supported") and _isa_allows("AVX512_CORE_AMX")
    kind = f"{aten}{' bf16' if bf16 else ''}{' amx' if amx else ''}"
    return {"cpu_capability": aten, "avx512_bf16": bf16, "amx": amx, "cpu_kind": kind}


def cpu_bf16_native() -> bool:
    """Does this process run bf16 matmuls and convolutions in hardware (AVX-512 BF16 or AMX, and allowed to)?

    Elsewhere (e.g. AVX2 only, or a process capped to it) oneDNN emulates bf16: measured 15-50x slower than fp32.
    Native is necessary, not sufficient: the engine also checks each model's first bf16 step (`bf16_verdict`).
    """
    f = cpu_features()
    return f["avx512_bf16"] or f["amx"]


def explain_amp(amp: str, device: torch.device | str, field: str = "amp") -> tuple[str, str]:
    """The precision a run starts with ('bf16' | 'fp16' | 'off') and why. Explicit values pass through; 'auto'
    picks bf16 where the device runs it natively (a CUDA GPU with bf16, a CPU with AVX-512 BF16 / AMX that the
    process may use), else off. On a CPU the engine then measures the model's first step (`bf16_verdict`).

    auto never picks fp16: it needs loss scaling and can overflow, so it stays an explicit choice.
    """
    if check_amp(amp, field) != "auto":
        return amp, f"{field}={amp} set explicitly"
    device = torch.device(device)
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ("bf16", "auto: the GPU runs bf16 natively") if ok else ("off", "auto: the GPU has no bf16")
    if device.type == "cpu":
        kind = cpu_features()["cpu_kind"]
        if cpu_bf16_native():
            return "bf16", f"auto: CPU {kind} runs bf16 natively"
        return "off", f"auto: CPU {kind} would emulate bf16 (15-50x slower than fp32)"
    return "off", f"auto: no bf16 rule for {device.type}"


def resolve_amp(amp: str, device: torch.device | str, field: str = "amp") -> str:
    """The precision of `explain_amp`, without the reason."""
    return explain_amp(amp, device, field)[0]


@dataclass
class PassResult:
    """One training step of a model without its update, as the engine's precision check measures it."""
    losses: list[float]            # the step's losses (step_fn's keys with "loss" in them)
    grads: list[torch.Tensor]      # per optimizer: every gradient, flattened, in fp32
    seconds: float


# Measured at smoke and tiny shapes (benchmarks/README.md, "CPU kinds"): where bf16 is right, the first step's loss
# agrees with fp32 to <= 2e-4 and the gradients to cosine 1.000 (VQ-GAN, DiTs, ddpm, mask generator); the broken
# Conv3d kernel gives cosine 0.000, inf or NaN. The bounds sit far from both.
BF16_LOSS_RTOL = 0.05
BF16_GRAD_COS = 0.9
BF16_SLOWER = 1.1              # timing noise of one step on a busy machine; real gains or losses are >= 1.3x


def bf16_verdict(fp32: list[PassResult], bf16: list[PassResult]) -> tuple[str, str]:
    """('bf16' | 'fp32', reason): bf16 where every pass is finite, agrees with fp32 and is not slower.

    fp32, bf16: repeated passes of the same step (same weights, batch and random draws); timings are the fastest.
    """
    def cos(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.nn.functional.cosine_similarity(a, b, dim=0)) if a.numel() and a.any() and b.any() else 1.0

    ref, loss_err, grad_cos = fp32[0], 0.0, 1.0
    for run in bf16:
        if not all(map(np.isfinite, run.losses)) or not all(torch.isfinite(g).all() for g in run.grads):
            return "fp32", "auto: bf16 gave a non-finite loss or gradient on this CPU for this model (fp32 kept)"
        loss_err = max([loss_err, *(abs(a - b) / max(abs(b), 1e-3) for a, b in zip(run.losses, ref.losses))])
        grad_cos = min([grad_cos, *(cos(a, b) for a, b in zip(run.grads, ref.grads))])
    agree = f"loss rel. error {loss_err:.2g}, gradient cosine {grad_cos:.3f}"
    if loss_err > BF16_LOSS_RTOL or grad_cos < BF16_GRAD_COS:
        return "fp32", f"auto: bf16 disagrees with fp32 on this CPU for this model ({agree}; fp32 kept)"
    t32, t16 = min(r.seconds for r in fp32), min(r.seconds for r in bf16)
    if t16 > BF16_SLOWER * t32:
        return "fp32", f"auto: bf16 is slower than fp32 on this CPU for this model ({t16:.3g} vs {t32:.3g} s/step; {agree})"
    return "bf16", f"auto: bf16 matches fp32 on this CPU for this model and is not slower ({t16:.3g} vs {t32:.3g} s/step; {agree})"


@contextlib.contextmanager
def poisoned_heap() -> Iterator[None]:
    """Inside, glibc fills every malloc'd block with 0xFE bytes (float -1.7e38; mallopt M_PERTURB): a kernel that
    reads memory it never wrote returns inf or NaN instead of whatever the heap held (often a plausible number).

    Elsewhere than glibc (macOS) it only leaves NaN in freed memory, a weaker net.
    """
    libc = _glibc()
    if libc is None:
        junk = [torch.full((n,), float("nan")) for n in (1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 22)]
        del junk
        yield
        return
    libc.mallopt(_M_PERTURB, 1)
    try:
        yield
    finally:
        libc.mallopt(_M_PERTURB, 0)


_M_PERTURB = -6     # glibc malloc.h


def _glibc() -> Any:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def precision_name(amp: str) -> str:
    """How records (config.json, metrics.jsonl, bench and timing JSON) name a resolved amp: 'off' is fp32."""
    return "fp32" if amp == "off" else amp


def machine_info(device: torch.device | str = "cpu") -> dict:
    """What a timing or a run's precision depends on: CPU capability, native bf16, GPU name, torch version."""
    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    f = cpu_features()
    return {"cpu_capability": f["cpu_capability"], "cpu_kind": f["cpu_kind"],
            "bf16_native": bool(torch.cuda.is_bf16_supported()) if gpu else f["avx512_bf16"] or f["amx"],
            "gpu": gpu, "torch": torch.__version__}


# ---- the one staleness rule ----------------------------------------------------------------------
_ABSENT = "(absent)"


def stale(recorded: dict | None, wanted: dict) -> str:
    """The one staleness rule for every artifact (runs, caches, phantoms, latents, sample cohorts): '' when the
    stamp an artifact recorded holds every entry of `wanted` (what it would be built from now) with the same
    value, compared as JSON (tuples = lists); else one line saying what changed ("missing": no stamp at all)."""
    if recorded is None:
        return "missing"
    have, want = _as_json({k: recorded.get(k, _ABSENT) for k in wanted}), _as_json(wanted)
    for key in want:
        if diff := _difference(have[key], want[key], key):
            return diff
    return ""


def up_to_date(what: str | os.PathLike, recorded: dict | None, wanted: dict) -> bool:
    """`stale` as a yes/no; a stale artifact is logged with what changed (it is about to be rebuilt)."""
    why = stale(recorded, wanted)
    if why:
        log.info("%s: %s", what, "not built yet, building" if why == "missing" else f"stale ({why}), rebuilding")
    return not why


def read_stamp(path: str | os.PathLike) -> dict | None:
    """The stamp an artifact recorded: the JSON object (or, for a .pt file, the torch dict) at `path`; None when
    it is missing or unreadable, so that the artifact is rebuilt rather than trusted."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        obj = (torch.load(path, map_location="cpu", weights_only=True) if path.suffix == ".pt"
               else json.loads(path.read_text()))
    except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        log.warning("%s: unreadable (%s), treated as stale", path, type(e).__name__)
        return None
    return obj if isinstance(obj, dict) else None


def _as_json(obj: Any) -> Any:
    """obj as JSON records it: tuples as lists, paths as strings."""
    return json.loads(json.dumps(obj, default=_json_default))


def _difference(have: Any, want: Any, where: str) -> str:
    """'' when equal, else the first differing entry as 'where: old -> new'."""
    if isinstance(have, dict) and isinstance(want, dict):
        for key in sorted(set(have) | set(want)):
            if diff := _difference(have.get(key, _ABSENT), want.get(key, _ABSENT), f"{where}.{key}"):
                return diff
        return ""
    if have == want:
        return ""
    def short(v: Any) -> str:
        text = v if v == _ABSENT else json.dumps(v)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"{where}: {short(have)} -> {short(want)}"
