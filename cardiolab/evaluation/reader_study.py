"""A blinded reader study: real and synthetic cases shuffled under neutral ids, a hidden key, a score sheet.

MedLoRD's main evidence is a radiologist reading; FID alone misleads. `export` copies the image of every real
and synthetic subject (cine or whole-heart volume cohorts: any registered layout) into OUT/cases/caseNNN/
as caseNNN_<image suffix>, in an order drawn from `seed`, and writes

    OUT/score_sheet.csv   case, realism (1-5: 5 = indistinguishable from a real scan), synthetic (yes/no), notes
    OUT/.key.json         case -> {"source": real|synthetic, "id"}; hidden: give readers only cases/ and the sheet

Masks, labels and metadata are left out (a mask or Info.cfg would give the source away). `score` reads a filled
sheet with its key and reports mean realism per source, the readers' accuracy at telling synthetic from real
(0.5 = chance) with a two-sided binomial test, and sensitivity / specificity.
"""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from cardiolab.core import CardiolabError, atomic_path, read_json, write_json
from cardiolab.io.layouts import LAYOUTS, detect_layout, get_layout

KEY = ".key.json"
SHEET = "score_sheet.csv"
COLUMNS = ("case", "realism", "synthetic", "notes")
# The image file of a subject folder per layout, by suffix after the subject id (M&Ms-2 names its cine _SA_CINE).
IMAGE_SUFFIXES = {"acdc": ("_4d.nii.gz",), "mnms": ("_sa.nii.gz", "_SA_CINE.nii.gz"), "volume": ("_image.nii.gz",)}


def _images(root: Path) -> tuple[str, list[tuple[str, Path, str]]]:
    """(layout, [(subject id, image path, suffix)]) of a cohort folder."""
    if not root.is_dir():
        raise CardiolabError(f"{root}: not a folder")
    layout = detect_layout(root)
    folders, problems = get_layout(layout).find_subjects(root)
    if not folders:
        raise CardiolabError(f"{root}: no subject folders ({', '.join(LAYOUTS)} layouts)")
    out = []
    for folder in folders:
        found = [(folder / f"{folder.name}{s}", s) for s in IMAGE_SUFFIXES[layout] if (folder / f"{folder.name}{s}").exists()]
        if not found:
            raise CardiolabError(f"{folder}: no image file ({' or '.join(IMAGE_SUFFIXES[layout])})")
        out.append((folder.name, *found[0]))
    return layout, out


def export(real: str | os.PathLike, synthetic: str | os.PathLike, out: str | os.PathLike, seed: int = 0,
           n: int | None = None) -> Path:
    """Write the blinded study to `out` (atomically; refuses an existing folder); returns `out`.

    n: at most this many cases per source (the first n subjects by id); None: all.
    """
    out = Path(out)
    if out.exists():
        raise CardiolabError(f"--out {out}: already exists (a reader study is exported once; pick a new folder)")
    real_layout, real_cases = _images(Path(real))
    synth_layout, synth_cases = _images(Path(synthetic))
    if real_layout != synth_layout:
        raise CardiolabError(f"--real {real} is a {real_layout} cohort, --synthetic {synthetic} a {synth_layout} one: "
                             "readers would tell them apart by format")
    if n is not None:
        real_cases, synth_cases = real_cases[:n], synth_cases[:n]
    cases = [("real", *c) for c in real_cases] + [("synthetic", *c) for c in synth_cases]
    order = np.random.default_rng(seed).permutation(len(cases))
    key = {}
    with atomic_path(out) as tmp:
        (tmp / "cases").mkdir(parents=True)
        for k, i in enumerate(order):
            source, sid, path, suffix = cases[i]
            case = f"case{k + 1:03d}"
            (tmp / "cases" / case).mkdir()
            shutil.copyfile(path, tmp / "cases" / case / f"{case}{suffix}")
            key[case] = {"source": source, "id": sid}
        with open(tmp / SHEET, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            writer.writerows([case, "", "", ""] for case in key)
        write_json(tmp / KEY, {"real": str(real), "synthetic": str(synthetic), "seed": seed, "cases": key})
    return out


def score(sheet: str | os.PathLike, key: str | os.PathLike | None = None) -> dict:
    """Score a filled sheet against its key (default: .key.json beside the sheet); CardiolabError naming bad rows."""
    sheet = Path(sheet)
    key_path = Path(key) if key else sheet.parent / KEY
    cases = read_json(key_path)["cases"]
    try:
        with open(sheet, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise CardiolabError(f"{sheet}: file not found") from None
    realism = {"real": [], "synthetic": []}
    guesses = []                                           # (truly synthetic, guessed synthetic)
    for line, row in enumerate(rows, start=2):
        case = (row.get("case") or "").strip()
        if case not in cases:
            raise CardiolabError(f"{sheet}:{line}: unknown case {case!r}")
        source = cases[case]["source"]
        if (text := (row.get("realism") or "").strip()):
            try:
                value = int(text)
            except ValueError:
                value = 0
            if not 1 <= value <= 5:
                raise CardiolabError(f"{sheet}:{line}: realism must be 1-5, got {text!r}")
            realism[source].append(value)
        if (text := (row.get("synthetic") or "").strip().lower()):
            if text not in ("yes", "no", "y", "n", "1", "0"):
                raise CardiolabError(f"{sheet}:{line}: synthetic must be yes or no, got {text!r}")
            guesses.append((source == "synthetic", text in ("yes", "y", "1")))
    if not any(realism.values()) and not guesses:
        raise CardiolabError(f"{sheet}: no scores filled in")
    correct = sum(t == g for t, g in guesses)
    synth = [g for t, g in guesses if t]
    real = [g for t, g in guesses if not t]
    return {
        "n_cases": len(cases), "n_realism": {k: len(v) for k, v in realism.items()},
        "realism_mean": {k: float(np.mean(v)) if v else float("nan") for k, v in realism.items()},
        "n_guesses": len(guesses),
        "accuracy": correct / len(guesses) if guesses else float("nan"),
        "p_value_vs_chance": float(binomtest(correct, len(guesses), 0.5).pvalue) if guesses else float("nan"),
        "sensitivity": float(np.mean(synth)) if synth else float("nan"),          # synthetic called synthetic
        "specificity": float(1 - np.mean(real)) if real else float("nan"),         # real called real
    }
