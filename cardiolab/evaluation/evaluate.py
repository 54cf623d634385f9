"""Evaluate a synthetic cohort against real data: one metrics dict / JSON per generator.

Both sides are brought to the profile's geometry and intensity before any metric:
* a prepared cache (a folder with manifest.json) is read as is (its `split`, default: all subjects);
* an ACDC-layout cohort (real, phantom or synthetic) goes through `cardiolab.data.cines.load_cines`,
  i.e. the cache's own `prepare_subject` (resampling, heart-centred crop, slices, [-1, 1] scaling, ED first).
The default real reference (no --real) is the profile's prepared cache, holdout split: data no generator
trained on, preprocessed once, and the split the segmenter and utility tests also use.

Metrics (see each module): FD-/KID-cardiolab on the frozen evaluator (`metrics.features`), optionally standard
FID with user TorchScript weights; inter-slice consistency and temporal coherence (`metrics.consistency`) of
both sides. With segmentation (labels=True) the profile's segmenter labels both sides, adding the LV
area roughness and volume-curve correlation, and the function (W1/KS) and shape comparison of
`cardiolab.evaluation.function`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from einops import rearrange

from cardiolab.core import CardiolabError, is_cache, read_json, to_record, write_csv, write_json
from cardiolab.data.cines import Cines, cine_cohorts, cohort_geometry, load_cines
from cardiolab.data.datasets import load_manifest
from cardiolab.data.phantom import TRUTH_FILE, ensure_phantom
from cardiolab.data.prepare import ensure_prepared
from cardiolab.dp.accounting import cohort_privacy
from cardiolab.evaluation import rvip
from cardiolab.evaluation.function import function_table, synthetic_function
from cardiolab.io.acdc import read_acdc
from cardiolab.io.cohort import from_stored, samples_record, write_cines
from cardiolab.metrics import consistency, features as ft
from cardiolab.metrics.features import distances, fd_floor, fid_from_torchscript, is_monotonic, validate_features
from cardiolab.metrics.fidelity import reconstruction_metrics
from cardiolab.metrics.shape import compare_mask_shapes
from cardiolab.plots import save_figure
from cardiolab.plots.evaluation import plot_validation
from cardiolab.profiles import Profile
from cardiolab.tasks import common, dit, evaluator as evaluator_task, get_task, segmenter as seg, vqgan

log = logging.getLogger(__name__)

KIND = "cardiolab-evaluate"     # marks this module's JSONs among the files in runs/<profile>/eval/
VERSION = 1


# (column in the table, where in an evaluate JSON, lower is better?)
MODEL_COLUMNS = (
    ("FD-cardiolab", ("fidelity", "FD-cardiolab"), True),
    ("KID-cardiolab", ("fidelity", "KID-cardiolab"), True),
    ("KID-cardiolab std", ("fidelity", "KID-cardiolab_std"), True),
    ("FD-cardiolab floor", ("fidelity", "FD-cardiolab_floor", "mean"), None),  # two halves of the real set
    ("precision", ("fidelity", "precision"), False),
    ("recall", ("fidelity", "recall"), False),
    ("density", ("fidelity", "density"), None),              # 1 when synthetic is distributed as real
    ("coverage", ("fidelity", "coverage"), False),
    ("evaluator valid on real", ("evaluator_validation", "passed"), None),   # evaluate --real: FD ordering check
    ("FID (user weights)", ("fidelity", "FID"), True),
    ("slice NCC synth", ("consistency", "synthetic", "slice_ncc"), False),
    ("slice NCC real", ("consistency", "real", "slice_ncc"), False),
    ("LV area roughness synth", ("consistency", "synthetic", "lv_area_roughness"), True),
    ("LV area roughness real", ("consistency", "real", "lv_area_roughness"), True),
    ("temporal roughness synth", ("temporal", "synthetic", "temporal_roughness"), True),
    ("temporal roughness real", ("temporal", "real", "temporal_roughness"), True),
    ("periodicity synth", ("temporal", "synthetic", "periodicity"), True),
    ("periodicity real", ("temporal", "real", "periodicity"), True),
    ("volume curve corr synth", ("temporal", "synthetic", "volume_curve_corr"), False),
    ("septal drift slices synth", ("landmarks", "synthetic", "slices", "mean"), True),
    ("septal drift slices real", ("landmarks", "real", "slices", "mean"), True),
    ("septal drift frames synth", ("landmarks", "synthetic", "frames", "mean"), True),
    ("septal drift frames real", ("landmarks", "real", "frames", "mean"), True),
    ("PSNR", ("reconstruction", "PSNR"), False),
    ("SSIM", ("reconstruction", "SSIM"), False),
    ("MS-SSIM", ("reconstruction", "MS-SSIM"), False),
    ("mask Dice", ("mask_adherence", "dice", "mean"), False),
    ("mask HD95", ("mask_adherence", "hd95", "mean"), True),
    ("mask shape KS", ("mask_shape", "ks_mean"), True),
    ("n real", ("real", "n"), None),
    ("n synth", ("synthetic", "n"), None),
)


def _get(d: dict, keys: tuple) -> float | None:
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def load_evaluations(run_dir: str | os.PathLike) -> list[dict]:
    """Every evaluate JSON under run_dir/eval, sorted by model name (other JSONs there are skipped)."""
    out = []
    for path in sorted((Path(run_dir) / "eval").glob("*.json")):
        data = read_json(path)
        if isinstance(data, dict) and data.get("kind") == KIND:
            out.append({**data, "_file": str(path)})
    return sorted(out, key=lambda d: d.get("model", ""))


def model_table(evaluations: list[dict]) -> pd.DataFrame:
    """One row per model: model, data, and the MODEL_COLUMNS that any model has."""
    rows = [{"model": e.get("model", Path(e["_file"]).stem), "data": e.get("data", "unknown"),
             **{col: _get(e, keys) for col, keys, _ in MODEL_COLUMNS}} for e in evaluations]
    df = pd.DataFrame(rows, columns=["model", "data", *[c for c, _, _ in MODEL_COLUMNS]])
    return df.dropna(axis=1, how="all")


def _geometry_check(real: Cines, synth: Cines) -> None:
    if real.images.shape[1:] != synth.images.shape[1:]:
        raise CardiolabError(f"{synth.source['path']}: cines of shape {tuple(synth.images.shape[1:])} but the real "
                             f"ones ({real.source['path']}) are {tuple(real.images.shape[1:])} (D, H, W, T); "
                             f"evaluate both with the same --profile")


def _real_root(real: Cines) -> tuple[Path | None, list[str] | None]:
    """The ACDC cohort behind `real` and its ids, for the segmenter-based function/shape comparison."""
    if real.source["kind"] == "cohort":
        return Path(real.source["path"]), None
    root = load_manifest(real.source["path"]).get("source", {}).get("root")
    return (Path(root), real.ids) if root and Path(root).is_dir() else (None, None)


def evaluate(synthetic: str | os.PathLike, real: str | os.PathLike | None = None,
             *, profile: Profile, split: str | None = None, labels: bool = False,
             name: str | None = None, out_json: str | os.PathLike | None = None,
             fid_weights: str | os.PathLike | None = None, evaluator: str | os.PathLike | None = None,
             seg_model=None, command: str | None = None, validate: bool | None = None,
             landmarks: str | os.PathLike | None = None) -> dict:
    """Metrics of a synthetic cohort against real data; written to out_json (default runs/<profile>/eval/<name>.json).

    synthetic: ACDC-layout cohort (or a prepared cache). real: cohort or cache; None = the profile's cache,
    `split` default 'holdout'. labels: segment both sides (adds segmentation-based metrics).
    evaluator: the evaluator run folder (default: `ensure_evaluator(profile)`, trained if missing).
    command: the command line recorded in the JSON (the report names it).
    validate: run the evaluator's degradation-ordering check on the real reference (`evaluator_check`) and
    record it as "evaluator_validation"; default: when `real` is given (a user's reference, not the profile's).
    landmarks: a landmarks run folder: adds septal-angle drift of both sides (`landmark_drift`).
    Returns {"kind", "version", "model", "profile", "data", "command", "real", "synthetic", "fidelity",
    "consistency": {"real", "synthetic"}, "temporal": {"real", "synthetic"}, "function", "shape", "segmentation"}.
    """
    validate = real is not None if validate is None else validate
    if real is None:
        real, split = ensure_prepared(profile), split or "holdout"
    real_c, synth_c = load_cines(real, profile, split), load_cines(synthetic, profile)
    command = command or (f"cardiolab.evaluation.evaluate.evaluate({str(synthetic)!r}, "
                          f"profile=get_profile({profile.name!r}), labels={labels})")
    return evaluate_cines(real_c, synth_c, profile, name=name or Path(synthetic).name, out_json=out_json,
                          labels=labels, synthetic_root=synthetic, fid_weights=fid_weights, evaluator=evaluator,
                          seg_model=seg_model, command=command, validate=validate,
                          landmarks=landmarks)


def evaluator_check(model, real: Cines, seed: int = 0, *, profile: Profile) -> dict:
    """Does the evaluator rank degraded copies of this real reference further from it than clean data?

    `metrics.features.validate_features` (noise, blur, temporal and slice shuffling at rising levels, against a
    clean half of `real`) and `is_monotonic` per degradation, for FD and KID. Returns {"passed": FD and KID rise
    with every degradation's level, "monotonic": {degradation: FD rises}, "monotonic_kid", "fd": {degradation:
    [mean FD per level]}, "kid" (the same), "n_real", "reference", "advice"}; passed False with a "reason" when
    the reference is too small. "advice" (None when passed) is the one step to take.
    """
    out = {"reference": real.source.get("path"), "n_real": len(real.ids), "metric": "FD-cardiolab"}
    try:
        df = validate_features(model, real.images, seed=seed)
    except CardiolabError as e:
        return {"passed": False, "reason": str(e), "advice": "give a reference of at least 4 cines", **out}
    monotonic, monotonic_kid = is_monotonic(df, "FD-cardiolab"), is_monotonic(df, "KID-cardiolab")
    means = df.groupby(["degradation", "level"], sort=False)[["FD-cardiolab", "KID-cardiolab"]].mean()
    passed = bool(all(monotonic.values()) and all(monotonic_kid.values()))
    return {"passed": passed, "monotonic": monotonic, "monotonic_kid": monotonic_kid,
            "fd": {k: [float(v) for v in means.loc[k, "FD-cardiolab"].sort_index()] for k in monotonic},
            "kid": {k: [float(v) for v in means.loc[k, "KID-cardiolab"].sort_index()] for k in monotonic},
            "advice": None if passed else retrain_advice(real, profile), **out}


def retrain_advice(real: Cines, profile: Profile) -> str:
    """The commands that fit an evaluator to this reference (its degradation task included) and score with it."""
    path = Path(real.source.get("path", "REFERENCE"))
    run = profile.run(f"evaluator-{path.name}")
    return (f"python -m cardiolab train evaluator --profile {profile.name} {'--cache' if is_cache(path) else '--root'} "
            f"{path} --out {run}, then evaluate again with --evaluator {run}")


def evaluate_cines(real_c: Cines, synth_c: Cines, profile: Profile, name: str,
                   out_json: str | os.PathLike | None = None, labels: bool = False,
                   synthetic_root: str | os.PathLike | None = None,
                   fid_weights: str | os.PathLike | None = None, evaluator: str | os.PathLike | None = None,
                   seg_model=None, command: str = "", extra: dict | None = None, validate: bool = False,
                   landmarks: str | os.PathLike | None = None) -> dict:
    """`evaluate` on cines already in memory (e.g. reconstructions); see `evaluate` for the result.

    synthetic_root: the synthetic cohort on disk, needed for the function/shape comparison (labels=True).
    extra: more top-level entries for the JSON (e.g. {"reconstruction": paired fidelity}).
    landmarks: a landmarks run folder: adds {"landmarks": `landmark_drift`}.
    """
    _geometry_check(real_c, synth_c)
    out_json = Path(out_json) if out_json else profile.eval_dir / f"{name}.json"
    log.info("evaluating %s (%d cines) against %s (%d cines)", name, len(synth_c.ids), real_c.source.get("path"),
             len(real_c.ids))
    evaluator = Path(evaluator) if evaluator else evaluator_task.ensure(profile)
    model = evaluator_task.load(evaluator)
    real_feats = ft.features(model, real_c.images)
    fidelity = distances(real_feats, ft.features(model, synth_c.images))
    fidelity["evaluator"] = str(evaluator)
    if len(real_c.ids) >= 4:   # FD of two same-distribution halves: the small-sample bias to read FD against
        fidelity["FD-cardiolab_floor"] = fd_floor(real_feats, len(real_c.ids))
    checked = {"evaluator_validation": evaluator_check(model, real_c, profile=profile)} if validate else {}
    if fid_weights:
        fidelity["FID"] = fid_from_torchscript(real_c.images, synth_c.images, fid_weights)
        fidelity["FID_weights"] = str(fid_weights)

    seg_real = seg_synth = function = shape = None
    if labels:
        seg_model = seg_model if seg_model is not None else seg.ensure_model(profile)
        seg_real = seg.segment(seg_model, real_c.images[:, None])
        seg_synth = seg.segment(seg_model, synth_c.images[:, None])
        root, ids = _real_root(real_c)
        if root is not None and synthetic_root is not None:
            comp = synthetic_function(profile, synthetic_root, real_root=root, real_ids=ids, seg_model=seg_model,
                                      out_dir=out_json.parent / f"{name}_function")
            function, shape = comp["function"], comp["shape"]
        else:
            log.warning("%s: no ACDC cohort on disk for one side; function/shape comparison skipped", name)
    ref_curve = consistency.mean_volume_curve(seg_real.numpy()) if seg_real is not None else None
    if labels and carries_masks(synth_c):      # two-stage samples: their masks can be checked against the images
        spacing, es = _geometry(profile)
        extra = {**mask_metrics(real_c, synth_c, seg_model, spacing, es), **(extra or {})}

    def scores(c: Cines, lab) -> dict:
        return consistency.cohort_consistency(c.images.numpy(), None if lab is None else lab.numpy(), ref_curve)

    both = {"real": scores(real_c, seg_real), "synthetic": scores(synth_c, seg_synth)}
    split_keys = lambda d, temporal: {k: v for k, v in d.items()  # noqa: E731
                                      if k == "n" or k.startswith(("temporal", "periodicity", "volume")) == temporal}
    result = {
        "kind": KIND, "version": VERSION, "model": name, "profile": profile.name,
        "data": "phantom" if real_c.source.get("phantom") else "real", "command": command,
        "real": {**real_c.source, "n": len(real_c.ids)},
        "synthetic": {**synth_c.source, "n": len(synth_c.ids)},
        "fidelity": fidelity,
        "consistency": {k: split_keys(v, False) for k, v in both.items()},
        "temporal": {k: split_keys(v, True) for k, v in both.items()},
        "function": function, "shape": shape, "segmentation": bool(labels), **checked, **(extra or {}),
    }
    if synthetic_root is not None and (privacy := cohort_privacy(synthetic_root)) is not None:
        result["privacy"] = privacy         # a DP generator's (epsilon, delta, sigma, ...) travels with its scores
    if landmarks is not None:
        result["landmarks"] = landmark_drift(real_c, synth_c, landmarks, profile)
    write_json(out_json, result)
    return result


def landmark_drift(real_c: Cines, synth_c: Cines, run_dir: str | os.PathLike, profile: Profile) -> dict:
    """Septal-angle drift (degrees) between adjacent slices and over frames of both sides, from the RVIPs the
    landmarks run at `run_dir` finds (`cardiolab.evaluation.rvip.cohort_drift`): a synthetic cohort whose septum turns
    more than the real one's is anatomically inconsistent across slices or through the beat.
    Returns {"run", "real": {...}, "synthetic": {...}}, each {"n", "slices", "frames", "found"}."""
    model = rvip.load_detector(run_dir, profile)
    spacing = (profile.data.spacing, profile.data.spacing)        # both sides are at the profile's in-plane grid

    def drift(c: Cines) -> dict:
        return rvip.cohort_drift(model, [{"image": x[None], "spacing": spacing} for x in c.images])
    return {"run": to_record(run_dir), "real": drift(real_c), "synthetic": drift(synth_c)}


# ---- the models of a profile (notebook 05) -------------------------------------------------------------
def evaluate_vqgan(profile: Profile, split: str = "holdout", labels: bool = True) -> dict:
    """VQ-GAN reconstructions of the cache's `split` as a 'model': paired PSNR / SSIM / MS-SSIM plus every
    `evaluate` metric; also writes them as a cohort runs/<profile>/samples/vqgan_recon. -> eval/vqgan_recon.json."""
    cache = ensure_prepared(profile)
    real = load_cines(cache, profile, split)
    model = vqgan.load(vqgan.ensure(profile))
    recon = torch.cat([vqgan.reconstruct(model, x[None]) for x in real.images]).cpu()   # (N, D, H, W, T)
    by_id = {r["id"]: r for r in load_manifest(cache)["subjects"]}
    geometry = [{"spacing": by_id[i]["spacing"], "frame_ms": by_id[i].get("frame_ms", 0.0), "es": by_id[i]["es"]}
                for i in real.ids]
    root = write_cines(profile.samples("vqgan_recon"), recon, geometry, ids=real.ids, info=real.info)
    synth = Cines(ids=real.ids, images=recon, info=real.info,
                  source={"path": str(root), "split": split, "kind": "reconstruction",
                          "phantom": real.source["phantom"]})
    return evaluate_cines(real, synth, profile, name="vqgan_recon", labels=labels, synthetic_root=root,
                          command=f"cardiolab.evaluation.evaluate.evaluate_vqgan(get_profile({profile.name!r}), "
                                  f"split={split!r})",
                          extra={"reconstruction": reconstruction_metrics(real.images, recon)})


def synthetic_cohorts(profile: Profile) -> dict[str, Path]:
    """{model name: cohort folder} of the generators' samples: the DiT's (`cardiolab.tasks.dit.ensure_samples`,
    generated if missing) and any other folder under runs/<profile>/samples/ (baselines), except the VQ-GAN
    reconstructions."""
    found: dict[str, Path] = {"dit": Path(dit.ensure_samples(profile))}
    known = {p.resolve() for p in found.values()}
    for folder in cine_cohorts(profile.samples_dir):
        if folder.name != "vqgan_recon" and folder.resolve() not in known:
            found[folder.name] = folder
    return found


def evaluate_all(profile: Profile, labels: bool = True,
                 landmarks: str | os.PathLike | None = None):
    """Evaluate the VQ-GAN reconstructions and every synthetic cohort of the profile (dit-dp cohorts excepted:
    the DP experiment scores them against the private holdout); returns the model table (`model_table`) of
    everything in runs/<profile>/eval. landmarks: a landmarks run, for every generator's septal drift."""
    evaluate_vqgan(profile, labels=labels)
    for name, root in synthetic_cohorts(profile).items():
        if samples_record(root).get("task") == "dit-dp":   # fine-tuned on the private cohort: scored against its holdout instead,
            continue                       # by the DP experiment (privacy.experiments.evaluate_setting)
        evaluate(root, profile=profile, labels=labels, name=name, landmarks=landmarks)
    return model_table(load_evaluations(profile.run_dir))


