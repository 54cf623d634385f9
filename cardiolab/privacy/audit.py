"""Audit orchestration: bring cohorts to profile geometry, embed them, run the pure audits, write one JSON each.

Every cohort reaches the embedding through one label-free path, `cardiolab.data.cines.load_cines(label_free=True)`:
a cohort folder, or the cohort a prepared cache was made from (its splits), prepared without ever using a label
(`geometry.label_free_view`), so an image-only copy of a labelled training subject is cropped exactly as its source
and a cine's distance does not depend on which files sit beside it. Training, holdout, calibration, synthetic and
control cohorts all take that path.
Defaults follow what the generators trained on: the training set is every non-holdout subject of the profile's
cache (public + private: the VQ-GAN and the DiT train on both), the reference of unseen real data is the
holdout split. When the training data is a cardiolab phantom, the copy threshold is calibrated on the holdout
split plus `copydetector.calibration` fresh phantoms (seed CALIBRATION_SEED, the source phantom's geometry,
generated once beside it in `<phantom>-calibration`): the phantom is free, and 8 holdout subjects (tiny) cannot
calibrate a 5 % false-positive rate (`privacy.copies.calibrate` needs >= 19). Those phantoms are never the
planted cohort's fresh ones (seed FRESH_SEED) nor training subjects (seed 0).
A planted cohort's non-members are fresh phantoms on phantom data; on a real source (`profile.data_source`) a
phantom's FPR says nothing about patients, so they are held-out patients: the training cache's holdout split cut
in two (`holdout_halves`), one half planted, the other left to calibrate tau. `audit_copies` leaves every planted
holdout subject (the cohort's nonmembers.json) out of its holdout, so no cine both sets tau and is scored by it.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from cardiolab.core import (CardiolabError, atomic_path, from_record, is_cache, read_json, read_stamp, to_record,
                            up_to_date, write_json)
from cardiolab.data.cines import is_phantom, load_cines
from cardiolab.data.datasets import load_manifest
from cardiolab.data.phantom import COHORT_FILE, cohort_params, generate_cohort
from cardiolab.data.prepare import ensure_prepared
from cardiolab.dp.accounting import training_cohort_id
from cardiolab.engine import ensure_run, kept_checkpoints, run_status
from cardiolab.privacy.copies import (DEFAULT_CONFIDENCE, calibrate, check_confidence, check_percentile,
                                      compare_control, detect_copies, distance_summary, planted_scores)
from cardiolab.privacy.embeddings import check_embedding, default_embedding, embedder
from cardiolab.privacy import membership
from cardiolab.privacy.membership import FRESH_SEED, check_dit_run
from cardiolab.privacy.plant import (FAMILIES, NONMEMBERS_JSON, PLANTED_JSON, CopyTransforms, family_transforms,
                                     plant, read_nonmembers, read_planted, write_planted)
from cardiolab.profiles import Profile
from cardiolab.tasks import copy_detector, dit
from cardiolab.tasks import vqgan as vqgan_task     # `vqgan` is the run argument of plant_cohort and audit_families


KIND = "cardiolab-audit-copies"
TRAIN_SPLITS = ("public", "private")
CALIBRATION_SEED = 8      # calibration phantoms: neither training (0) nor the planted / MIA fresh ones (7)
HOLDOUT = "holdout"       # the cache split of unseen patients
MIN_HOLDOUT = 2           # real non-members: one holdout subject to plant, one left to calibrate tau
REAL_HOLDOUT = "real holdout"

log = logging.getLogger(__name__)


def _cines(path: str | os.PathLike | None, profile: Profile, splits: tuple[str, ...] | None):
    """(ids, images (N, D, H, W, T)) of a cohort folder, or of a cache's splits (default: the profile's cache), in
    the label-free comparison geometry (module docstring)."""

    if path is None:
        path = ensure_prepared(profile)
    path = Path(path)
    if not path.exists():
        raise CardiolabError(f"{path}: no such cohort folder or cache")
    if is_cache(path):
        parts = [load_cines(path, profile, s, label_free=True) for s in (splits or (None,))]
    else:
        parts = [load_cines(path, profile, label_free=True)]
    return [i for c in parts for i in c.ids], torch.cat([c.images for c in parts])


def _check_slices(path: Path, profile: Profile) -> None:
    """A cohort folder whose cines have fewer slices than the profile compares is of another geometry: refused
    (bringing it to profile geometry would invent slices). Reads NIfTI headers only."""
    for image in sorted(path.glob("*/*_4d.nii.gz")):
        shape = nib.load(image).shape
        if len(shape) != 4 or shape[2] < profile.data.slices:
            raise CardiolabError(f"{image}: cine of shape {tuple(shape)} (x, y, slices, frames), but profile "
                                 f"{profile.name} compares {profile.data.slices} slices: another geometry")


def _generated(path: Path, profile: Profile, flag: str):
    """(ids, images) of a generated cohort folder (or cache) named by `flag`; refused unless it is a folder of the
    profile's slice count."""
    if not path.is_dir():
        raise CardiolabError(f"{flag} {path}: not a folder")
    if not is_cache(path):
        _check_slices(path, profile)
    return _cines(path, profile, None)


