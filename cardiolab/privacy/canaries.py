"""Canaries, subsets and the memorization sweep: what makes a generator memorize, measured on known subjects.

Canaries (Carlini et al. 2019's "secret sharer", adapted as in arXiv 2402.01054): a latents.pt in which k training
subjects appear m times each (duplicated records, for each m asked for) and the `n_outliers` most isolated
training subjects (largest latent distance to their nearest neighbour) appear once, as rare patients do. Train
on it with `train dit --latents DIR/latents.pt`, sample, run `audit copies`; `canary_recall` then says how often
each group is flagged as memorized (a synthetic copy whose nearest training scan is that subject), against the
other training subjects as control. Subsets: latents.pt files keeping the holdout and a seeded fraction of the
training subjects (memorization against data size). Latent records are the dicts of `tasks.vqgan.load_latents`.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cardiolab.core import CardiolabError, read_json, write_json
from cardiolab.tasks.vqgan import save_latents

CANARIES_JSON = "canaries.json"     # {"canaries": [{id, kind, m}], "source": latents.pt, "seed"}
LATENTS = "latents.pt"


def _train_index(record: dict) -> list[int]:
    splits = dict(record["splits"])
    return [i for i, s in enumerate(record["ids"]) if splits.get(s) != "holdout"]


def _check_record(record: dict, name: str = "latents.pt") -> None:
    missing = [k for k in ("latents", "cond", "ids", "splits") if k not in record]
    if missing:
        raise CardiolabError(f"{name}: missing key(s) {', '.join(missing)}")


def make_canaries(record: dict, k: int = 2, copies: Sequence[int] = (4,), n_outliers: int = 2, seed: int = 0
                  ) -> tuple[dict, dict]:
    """(a latents record with canaries, the canary record).

    For each m in `copies`, k training subjects (drawn without replacement, seeded) get m - 1 extra records with
    ids '<id>~dup<j>' (split 'public'); the n_outliers training subjects farthest from their nearest training
    neighbour (L2 in latent space) are marked as outlier canaries (kept once). Holdout subjects are untouched.
    """
    _check_record(record)
    if k < 0 or n_outliers < 0 or any(m < 1 for m in copies):
        raise CardiolabError(f"canaries: need k >= 0, n_outliers >= 0 and copies >= 1, got {k}, {n_outliers}, "
                             f"{list(copies)}")
    train = _train_index(record)
    if k * len(copies) + n_outliers > len(train):
        raise CardiolabError(f"canaries: {k} x {len(copies)} duplicated + {n_outliers} outliers exceed the "
                             f"{len(train)} training subjects")
    rng = np.random.default_rng(seed)
    z = record["latents"].float().flatten(1)[train]
    d = torch.cdist(z, z).fill_diagonal_(float("inf")).min(1).values
    outliers = [train[i] for i in torch.argsort(d, descending=True)[:n_outliers].tolist()]
    pool = [i for i in train if i not in outliers]
    drawn = rng.choice(len(pool), k * len(copies), replace=False)
    ids, splits = list(record["ids"]), dict(record["splits"])
    extra_z, extra_c, canaries = [], [], []
    for g, m in enumerate(copies):
        for i in [pool[j] for j in drawn[g * k:(g + 1) * k]]:
            canaries.append({"id": ids[i], "kind": "duplicate", "m": int(m)})
            for j in range(1, m):
                new = f"{ids[i]}~dup{j}"
                ids.append(new)
                splits[new] = "public"
                extra_z.append(record["latents"][i])
                extra_c.append(record["cond"][i])
    canaries += [{"id": record["ids"][i], "kind": "outlier", "m": 1} for i in outliers]
    out = dict(record)
    if extra_z:
        out["latents"] = torch.cat([record["latents"], torch.stack(extra_z)])
        out["cond"] = torch.cat([record["cond"], torch.stack(extra_c)])
    out.update(ids=ids, splits=splits)
    return out, {"canaries": canaries, "seed": seed}


def ensure_canary_dit(profile, latents: str | os.PathLike, out: str | os.PathLike) -> Path:
    """The canary DiT: CardioDiT trained once on `latents` (canaries planted, `write_latents`) for
    copydetector.canary_steps steps (0: dit.steps), a checkpoint kept halfway for the memorization sweep."""
    from cardiolab.tasks import dit    # lazy: tasks.dit is the heavier import, needed only here

    steps = profile.copydetector.canary_steps or profile.dit.steps
    recipe = dataclasses.replace(profile, dit=dataclasses.replace(profile.dit, steps=steps))
    return dit.ensure(recipe, out, latents=latents, keep_every=max(1, steps // 2))


def write_latents(record: dict, out: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write out/latents.pt (weights_only-safe) and, with `extra`, out/canaries.json; returns the latents path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_latents(record, out / LATENTS)        # its VQ-GAN and cache named relative to the root
    if extra is not None:
        write_json(out / CANARIES_JSON, extra)
    return out / LATENTS


def subset(record: dict, fraction: float, seed: int = 0) -> dict:
    """The record with the holdout and a seeded `fraction` (0, 1] of the training subjects (at least one)."""
    _check_record(record)
    if not 0 < fraction <= 1:
        raise CardiolabError(f"--fraction {fraction:g}: must lie in (0, 1]")
    train = _train_index(record)
    n = max(1, round(fraction * len(train)))
    keep_train = set(np.random.default_rng(seed).choice(train, n, replace=False).tolist())
    keep = [i for i in range(len(record["ids"])) if i in keep_train or i not in set(train)]
    ids = [record["ids"][i] for i in keep]
    splits = dict(record["splits"])
    return {**record, "latents": record["latents"][keep], "cond": record["cond"][keep], "ids": ids,
            "splits": {s: splits[s] for s in ids if s in splits}}


def read_canaries(path: str | os.PathLike) -> dict:
    path = Path(path)
    path = path / CANARIES_JSON if path.is_dir() else path
    if not path.is_file():
        raise CardiolabError(f"{path}: file not found (write canaries with `audit canaries`)")
    record = read_json(path)
    if not isinstance(record, dict) or not isinstance(record.get("canaries"), list):
        raise CardiolabError(f"{path}: expected {{'canaries': [{{id, kind, m}}]}}")
    return record


def canary_recall(copies: dict, canaries: dict) -> dict:
    """How often each canary group is flagged memorized in an `audit copies` result.

    A training subject is flagged when at least one synthetic cine is a copy with it as nearest training scan.
    Returns {"by_copies": [{m, n, flagged, recall %}] (duplicates by m), "outliers": {...}, "control": {...}
    (the other training subjects in the audit), "overall": % of all canaries flagged}.
    """
    flagged = {p["nearest_train_id"] for p in copies["per_synthetic"] if p["is_copy"]}
    rows = canaries["canaries"]

    def group(ids: list[str], **kw) -> dict:
        hit = sum(i in flagged for i in ids)
        return {**kw, "n": len(ids), "flagged": hit, "recall": 100.0 * hit / len(ids) if ids else float("nan")}

    ms = sorted({r["m"] for r in rows if r["kind"] == "duplicate"})
    by = [group([r["id"] for r in rows if r["kind"] == "duplicate" and r["m"] == m], m=m) for m in ms]
    canary_ids = {r["id"] for r in rows}
    n_control = int(copies["n_train"]) - len(canary_ids)
    hit = len(flagged - canary_ids)
    control = {"n": n_control, "flagged": hit, "recall": 100.0 * hit / n_control if n_control > 0 else float("nan")}
    return {"by_copies": by, "outliers": group([r["id"] for r in rows if r["kind"] == "outlier"]),
            "control": control, "overall": group(sorted(canary_ids))["recall"]}