def primary_synthetic(profile: Profile) -> tuple[str, Path]:
    """(name, cohort) the notebook's function / shape / utility sections use: the DiT's samples when present,
    else another generator's, else the VQ-GAN reconstructions (a stand-in, built if missing)."""
    cohorts = synthetic_cohorts(profile)
    if cohorts:
        name = "dit" if "dit" in cohorts else next(iter(cohorts))
        return name, cohorts[name]
    recon = profile.samples("vqgan_recon")
    if not recon.is_dir():
        evaluate_vqgan(profile)
    return "vqgan_recon", recon


def _tables(profile: Profile, name: str, kind: str):
    """(real, synthetic) `kind` tables ('function' or 'shape') written by `evaluate(..., labels=True)`."""
    folder = profile.eval_dir / f"{name}_function"
    try:
        return pd.read_csv(folder / f"{kind}_real.csv"), pd.read_csv(folder / f"{kind}_synthetic.csv")
    except FileNotFoundError:
        raise CardiolabError(f"{folder}: no {kind} tables; run evaluate with labels=True for {name!r}") from None


def function_tables(profile: Profile, name: str):
    """(real, synthetic) per-subject cardiac-function tables of model `name`."""
    return _tables(profile, name, "function")


def shape_tables(profile: Profile, name: str):
    """(real, synthetic) shape-statistics tables of model `name`."""
    return _tables(profile, name, "shape")