def _same_geometry(name: str, images: torch.Tensor, ref: torch.Tensor, ref_name: str) -> None:
    if images.shape[1:] != ref.shape[1:]:
        raise CardiolabError(f"{name}: cines of shape {tuple(images.shape[1:])} but {ref_name} has "
                             f"{tuple(ref.shape[1:])} (D, H, W, T); bring both to one profile geometry")


def _phantom_source(path: str | os.PathLike | None, profile: Profile) -> Path | None:
    """The phantom cohort folder a training cache (or cohort folder) came from, or None for other data."""
    path = Path(path) if path is not None else profile.cache_dir
    if not is_phantom(path):
        return None
    return Path(load_manifest(path)["source"]["root"]) if is_cache(path) else path


def calibration_phantoms(source: str | os.PathLike, n: int, seed: int = CALIBRATION_SEED) -> Path:
    """`n` fresh phantoms drawn like the phantom cohort `source` (its cohort.json: size, spacing, slices, frames,
    SNR range) with `seed`, in the folder `<source>-calibration` (generated once; regenerated when stale)."""
    source = Path(source)
    meta = read_json(source / COHORT_FILE) if (source / COHORT_FILE).exists() else None
    if not meta:
        raise CardiolabError(f"{source / COHORT_FILE}: missing; cannot draw calibration phantoms like {source}")
    geo = {k: meta[k] for k in ("size", "spacing", "slices", "frames")}
    snr = tuple(meta["snr_range"]) if meta.get("snr_range") else None
    want = dict(cohort_params(n, seed, **geo), **({"snr_range": list(snr)} if snr else {}))
    out = source.parent / f"{source.name}-calibration"
    stamp = out / COHORT_FILE
    if up_to_date(out, read_stamp(stamp), want):
        return out
    with atomic_path(out) as tmp:
        generate_cohort(tmp, n, seed=seed, snr=snr, **geo)
    return out


def calibration_cines(profile: Profile, train: str | os.PathLike | None, n: int | None = None
                      ) -> tuple[list[str], torch.Tensor | None]:
    """The calibration phantoms tau is calibrated on besides the holdout: `n` of them (default
    copydetector.calibration) when the training data is a phantom, none for other data. Returns (ids, images
    (n, D, H, W, T)) at profile geometry, or ([], None)."""
    source = _phantom_source(train, profile)
    n = (profile.copydetector.calibration if source is not None else 0) if n is None else n
    if n < 0:
        raise CardiolabError(f"--calibration: a number of phantoms >= 0, got {n}")
    if n and source is None:
        raise CardiolabError(f"--calibration {n}: the training data ({train or profile.cache_dir}) is not a "
                             "cardiolab phantom, so phantoms are no reference for it; give --calibration 0")
    if not n:
        return [], None
    cal = load_cines(calibration_phantoms(source, n), profile, label_free=True)
    return [f"calibration/{i}" for i in cal.ids], cal.images


