"""Attribute control of a conditional generator: sample per conditioned group, measure function per group.

A DiT conditioned on the ACDC group should make DCM hearts with a lower EF than NOR, HCM hearts with more LV
mass and ARV hearts with a lower RV EF (arXiv 2407.16405 reports that a tighter epsilon weakens this
control). `controllability` samples n studies per group from a generator run, the group code fixed and the
other attributes drawn from the run's public training rows (`train_cond`), segments every frame with the
profile's segmenter (`evaluation.function.function_table`) and returns one row per group.
`expected_orderings` turns that table into the three checks above.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from cardiolab.core import RUN_CONFIG, CardiolabError, read_json
from cardiolab.data import attributes
from cardiolab.evaluation.function import function_table
from cardiolab.profiles import Profile
from cardiolab.tasks import get_task, segmenter, task_of_run

log = logging.getLogger(__name__)

GROUPS = ("NOR", "DCM", "HCM", "ARV")       # the groups whose function the checks compare
MEASURES = ("EF", "LV_mass", "RV_EF")
# (name, group, measure, sign): the group's mean should differ from NOR's in this direction.
ORDERINGS = (("DCM EF < NOR EF", "DCM", "EF", -1), ("HCM LV mass > NOR LV mass", "HCM", "LV_mass", +1),
             ("ARV RV EF < NOR RV EF", "ARV", "RV_EF", -1))


def group_codes(conf: dict, group: str, n: int, seed: int = 0) -> torch.Tensor:
    """(n, A) attribute codes with the group fixed; the other attributes are rows of the run's training
    attributes (`train_cond`, public rows for dit-dp) drawn with replacement, else 'unknown'."""
    field = next(i for i, f in enumerate(attributes.FIELDS) if f.name == "group")
    classes = attributes.FIELDS[field].classes
    if group not in classes[:-1]:
        raise CardiolabError(f"group {group!r}: not one of {', '.join(classes[:-1])}")
    g = torch.Generator().manual_seed(seed)
    table = conf.get("train_cond")
    if table:
        rows = torch.tensor(table, dtype=torch.long)
        codes = rows[torch.randint(0, rows.shape[0], (n,), generator=g)].clone()
    else:
        codes = torch.tensor([f.unknown for f in attributes.FIELDS], dtype=torch.long).repeat(n, 1)
    codes[:, field] = classes.index(group)
    return codes


def groups_dir(profile: Profile, run_dir: str | os.PathLike) -> Path:
    """Where `controllability` writes a run's per-group cohorts by default: runs/<profile>/eval/<run>-groups."""
    return profile.eval_dir / f"{Path(run_dir).name}-groups"


def controllability(run_dir: str | os.PathLike, profile: Profile,
                    groups: Sequence[str] = GROUPS, n: int = 4, steps: int | None = None, seed: int = 0,
                    guidance: float = 1.0, seg_model=None, out: str | os.PathLike | None = None) -> pd.DataFrame:
    """Sample n studies per conditioned group from a generator run and measure them with the segmenter.

    run_dir: a conditional latent-generator run (dit, dit-dp: config.json with `task` and cond_cardinalities).
    out: where the per-group cohorts go (default runs/<profile>/eval/<run>-groups/<group>: not under samples/,
    which holds one cohort per generator for evaluate, report and the audits).
    Returns one row per group: group, n, then mean and std of each of MEASURES (EF in %, LV mass in g, RV EF
    in %), NaN where the segmenter found no heart.
    """
    run_dir = Path(run_dir)
    conf = read_json(run_dir / RUN_CONFIG)
    if not conf.get("dit", {}).get("cond_cardinalities"):
        raise CardiolabError(f"{run_dir}: an unconditional model; controllability needs attribute conditioning")
    task = get_task(task_of_run(run_dir))
    steps = steps or task.sample_defaults(profile)["steps"]
    seg_model = seg_model if seg_model is not None else segmenter.ensure_model(profile)
    out = Path(out) if out is not None else groups_dir(profile, run_dir)
    rows = []
    for i, group in enumerate(groups):
        codes = group_codes(conf, group, n, seed + i)
        cohort = task.sample_cohort(run_dir, n, steps, seed + i, out / group, cond=codes, guidance=guidance)
        table = function_table(cohort, seg_model, profile)
        row = {"group": group, "n": len(table)}
        for m in MEASURES:
            values = table[m].astype(float)
            row[f"{m}_mean"], row[f"{m}_std"] = float(values.mean()), float(values.std(ddof=0))
        rows.append(row)
        log.info("controllability %s: %s", group, {k: round(v, 3) for k, v in row.items() if isinstance(v, float)})
    return pd.DataFrame(rows)


def expected_orderings(table: pd.DataFrame) -> pd.DataFrame:
    """The three checks of ORDERINGS on a `controllability` table: check, group, measure, group mean, NOR mean,
    holds (True/False; None when a group is missing or unmeasured)."""
    means = table.set_index("group")
    rows = []
    for name, group, measure, sign in ORDERINGS:
        a = means[f"{measure}_mean"].get(group, np.nan)
        b = means[f"{measure}_mean"].get("NOR", np.nan)
        holds = None if np.isnan(a) or np.isnan(b) else bool(sign * (a - b) > 0)
        rows.append({"check": name, "group": group, "measure": measure, "group_mean": a, "NOR_mean": b,
                     "holds": holds})
    return pd.DataFrame(rows)
