"""Batch reproduction: run every notebook in notebooks/ in order through papermill for one profile.

Executed copies go to runs/<profile>/notebooks/; the sources are never written over.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from cardiolab.core import CardiolabError, project_root, write_json
from cardiolab.profiles import get_profile

log = logging.getLogger(__name__)


def notebook_paths(folder: Path | None = None) -> list[Path]:
    """notebooks/NN_*.ipynb in order."""
    folder = folder or project_root() / "notebooks"
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise CardiolabError(f"{folder}: no notebooks (expected NN_name.ipynb)")
    return paths


def run_notebooks(profile: str, only: list[str] | None = None, seed: int = 0) -> Path:
    """Execute the notebooks headless with `profile=<profile>`; returns the folder of executed copies.

    Writes runs/<profile>/notebooks/timings.json with the wall time of each notebook.
    """
    import papermill as pm

    prof = get_profile(profile)
    out = prof.run_dir / "notebooks"
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    for path in notebook_paths():
        if only and not any(path.name.startswith(o) for o in only):
            continue
        log.info("running %s (profile %s)", path.name, profile)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(path), str(out / path.name), parameters={"profile": profile, "seed": seed},
                                cwd=str(path.parent), progress_bar=False, log_output=False)
        except pm.PapermillExecutionError as e:
            raise CardiolabError(f"{path}: cell {e.exec_count} failed: {e.ename}: {e.evalue} "
                                 f"(executed copy: {out / path.name})") from None
        timings[path.name] = round(time.perf_counter() - t0, 1)
    write_json(out / "timings.json", timings)
    return out