def plant_cohort(out: str | os.PathLike, profile: Profile, train: str | os.PathLike | None = None,
                 train_splits: tuple[str, ...] | None = TRAIN_SPLITS, n_copies: int | None = None,
                 n_fresh: int | None = None, seed: int = 0, fresh_seed: int = FRESH_SEED, transforms=None,
                 family: str | None = None, vqgan: str | os.PathLike | None = None) -> dict:
    """Write a planted cohort to `out`: `n_fresh` non-members (default copydetector.fresh; `nonmember_cines`: fresh
    phantoms of seed `fresh_seed`, or on a real source held-out patients) + `n_copies` transformed copies of
    training cines (default: one per training subject), changed by `transforms` (a `privacy.plant.CopyTransforms`;
    default its ranges) or by one `family` (`plant.family_transforms`: a family of `plant.FAMILIES` on every copy,
    or "mixed"). The vqgan family round-trips each copy through the VQ-GAN run `vqgan` (default
    runs/<profile>/vqgan). Returns a summary dict; "nonmembers" says which non-members it holds."""
    if family is not None:
        if transforms is not None:
            raise CardiolabError("audit plant: give transforms or a family, not both")
        transforms = family_transforms(family)
    transforms = transforms or CopyTransforms()
    round_trip = _round_trip(profile, vqgan) if "vqgan" in transforms.families else None
    train_ids, train_images = _cines(train, profile, train_splits)
    n_copies = len(train_ids) if n_copies is None else n_copies
    n_fresh = profile.copydetector.fresh if n_fresh is None else n_fresh
    if n_copies < 0 or n_fresh < 0 or n_copies + n_fresh == 0:
        raise CardiolabError(f"audit plant: --n-copies {n_copies} / --n-fresh {n_fresh}: need >= 0 and a total > 0")
    fresh, nonmembers = nonmember_cines(profile, train, train_ids, n_fresh, fresh_seed)
    fresh = train_images[:0] if fresh is None else fresh
    n_fresh = len(fresh)
    log.info("audit plant: non-members %s", nonmembers["description"])
    # Image-only, like a cohort from another tool: the audit reads every side label-free, so labels would change
    # nothing (the copies are at profile geometry and keep their field of view).
    cohort = plant(train_images, train_ids, fresh, n_copies, seed=seed, cfg=transforms, round_trip=round_trip)
    # One geometry for every planted cine: the training cache's (cines are at profile geometry already).
    cache = Path(train) if train is not None else profile.cache_dir
    records = load_manifest(cache)["subjects"] if is_cache(cache) else []
    d = profile.data                                    # a cohort without a cache: the profile's geometry
    spacing = np.median([r["spacing"] for r in records], axis=0) if records else (d.spacing, d.spacing, 10.0)
    frame_ms = float(np.median([r.get("frame_ms", 0.0) for r in records])) if records else 0.0
    es = int(np.median([r["es"] for r in records])) if records else d.frames // 3
    write_planted(out, cohort, tuple(float(s) for s in spacing), frame_ms, es, nonmembers)
    summary = {"out": str(out), "n_copies": n_copies, "n_fresh": n_fresh, "seed": seed, "fresh_seed": fresh_seed,
               "profile": profile.name, "family": family, "families": list(transforms.families),
               "nonmembers": nonmembers["description"]}
    return summary


def holdout_halves(ids) -> tuple[list[str], list[str]]:
    """A real holdout split cut in two, deterministically: (calibration half, non-member half), every other id in
    sorted order (ids of one group sit together in the stratified split, so each half gets about half of each)."""
    ids = sorted(ids)
    return ids[0::2], ids[1::2]


def nonmember_cines(profile: Profile, train: str | os.PathLike | None, train_ids: list[str], n: int,
                    fresh_seed: int = FRESH_SEED) -> tuple[torch.Tensor | None, dict]:
    """A planted cohort's non-members, label-free at profile geometry (n', D, H, W, T) or None when n = 0, and
    their record (plant.NONMEMBERS_JSON). Phantom data: n fresh phantoms (seed fresh_seed). A real source
    (`profile.data_source`): the first n of the non-member half of the training cache's holdout split
    (`holdout_halves`; n capped at its size), so the FPR is measured on patients, never on phantoms."""
    if not n:
        return None, {"kind": "none", "n": 0, "description": "none"}
    if profile.data_source is None:
        return fresh_cines(profile, n, fresh_seed), {"kind": "fresh phantoms", "seed": fresh_seed, "n": n,
                                                     "description": f"fresh phantoms, seed {fresh_seed}"}
    cache = Path(train) if train is not None else ensure_prepared(profile)
    if not is_cache(cache):
        raise CardiolabError(f"audit plant --train {cache}: a cohort folder has no holdout split to draw real "
                             "non-members from; give its prepared cache (or --n-fresh 0)")
    holdout = load_manifest(cache).get("splits", {}).get(HOLDOUT, [])
    if len(holdout) < MIN_HOLDOUT:
        raise CardiolabError(f"audit plant: the holdout split of {cache} has {len(holdout)} subject(s); real "
                             f"non-members need >= {MIN_HOLDOUT} (half planted, half calibrate tau); or --n-fresh 0")
    chosen = holdout_halves(holdout)[1][:n]
    trained = sorted(set(chosen) & set(train_ids))
    if trained:
        raise CardiolabError(f"audit plant: holdout subjects {trained[:5]} are in the training splits too; a "
                             "training subject is no non-member")
    ids, images = _cines(cache, profile, (HOLDOUT,))
    return (images[[ids.index(i) for i in chosen]],
            {"kind": REAL_HOLDOUT, "cache": to_record(cache), "split": HOLDOUT, "subjects": chosen, "n": len(chosen),
             "description": f"real holdout, {len(chosen)} subject{'' if len(chosen) == 1 else 's'}"})