def validate_evaluator(profile: Profile, seed: int = 0) -> pd.DataFrame:
    """`validate_features` of the profile's trained evaluator on every cine of the prepared cache;
    also writes runs/<profile>/eval/evaluator_validation.csv and figures/evaluator_validation.png."""
    model = evaluator_task.load(evaluator_task.ensure(profile))
    df = validate_features(model, load_cines(ensure_prepared(profile), profile).images, seed=seed)
    write_csv(df, profile.eval_dir / "evaluator_validation.csv")
    save_figure(plot_validation(df), profile.figures_dir / "evaluator_validation.png")
    return df


def ef_agreement(profile: Profile, split: str = "holdout", seg_model=None):
    """Segmenter EF vs phantom ground truth (phantom_truth.json) on the cache's `split`:
    DataFrame id, Group, EF_truth, EF_segmenter (both in %)."""
    root = ensure_phantom(profile)
    ids = load_manifest(ensure_prepared(profile))["splits"][split]
    model = seg_model if seg_model is not None else seg.ensure_model(profile)
    table = function_table(root, model, profile, ids=ids)
    table["EF_truth"] = [read_json(Path(root) / sid / TRUTH_FILE)["EF"] for sid in table["id"]]
    return table.rename(columns={"EF": "EF_segmenter"})[["id", "Group", "EF_truth", "EF_segmenter"]]


