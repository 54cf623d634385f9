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