def _unplanted(record: dict | None, synthetic: Path, holdout: str | os.PathLike | None, profile: Profile,
               ids: list[str], images: torch.Tensor) -> tuple[list[str], torch.Tensor, int]:
    """The holdout (ids, images) less the subjects the planted cohort `synthetic` holds as non-members (`record`,
    its nonmembers.json), and how many were left out: a cine that both sets tau and is scored by it flatters the
    FPR."""
    source = Path(holdout) if holdout is not None else profile.cache_dir
    if not record or record["kind"] != REAL_HOLDOUT or from_record(record["cache"]).resolve() != source.resolve():
        return ids, images, 0
    planted = set(record["subjects"])
    keep = [k for k, i in enumerate(ids) if i not in planted]
    if not keep:
        raise CardiolabError(f"{synthetic / NONMEMBERS_JSON}: every holdout subject is a planted non-member; none is "
                             "left to calibrate tau")
    return [ids[k] for k in keep], images[keep], len(ids) - len(keep)


_FRESH: dict = {}            # (profile data, n, seed) -> label-free fresh cines: one family cohort after another
FRESH_MEMO = 4               # fresh sets kept: `audit families` plants every family beside each of its seeds' sets


def fresh_cines(profile: Profile, n: int, seed: int) -> torch.Tensor:
    """n fresh phantoms (seed) at the profile's phantom geometry, label-free at profile geometry (N, D, H, W, T).
    Seed FRESH_SEED: the membership audits' cached set (`membership.fresh_cines`, made once on disk and shared);
    other seeds (the benchmarks' report cohorts) are kept for the process only, since `audit families` plants the
    same fresh cines beside every family's copies."""
    if seed == FRESH_SEED:
        return membership.fresh_cines(profile, n, seed)["label_free"]
    key = (repr(profile.data), n, seed)
    if key not in _FRESH:
        d = profile.data
        with tempfile.TemporaryDirectory(prefix="cardiolab-fresh-") as tmp:
            generate_cohort(tmp, n, seed=seed, size=d.phantom_size, spacing=d.phantom_spacing,
                            slices=d.phantom_slices, frames=d.phantom_frames)
            while len(_FRESH) >= FRESH_MEMO:
                _FRESH.pop(next(iter(_FRESH)))
            _FRESH[key] = load_cines(tmp, profile, label_free=True).images
    return _FRESH[key]


def _round_trip(profile: Profile, run: str | os.PathLike | None):
    """The VQ-GAN encode-decode of the vqgan family: (1, D, H, W, T) -> (1, D, H, W, T), from a trained run."""
    run = Path(run) if run is not None else profile.run("vqgan")
    if run_status(run, 0) == "fresh":
        raise CardiolabError(f"--family vqgan: no trained VQ-GAN in {run} (run `train vqgan` first, or give --vqgan)")
    model = vqgan_task.load(run)
    return lambda x: vqgan_task.reconstruct(model, x)