# ---- two-stage models: the masks that made the images (baselines issue) --------------------------------
def carries_masks(c: Cines) -> bool:
    """True when every subject of `c` has a label series in every frame (e.g. mask-to-image samples)."""
    return c.labels is not None and c.label_mask is not None and bool(c.label_mask.all())


def _geometry(profile: Profile) -> tuple[tuple[float, float, float], int]:
    """((sx, sy, sz) mm, ES frame) of the profile's prepared cache (medians over its training subjects)."""
    g = cohort_geometry(ensure_prepared(profile))
    return tuple(g["spacing"]), int(g["es"])


def mask_metrics(real_c: Cines, synth_c: Cines, seg_model, spacing=(1.0, 1.0, 1.0), es: int = 0) -> dict:
    """{"mask_adherence", "mask_shape"} of a cohort whose label series conditioned its images.

    mask_adherence: segmenter Dice / HD95 of each synthetic image against its own conditioning mask
    (`tasks.segmenter.score`, i.e. `metrics.segmentation.seg_scores` per frame), per structure and mean.
    mask_shape: shape statistics (`metrics.shape.compare_mask_shapes`) of the synthetic masks vs the real labels,
    at ED (frame 0) and the ES frame `es` where the real side is labelled (None without real labels).
    spacing: (sx, sy, sz) mm of the cines (profile geometry).
    """
    vols = [{"id": sid, "image": synth_c.images[i][None], "labels": synth_c.labels[i],
             "label_mask": synth_c.label_mask[i], "spacing": spacing} for i, sid in enumerate(synth_c.ids)]
    scores = seg.score(seg_model, vols)
    adherence = {"dice": scores["dice"], "hd95": scores["hd95"], "n": scores["n_subjects"],
                 "per_subject": scores["per_subject"]}
    shape = None
    if real_c.labels is not None:
        frames = sorted({0, min(es, synth_c.images.shape[-1] - 1)})
        keep = [i for i in range(len(real_c.ids)) if bool(real_c.label_mask[i, frames].all())]
        if keep:
            table = compare_mask_shapes(real_c.labels[keep].numpy(), synth_c.labels.numpy(), spacing[:2], frames)
            shape = {"frames": frames, "ks_mean": float(np.nanmean(table["ks"])),
                     "table": [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
                            for r in table.to_dict("records")]}
    return {"mask_adherence": adherence, "mask_shape": shape}


