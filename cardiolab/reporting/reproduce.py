"""Batch reproduction: run every notebook in notebooks/ in order through papermill for one profile.

Executed copies go to runs/<profile>/notebooks/; the sources are never written over. The wall time of each
stage (the phantom, each notebook) goes to runs/<profile>/timings.json, so that the next `make reproduce` on
this machine says up front how long it will take and the report shows where the time went.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path

from cardiolab.core import (CardiolabError, atomic_path, machine_info, pick_device, precision_name, project_root,
                            read_json, resolve_amp, write_json)
from cardiolab.profiles import DATA_ENV, HOLDOUT_ENV, LAYOUT_ENV, PROFILES, Profile, get_profile, with_data

log = logging.getLogger(__name__)

TIMINGS = "timings.json"   # runs/<profile>/timings.json: {"stages": [{stage, seconds, precision, cpu_capability, gpu}]}

# Wall seconds per stage from named runs, the one home of these numbers: `plan` shows them, labelled "est.", for a
# stage this machine has not run yet (README, "Start here", has the same table). Keys: "phantom" and the notebook's
# two-digit prefix. A profile without an entry (full) prints "? s".
MEASURED = {
    "tiny": {
        "source": "2-core AMD EPYC, AVX512 with AVX-512 BF16 (no AMX), bf16 where amp=auto keeps it (DP-SGD fp32), "
                  "nothing else running: one fresh-clone make reproduce of commit 5430c36 (2026-12-08; its "
                  "runs/tiny/timings.json, benchmarks/README.md)",
        "seconds": {"phantom": 12, "01": 44, "02": 989, "03": 375, "04": 1033, "05": 1041,
                    "06": 625, "07": 902, "08": 729, "09": 541},
    },
    "smoke": {
        "source": "2-core AMD EPYC, AVX512 with AVX-512 BF16 (no AMX), bf16: a fresh-clone make reproduce "
                  "PROFILE=smoke at commit ded0f1c (2026-12-07) at load 7-10 from other jobs (a quiet 2-core Xeon "
                  "ran every stage in 339 s in all at c6f2258)",
        "seconds": {"phantom": 8, "01": 45, "02": 45, "03": 51, "04": 216, "05": 340, "06": 240, "07": 388, "08": 185,
                    "09": 87},
    },
}


def notebook_paths(folder: Path | None = None) -> list[Path]:
    """notebooks/NN_*.ipynb in order."""
    folder = folder or project_root() / "notebooks"
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise CardiolabError(f"{folder}: no notebooks (expected NN_name.ipynb)")
    return paths


def read_timings(run_dir: str | Path) -> list[dict]:
    """The stages recorded in run_dir/timings.json, in run order ([] before the first run)."""
    path = Path(run_dir) / TIMINGS
    return read_json(path).get("stages", []) if path.exists() else []


def record_stage(profile: Profile, stage: str, seconds: float, peak_rss_gib: float | None = None) -> Path:
    """Merge one stage's wall time into runs/<profile>/timings.json (replacing that stage's earlier entry).

    Beside the seconds: the precision amp='auto' resolves to here and the CPU capability, because the same
    stage takes 50x longer on a CPU that emulates bf16 (README, "CPU kinds and precision"); and the peak resident
    memory of the stage's largest process (`PeakMemory`), what a smaller machine needs to know.
    """
    device = pick_device(profile.device)
    machine = machine_info(device)
    entry = {"stage": stage, "seconds": round(float(seconds), 1),
             "precision": precision_name(resolve_amp("auto", device)),
             "cpu_capability": machine["cpu_capability"], "gpu": machine["gpu"]}
    if peak_rss_gib is not None:
        entry["peak_rss_gib"] = round(float(peak_rss_gib), 2)
    stages = [s for s in read_timings(profile.run_dir) if s.get("stage") != stage] + [entry]
    stages.sort(key=lambda s: (s["stage"] != "phantom", s["stage"]))   # run order: phantom, then NN_ notebooks
    return write_json(profile.run_dir / TIMINGS, {"stages": stages})


def estimate(profile: str, stage: str) -> float | None:
    """Seconds a stage took in the run MEASURED names for this profile (phantom, or a notebook by its NN_ prefix)."""
    seconds = MEASURED.get(profile, {}).get("seconds", {})
    return seconds.get(stage if stage == "phantom" else stage[:2])


def plan(profile: Profile, only: list[str] | None = None, data: str | os.PathLike | None = None) -> str:
    """What `make reproduce` will run: each stage's seconds last time on this machine, else MEASURED's estimate.
    data: a real data source (`make reproduce DATA=...`): no phantom stage."""
    last = {s["stage"]: s for s in read_timings(profile.run_dir)}
    names = [p.name for p in notebook_paths() if not only or any(p.name.startswith(o) for o in only)]
    names = ([] if data else ["phantom"]) + names
    lines = [f"stages of profile {profile.name} (seconds last time on this machine; 'est.': another machine's run):"]
    total, estimated = 0.0, False
    for name in names:
        s, guess = last.get(name), estimate(profile.name, name)
        if s:
            total += s["seconds"]
            peak = f", peak {s['peak_rss_gib']:.1f} GiB" if s.get("peak_rss_gib") is not None else ""
            lines.append(f"  {name:<28} {s['seconds']:8.1f} s  ({s['precision']}, {s['cpu_capability']}{peak})")
        elif guess is not None:
            total, estimated = total + guess, True
            lines.append(f"  {name:<28} {guess:8.0f} s  est.")
        else:
            lines.append(f"  {name:<28}        ? s  (not measured)")
    if total:
        lines.append(f"  {'total (known stages)':<28} {total:8.1f} s  (~{total / 60:.0f} min"
                     + (", with estimates)" if estimated else ")"))
    if estimated:
        lines.append(f"  est.: {MEASURED[profile.name]['source']}; another CPU kind, precision or load changes them "
                     "several-fold")
    return "\n".join(lines)


def run_notebooks(profile: str, only: list[str] | None = None, seed: int = 0, data: str | os.PathLike | None = None,
                  layout: str | None = None, holdout_vendor: str | None = None) -> Path:
    """Execute the notebooks headless with `profile=<profile>`; returns the folder of executed copies.

    profile: a profile NAME, as each notebook's parameters cell takes it and resolves it (an entry point, like the
    CLI: a `--set` override could not follow it into the notebooks).

    data, layout: the root's data source (`profiles.with_data`; None: $CARDIOLAB_DATA, else the phantom). Each
    notebook gets it as its `data_dir` / `layout` parameters, and its kernel as $CARDIOLAB_DATA /
    $CARDIOLAB_LAYOUT, so that every profile it looks up reads that source's cache. holdout_vendor (None:
    $CARDIOLAB_HOLDOUT_VENDOR) reaches each kernel as $CARDIOLAB_HOLDOUT_VENDOR, read by the same `with_data`.
    Records each notebook's wall time in runs/<profile>/timings.json as soon as it has run.
    """
    import papermill as pm  # lazy: papermill is a slow import, needed only here

    prof = with_data(get_profile(profile), data, layout, holdout_vendor)
    out = prof.run_dir / "notebooks"
    out.mkdir(parents=True, exist_ok=True)
    parameters = {"profile": profile, "seed": seed}
    env = {}
    if prof.data_source is not None:
        parameters.update(data_dir=str(prof.data_root), layout=prof.data_layout)
        env = {DATA_ENV: str(prof.data_root), LAYOUT_ENV: prof.data_layout}
    env[HOLDOUT_ENV] = ",".join(prof.holdout_vendor)      # "" clears one the shell may have set
    log.info("%s", prof.describe_data())
    for path in notebook_paths():
        if only and not any(path.name.startswith(o) for o in only):
            continue
        log.info("running %s (profile %s)", path.name, profile)
        t0 = time.perf_counter()
        try:
            with _environment(env), PeakMemory() as peak:   # the kernel papermill starts inherits env
                pm.execute_notebook(str(path), str(out / path.name), parameters=parameters,
                                    cwd=str(path.parent), progress_bar=False, log_output=False)
        except pm.PapermillExecutionError as e:
            raise CardiolabError(f"{path}: cell {e.exec_count} failed: {e.ename}: {e.evalue} "
                                 f"(executed copy: {out / path.name})") from None
        record_stage(prof, path.name, time.perf_counter() - t0, peak.gib)
    return out


class PeakMemory:
    """The peak resident memory (GiB) of the largest process under this one (a notebook's kernel and its workers),
    polled from /proc/<pid>/status (VmHWM, the kernel's own high-water mark) every `every` seconds in a thread;
    gib stays None where /proc is missing (not Linux)."""

    def __init__(self, every: float = 2.0):
        self.every, self.gib = every, None
        self._stop, self._thread = threading.Event(), None

    def _poll(self):
        while True:
            for pid in _descendants(os.getpid()):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:                  # it ended between listing and reading
                    continue
                kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
                self.gib = max(self.gib or 0.0, kib / 2**20)
            if self._stop.wait(self.every):
                return

    def __enter__(self):
        if Path("/proc/self/status").exists():
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _descendants(pid: int) -> list[int]:
    """The pids of every process below `pid` (children, their children, ...), from /proc/<pid>/stat."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    below, frontier = [], {pid}
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        below += kids
        frontier = set(kids)
    return below


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    """Set environment variables inside the block, restoring the old values after it."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---- the README's figures -------------------------------------------------------------------------
README_PROFILE = "tiny"       # the README reports the tiny run; smoke figures mean nothing, full ones are rare
KEY_FIGURES = ("dit_real_montage.png", "dit_sample_montage.png", "baselines_montages.png", "vqgan_reconstruction.png",
               "01_volume_curves.png", "evaluator_validation.png", "function_distributions.png", "utility.png")
MAX_FIGURE_BYTES = 2_000_000  # all of docs/figures together: the repository stays small


def publish_figures(run_dir: str | Path, dest: str | Path | None = None) -> list[Path]:
    """Copy KEY_FIGURES of the README profile's run (run_dir/figures) to docs/figures; other runs copy nothing.

    Figures that would take the folder past MAX_FIGURE_BYTES are skipped with a warning. Returns the copies.
    """
    if Path(run_dir).resolve() != PROFILES[README_PROFILE].run_dir.resolve():
        return []
    dest = Path(dest) if dest else project_root() / "docs" / "figures"
    copied, total = [], 0
    for name in KEY_FIGURES:
        src = Path(run_dir) / "figures" / name
        if not src.exists():
            continue
        data = src.read_bytes()
        if total + len(data) > MAX_FIGURE_BYTES:
            log.warning("%s: not copied to %s (the figures there would exceed %d bytes)", src, dest, MAX_FIGURE_BYTES)
            continue
        with atomic_path(dest / name) as tmp:
            tmp.write_bytes(data)
        copied.append(dest / name)
        total += len(data)
    return copied