def audit_copies(synthetic: str | os.PathLike, profile: Profile,
                 train: str | os.PathLike | None = None, holdout: str | os.PathLike | None = None,
                 train_splits: tuple[str, ...] | None = TRAIN_SPLITS, holdout_split: str | None = "holdout",
                 percentile: float = 5.0, embedding: str | None = None, max_copy_fraction: float | None = None,
                 out_json: str | os.PathLike | None = None, detector: str | os.PathLike | None = None,
                 n_calibration: int | None = None, confidence: float | None = DEFAULT_CONFIDENCE,
                 control: str | os.PathLike | None = None) -> dict:
    """Copy audit of a synthetic cohort against the training data, calibrated on unseen reference data.

    JSON keys: threshold, percentile, embedding, copy_fraction, memorized_fraction (both %), per_synthetic
    [{id, nearest_train_id, distance, nndr, is_copy}], calibration (`privacy.copies.calibrate`: rank, n_reference,
    confidence, fpr_bound, fpr_expected, enough, dcr_reference; n_holdout, n_calibration, calibration_seed,
    holdout_planted: holdout subjects left out as the planted cohort's non-members), distances (DCR / NNDR / share
    nearer train / Mann-Whitney, against the holdout split), planted (recall / FPR and which non-members, when the
    cohort has planted.json), max_copy_fraction and passed (when a limit is given), training_cohort
    (`accounting.training_cohort_id` of the training set compared against: the export gate checks it against the
    generator's). `detector`: the run of a
    learned embedding (default runs/<profile>/<embedding>); n_calibration: calibration phantoms (see
    `calibration_cines`). control: a cohort sampled from a model that never saw this training set, scored at the
    same tau (`privacy.copies.compare_control`; key `control`); the gate still counts every copy.
    embedding: default the copy detector when its run is trained, else pixels (`embeddings.default_embedding`).
    Written to `out_json` (default runs/<profile>/audit/copies.json).
    """
    percentile, confidence = check_percentile(percentile), check_confidence(confidence)
    embedding = check_embedding(embedding or default_embedding(profile))
    if max_copy_fraction is not None and not 0 <= max_copy_fraction <= 100:
        raise CardiolabError(f"--max-copy-fraction: a percentage in [0, 100], got {max_copy_fraction:g}")
    synthetic = Path(synthetic)
    syn_ids, syn = _generated(synthetic, profile, "--synthetic")
    if control is not None:
        control = Path(control)
        ctrl_ids, ctrl = _generated(control, profile, "--control")
    train_ids, tr = _cines(train, profile, train_splits)
    hold_ids, ho = _cines(holdout, profile, (holdout_split,) if holdout_split else None)
    nonmembers = read_nonmembers(synthetic)
    hold_ids, ho, n_planted_out = _unplanted(nonmembers, synthetic, holdout, profile, hold_ids, ho)
    _same_geometry(str(synthetic), syn, tr, "the training data")
    if control is not None:
        _same_geometry(str(control), ctrl, tr, "the training data")
    _same_geometry(str(holdout or "holdout"), ho, tr, "the training data")
    same_source = Path(train or profile.cache_dir).resolve() == Path(holdout or profile.cache_dir).resolve()
    overlap = set(train_ids) & set(hold_ids)
    if same_source and overlap:
        raise CardiolabError(f"training and holdout sets share subjects {sorted(overlap)[:5]}: calibration needs "
                             "unseen held-out data")
    cal_ids, cal = calibration_cines(profile, train, n_calibration)
    if cal is not None:
        _same_geometry("calibration phantoms", cal, tr, "the training data")
    embed = embedder(embedding, profile, detector)
    # the training side as it is; every scan compared with it (synthetic, references) in all its views
    e_tr, e_syn, e_ho = embed(tr).numpy(), embed.views(syn).numpy(), embed.views(ho).numpy()
    e_ref = e_ho if cal is None else np.concatenate([e_ho, embed.views(cal).numpy()])
    calibration = dict(calibrate(e_tr, e_ref, percentile, confidence), n_holdout=len(hold_ids),
                       n_calibration=len(cal_ids), calibration_seed=CALIBRATION_SEED if cal_ids else None,
                       holdout_planted=n_planted_out)
    result = detect_copies(e_syn, e_tr, calibration["threshold"], syn_ids, train_ids)
    result.update(kind=KIND, percentile=percentile, embedding=embedding, profile=profile.name,
                  synthetic=str(synthetic), n_holdout=len(hold_ids), calibration=calibration,
                  distances=distance_summary(e_syn, e_tr, e_ho),
                  training_cohort=training_cohort_id(train if train is not None else profile.cache_dir, train_ids))
    if control is not None:
        scored = detect_copies(embed.views(ctrl).numpy(), e_tr, calibration["threshold"], ctrl_ids, train_ids)
        result["control"] = dict(compare_control(result, scored), synthetic=str(control))
    if (synthetic / PLANTED_JSON).exists():
        result["planted"] = dict(planted_scores(result["per_synthetic"], read_planted(synthetic)),
                                 nonmembers=(nonmembers or {"description": "fresh phantoms"})["description"])
    if max_copy_fraction is not None:
        result.update(max_copy_fraction=float(max_copy_fraction),
                      passed=result["copy_fraction"] <= max_copy_fraction)
    out_json = Path(out_json) if out_json is not None else profile.audit_dir / "copies.json"
    write_json(out_json, result)
    result["json"] = str(out_json)
    return result


