"""Small shared pieces: the one exception type, seeding, atomic writes, project paths."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch


class CardiolabError(Exception):
    """The one error cardiolab raises for bad input or config.

    The message names the file (or setting) and the problem; the CLI prints it without a traceback.
    """


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
        # never wrote): `fill_` was 5-12 % of CPU training profiles (benchmarks/README.md); off, results are bit-identical
        torch.utils.deterministic.fill_uninitialized_memory = False
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


def check_amp(amp: str, field: str = "amp") -> str:
    """`amp` if it is one of AMP_CHOICES, else a CardiolabError naming `field` (e.g. 'vqgan.amp')."""
    if amp not in AMP_CHOICES:
        raise CardiolabError(f"{field}={amp!r}: choose one of {', '.join(AMP_CHOICES)}")
    return amp


def cpu_bf16_native() -> bool:
    """Does this CPU run bf16 matmuls in hardware (AVX-512 BF16 or AMX)?

    Elsewhere (e.g. AVX2 only) oneDNN emulates bf16: measured 50x slower than fp32, not 1.3x faster.
    The probes are private torch helpers, hence getattr: a torch without them counts as "no".
    """
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(bool(probe()) for probe in probes if probe is not None)


def resolve_amp(amp: str, device: torch.device | str, field: str = "amp") -> str:
    """The precision a run uses: 'bf16' | 'fp16' | 'off'. Explicit values pass through; 'auto' picks
    bf16 where the device runs it natively (a CUDA GPU with bf16, a CPU with AVX-512 BF16 / AMX), else off.

    auto never picks fp16: it needs loss scaling and can overflow, so it stays an explicit choice.
    """
    if check_amp(amp, field) != "auto":
        return amp
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "off"
    if device.type == "cpu":
        return "bf16" if cpu_bf16_native() else "off"
    return "off"


def precision_name(amp: str) -> str:
    """How records (config.json, metrics.jsonl, bench and timing JSON) name a resolved amp: 'off' is fp32."""
    return "fp32" if amp == "off" else amp


def machine_info(device: torch.device | str = "cpu") -> dict:
    """What a timing or a run's precision depends on: CPU capability, native bf16, GPU name, torch version."""
    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_native": bool(torch.cuda.is_bf16_supported()) if gpu else cpu_bf16_native(),
            "gpu": gpu, "torch": torch.__version__}