def evaluate_paired_masks(profile: Profile, run_dir: str | os.PathLike | None = None,
                          split: str = "holdout", steps: int | None = None, seed: int = 0, labels: bool = True,
                          seg_model=None) -> dict:
    """Mask-to-image conditioned on the real `split` masks, compared pixel by pixel with the real images.

    Paired PSNR / SSIM / MS-SSIM (`metrics.fidelity.reconstruction_metrics`) of each sample against the real cine
    whose label series conditioned it, plus every `evaluate` metric (with labels: mask adherence).
    run_dir: the mask-to-image run (default: the profile's, trained if needed). Subjects without a label series
    in every frame are left out. Samples go to runs/<profile>/eval/mask-to-image_paired/ (not samples/, so
    `synthetic_cohorts` does not pick them up as a generator); the JSON is eval/mask-to-image_paired.json.
    """
    task = get_task("mask-to-image")
    run = Path(run_dir) if run_dir else task.ensure(profile)
    cache = ensure_prepared(profile)
    real = load_cines(cache, profile, split)
    keep = [i for i in range(len(real.ids)) if real.label_mask is not None and bool(real.label_mask[i].all())]
    if not keep:
        raise CardiolabError(f"{cache}: no {split} subject with labels in every frame to condition mask-to-image on")
    real = Cines(ids=[real.ids[i] for i in keep], images=real.images[keep], labels=real.labels[keep],
                 label_mask=real.label_mask[keep], info=[real.info[i] for i in keep], source=real.source)
    name = "mask-to-image_paired"
    out = common.sample_cohort("mask-to-image", run, n=len(keep), steps=steps or task.sample_defaults(profile)["steps"],
                               seed=seed, out=profile.eval_dir / name, masks=real.labels, device="cpu",
                               meta={"masks": f"{to_record(cache)} ({split})", "paired_ids": real.ids})
    subjects = {s.id: s for s in read_acdc(out)}
    images = torch.stack([torch.from_numpy(rearrange(from_stored(np.asarray(subjects[f"synth{i + 1:04d}"].image)),
                                                     "h w d t -> d h w t")) for i in range(len(keep))])
    synth = Cines(ids=[f"synth{i + 1:04d}" for i in range(len(keep))], images=images, labels=real.labels, label_mask=real.label_mask, info=real.info,
                  source={"path": str(out), "split": split, "kind": "paired", "phantom": real.source["phantom"]})
    return evaluate_cines(real, synth, profile, name=name, labels=labels, synthetic_root=None, seg_model=seg_model,
                          command=f"cardiolab.evaluation.evaluate.evaluate_paired_masks(get_profile({profile.name!r}), "
                                  f"split={split!r})",
                          extra={"reconstruction": reconstruction_metrics(real.images, images)})