SWEEP_KIND = "cardiolab-audit-sweep"


def audit_sweep(run: str | os.PathLike, profile: Profile, n: int | None = None,
                steps: int | None = None, seed: int = 0, embedding: str | None = None,
                out: str | os.PathLike | None = None, train: str | os.PathLike | None = None, holdout: str | os.PathLike | None = None) -> dict:
    """Memorization against training length: sample every kept checkpoint (checkpoint-<step>.pt, from
    `train dit --keep-every K`) of a DiT run and audit the samples for copies.

    Writes out/step-<k>/ (cohort), out/step-<k>.json (its copy audit) and out/sweep.json: {kind, run, embedding,
    checkpoints: [{step, copy_fraction, memorized_fraction, share_nearer_train, mannwhitney_p}]}. Default out:
    runs/<profile>/audit/sweep-<run name>; n, steps: the DiT's sample defaults; embedding: default the copy
    detector when trained, else pixels (`embeddings.default_embedding`).
    """
    embedding = check_embedding(embedding or default_embedding(profile))
    run = Path(run)
    check_dit_run(run)
    kept = kept_checkpoints(run)
    if not kept:
        raise CardiolabError(f"{run}: no kept checkpoints (checkpoint-<step>.pt); train with --keep-every N")
    defaults = dit.sample_defaults(profile)
    n, steps = n or defaults["n"], steps or defaults["steps"]
    out = Path(out) if out is not None else profile.audit_dir / f"sweep-{run.name}"
    rows = []
    for step, ckpt in kept:
        cohort = dit.sample_cohort(ckpt, n, steps, seed, out / f"step-{step}")
        r = audit_copies(cohort, profile, train, holdout, embedding=embedding, out_json=out / f"step-{step}.json")
        rows.append({"step": step, "copy_fraction": r["copy_fraction"], "memorized_fraction": r["memorized_fraction"],
                     "share_nearer_train": r["distances"]["share_nearer_train"],
                     "mannwhitney_p": r["distances"]["mannwhitney_p"], "json": r["json"]})
    result = {"kind": SWEEP_KIND, "run": str(run), "profile": profile.name, "embedding": embedding, "n": n,
              "sample_steps": steps, "checkpoints": rows}
    write_json(out / "sweep.json", result)
    result["json"] = str(out / "sweep.json")
    return result


def top_pairs(result: dict, profile: Profile, k: int = 4,
              train: str | os.PathLike | None = None) -> list[dict]:
    """The k synthetic cines of an `audit copies` result nearest their training cine: [{id, train_id, distance,
    synthetic (D, H, W, T), train (D, H, W, T)}], nearest first."""
    per = sorted(result["per_synthetic"], key=lambda p: p["distance"])[:k]
    syn_ids, syn = _cines(result["synthetic"], profile, None)
    tr_ids, tr = _cines(train, profile, TRAIN_SPLITS)
    return [{"id": p["id"], "train_id": p["nearest_train_id"], "distance": p["distance"],
             "synthetic": syn[syn_ids.index(p["id"])], "train": tr[tr_ids.index(p["nearest_train_id"])]}
            for p in per]


FAMILIES_KIND = "cardiolab-audit-families"
# The reported planted cohorts: plant seeds and fresh-phantom seeds never used to design the audit (plant seeds
# 0-2 with fresh seeds 7, 9, 10 chose the detector's ranges and steps), nor by training (0) or calibration (8).
REPORT_SEEDS = (11, 12, 13)
REPORT_FRESH_OFFSET = 100           # fresh seed of reported cohort s: 100 + s


