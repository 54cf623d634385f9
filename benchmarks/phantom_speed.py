"""Phantom generation speed: seconds and subjects/s for a cohort written to disk (ACDC layout, gzipped NIfTI).

    python benchmarks/phantom_speed.py [--subjects 100] [--size 128 --slices 8 --frames 20] [--workers 1,2] [--out FILE]

Goal: 100 subjects of 128x128x8x20 in < 60 s on 2 CPU cores. Each worker count writes into a fresh temporary
folder (removed afterwards); the JSON (default runs/bench/phantom_speed.json) also records the time to make one
subject in memory (no disk) and the machine, and one line per worker count is printed.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from cardiolab.core import CardiolabError, project_root, write_json
from cardiolab.data.phantom import generate_cohort, make_subject

GOAL_SECONDS = 60.0   # for 100 subjects at 128x128x8x20 on 2 cores


def _cpu_seconds() -> float:
    """CPU time of this process and its finished workers: on a shared machine wall time also counts
    other people's jobs, CPU time does not."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(args: argparse.Namespace) -> dict:
    shape = dict(size=args.size, spacing=args.spacing, slices=args.slices, frames=args.frames)
    t0 = time.perf_counter()
    for i in range(5):
        make_subject(i, seed=0, **shape)
    in_memory = (time.perf_counter() - t0) / 5
    runs = []
    for workers in (int(w) for w in args.workers.split(",")):
        with tempfile.TemporaryDirectory(prefix="phantom-bench-") as tmp:
            t0, cpu0 = time.perf_counter(), _cpu_seconds()
            generate_cohort(Path(tmp) / "cohort", args.subjects, seed=0, workers=workers, **shape)
            seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        runs.append({"workers": workers, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
                     "subjects_per_s": round(args.subjects / seconds, 2), "load_average": os.getloadavg()[0]})
        print(f"phantom: {args.subjects} subjects {args.size}x{args.size}x{args.slices}x{args.frames}, "
              f"{workers} worker(s): {seconds:.1f} s wall ({cpu:.1f} s CPU), {args.subjects / seconds:.2f} "
              f"subjects/s, load average {os.getloadavg()[0]:.1f}")
    result = {"subjects": args.subjects, **shape, "seconds_per_subject_in_memory": round(in_memory, 3),
              "runs": runs, "goal_seconds_100_subjects_2_cores": GOAL_SECONDS,
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "python": platform.python_version(), "omp_threads": os.environ.get("OMP_NUM_THREADS")}}
    out = Path(args.out) if args.out else project_root() / "runs" / "bench" / "phantom_speed.json"
    write_json(out, result)
    print(f"in memory: {in_memory:.3f} s/subject -> {out}")
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=100)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--spacing", type=float, default=1.5)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts to time")
    parser.add_argument("--out", default=None, help="JSON output (default runs/bench/phantom_speed.json)")
    try:
        main(parser.parse_args())
    except CardiolabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