def audit_families(out: str | os.PathLike, profile: Profile,
                   families: tuple[str, ...] | None = None, seeds: tuple[int, ...] = REPORT_SEEDS[:1],
                   leave_out: bool = True, steps: int | None = None, n_fresh: int | None = None,
                   train: str | os.PathLike | None = None, holdout: str | os.PathLike | None = None,
                   vqgan: str | os.PathLike | None = None) -> dict:
    """The leave-one-family-out test of the copy audit: for each transform family F (`plant.FAMILIES` or "mixed"),
    a copy detector trained without F (`copy_detector.train(without=(F,))`, in out/detector-without-F; families the
    detector has no augmentation for, vqgan and mixed, use the full detector in out/detector), a planted cohort of
    copies changed by F alone (`audit plant --family F`, plant seed s, fresh seed 100 + s: never a design seed) and
    its `audit copies` with that detector. leave_out=False: the full detector for every family (what the audit
    scores on families it trained on). steps: detector steps (default copydetector.steps).

    Writes out/<F>-<s>/ (cohort), out/<F>-<s>.json (its audit) and out/families.json: {kind, profile, steps,
    leave_out, rows: [{family, seed, fresh_seed, detector, without, recall, recall_matched, fpr, fpr_bound,
    threshold, n_planted, n_fresh, nonmembers}]}; on a real source every cohort's non-members are the same
    held-out patients (`nonmember_cines`), so the seeds vary the copies only. Returns it with "json".
    """
    families = tuple(families) if families else FAMILIES[:-1] + ("mixed",)
    for f in families:
        if f not in FAMILIES and f != "mixed":
            raise CardiolabError(f"--families {f!r}: choose from {', '.join(FAMILIES)}, mixed")
    out = Path(out)
    steps = steps or profile.copydetector.steps
    cache = Path(train) if train is not None else ensure_prepared(profile)

    def detector(without: tuple[str, ...]) -> Path:
        run = out / (f"detector-without-{'-'.join(without)}" if without else "detector")
        return ensure_run(run, steps, copy_detector.shaping(profile, 0, cache, steps, without),
                          lambda resume: copy_detector.train(profile, run, resume=resume, steps=steps,
                                                             cache_dir=cache, without=without))

    rows = []
    for f in families:
        without = (f,) if leave_out and f in copy_detector.AUGMENT_FAMILIES else ()
        run = detector(without)
        for s in seeds:
            cohort = out / f"{f}-{s}"
            plant_cohort(cohort, profile, train, family=f, seed=s, fresh_seed=REPORT_FRESH_OFFSET + s,
                         n_fresh=n_fresh, vqgan=vqgan)
            r = audit_copies(cohort, profile, train, holdout, embedding="copy-detector", detector=run,
                             out_json=out / f"{f}-{s}.json")
            p, c = r["planted"], r["calibration"]
            rows.append({"family": f, "seed": s, "fresh_seed": REPORT_FRESH_OFFSET + s, "detector": str(run),
                         "without": list(without), "recall": p["recall"], "recall_matched": p["recall_matched"],
                         "fpr": p["fpr"], "fpr_bound": c["fpr_bound"], "threshold": r["threshold"],
                         "n_planted": p["n_planted"], "n_fresh": p["n_fresh"], "nonmembers": p["nonmembers"]})
    result = {"kind": FAMILIES_KIND, "profile": profile.name, "steps": steps, "leave_out": leave_out,
              "rows": rows}
    write_json(out / "families.json", result)
    result["json"] = str(out / "families.json")
    return result


def families_table(result: dict) -> str:
    """A markdown table of `audit_families` rows: one line per family (mean over its seeds)."""
    lines = ["| family | detector trained without it | recall % | recall, right subject % | FPR % | FPR bound % | "
             "cohorts |", "|---|---|---|---|---|---|---|"]
    by = {}
    for r in result["rows"]:
        by.setdefault(r["family"], []).append(r)
    for f, rs in by.items():
        mean = {k: float(np.mean([r[k] for r in rs])) for k in ("recall", "recall_matched", "fpr", "fpr_bound")}
        lines.append(f"| {f} | {'yes' if rs[0]['without'] else 'no (not an augmentation)' if result['leave_out'] else 'no'} | "
                     f"{mean['recall']:.1f} | {mean['recall_matched']:.1f} | {mean['fpr']:.1f} | "
                     f"{mean['fpr_bound']:.1f} | {len(rs)} x ({rs[0]['n_planted']} copies + {rs[0]['n_fresh']} fresh) |")
    return "\n".join(lines)
