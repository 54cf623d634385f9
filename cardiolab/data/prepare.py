"""Preprocessing: a cohort folder (ACDC / M&Ms / phantom) -> the prepared cache every model trains on.

Per subject, in this order (spatial and temporal steps commute, so the cheap temporal one runs last):

1. canonical in-plane orientation (flip/swap x, y so they point along +world axes; slices stay base -> apex),
2. in-plane resampling to `profile.data.spacing` (MONAI Resize with anti-aliasing; nearest for labels),
3. heart centre: LV (+MYO) label centroid, else the thickest bright pool enclosed by the moving walls
   (temporal-std map: the beating heart is what changes over the cycle; fat is bright but still); a cine already
   at profile geometry (a generator's export) keeps its own centre,
4. `profile.data.slices` slices from base to apex (evenly over the slices holding LV, else central ones),
5. robust intensity scaling: percentiles 0.5 / 99.5 -> [-1, 1], clipped (MONAI ScaleIntensityRangePercentiles),
6. crop / pad (with -1) to `image_size` x `image_size` around the heart centre (MONAI BorderPad + SpatialCrop),
7. temporal resampling to `profile.data.frames` frames over the periodic cycle with frame 0 = ED
   (linear for images, nearest for labels; ED/ES-only labels go to their nearest new frame).

Cache layout (see the shared conventions): `<out>/manifest.json` and `<out>/subjects/<id>.pt` =
{"image": (D, H, W, T) float32 in [-1, 1], "labels": (D, H, W, T) uint8, "label_mask": (T,) bool,
"cond": (A,) int64, "rvip": (D, T, 2, 2) float32 RV insertion points (row, col), NaN where absent (no RV, or real
data without point truth)}; the manifest entry's `source["grid"]` maps points between the native and the cache
grid (`map_inplane`). H is the NIfTI x axis, W the y axis, D the slice axis (base -> apex).
The whole cache is built in a temporary folder and renamed into place, so a crash leaves no half cache.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from monai.transforms import ScaleIntensityRangePercentiles
from tqdm import tqdm

from cardiolab.core import (MANIFEST, CardiolabError, atomic_path, fingerprint, from_record, read_stamp, to_record,
                            up_to_date, write_json)
from cardiolab.data import attributes
from cardiolab.data.geometry import (at_profile_geometry, canonical_inplane, canonical_transform, choose_slices,
                                     crop_around, crop_start, cycle_index, heart_centre, label_free_view, label_stack,
                                     plain_tensor, resample_cycle, resample_inplane, resample_labels, to_txyz)
from cardiolab.data.phantom import ensure_phantom, read_rvip
from cardiolab.io.cohort import Subject
from cardiolab.io.layouts import read_cohort, scan_cohort
from cardiolab.io.validate import raise_if_problems
from cardiolab.profiles import HOLDOUT_ENV, Profile, shaping_fields

log = logging.getLogger(__name__)

CACHE_VERSION = 2                    # 2: "rvip" tensors and the source grid
PCT_LOW, PCT_HIGH = 0.5, 99.5        # robust to a few bright fat / flow-artefact voxels


def prepare_subject(subject: Subject, profile: Profile, rvip: np.ndarray | None = None,
                    use_labels: bool = True) -> tuple[dict, dict]:
    """One Subject -> (tensors for `subjects/<id>.pt`, manifest entry without split/file).

    rvip: the subject's RV insertion points (Z, T, 2, 2) native voxel (x, y), NaN where absent (phantom truth,
    `phantom.read_rvip`); None for real data: the cache's "rvip" is then all NaN.
    use_labels=False: the comparison geometry (`label_free_view`): the label files are never read, so a cine is
    cropped and its slices chosen the same whether or not labels sit beside it (labels and rvip come back empty).
    """
    cfg = profile.data
    sid, T = subject.id, subject.n_frames
    if not 0 <= subject.ed < T or not 0 <= subject.es < T:
        raise CardiolabError(f"{sid}: ED {subject.ed + 1} / ES {subject.es + 1} outside 1..{T} frames (Info.cfg)")
    if use_labels:
        labels, valid = label_stack(subject)
    else:
        labels, valid, rvip = np.zeros(subject.image.shape, np.uint8), np.zeros(T, bool), None
    swap, flips = canonical_transform(subject.affine)
    image, labels, affine = canonical_inplane(subject.image.astype(np.float32), labels, subject.affine)
    sx, sy, sz = np.linalg.norm(affine[:3, :3], axis=0)

    img, lab, (nsx, nsy) = resample_inplane(to_txyz(image), to_txyz(labels), (sx, sy), cfg.spacing)
    if at_profile_geometry(subject.image.shape, (sx, sy), profile):
        centre = (np.array(img.shape[1:3], dtype=float) - 1) / 2  # a generator's export: already heart-centred
    else:
        centre = heart_centre(img, lab, valid, cfg.spacing, subject.ed)
    if use_labels:
        slices = choose_slices(lab, valid, cfg.slices, sid)
    else:
        centre, slices = label_free_view(img.shape[1:], centre, cfg.image_size, cfg.slices)
    img, lab = img[..., slices], lab[..., slices]
    grid = {"shape": [int(n) for n in subject.image.shape[:2]], "swap": swap, "flip": list(flips),
            "resampled": [int(n) for n in img.shape[1:3]], "start": crop_start(centre, cfg.image_size)}

    img = plain_tensor(ScaleIntensityRangePercentiles(PCT_LOW, PCT_HIGH, -1.0, 1.0, clip=True)(img))
    img = crop_around(img, centre, cfg.image_size, value=-1.0)
    lab = crop_around(lab, centre, cfg.image_size, value=0).to(torch.uint8)

    img = resample_cycle(img, subject.ed, cfg.frames, "linear")
    lab, mask = resample_labels(lab, valid, subject.ed, cfg.frames)
    if rvip is not None and np.shape(rvip) != (subject.image.shape[2], T, 2, 2):
        raise CardiolabError(f"{sid}: RV insertion points have shape {np.shape(rvip)}, expected "
                             f"{(subject.image.shape[2], T, 2, 2)} (slices, frames, 2, 2)")

    cond = torch.from_numpy(attributes.encode(subject.info))
    tensors = {
        "image": rearrange(img, "t x y z -> z x y t").float().contiguous(),
        "labels": rearrange(lab, "t x y z -> z x y t").contiguous(),
        "label_mask": mask,
        "cond": cond,
        "rvip": cache_rvip(rvip, grid, slices, subject.ed, cfg.frames),
    }
    step = float(np.mean(np.diff(slices))) if len(slices) > 1 else 1.0
    entry = {
        "id": sid,
        "attributes": attributes.raw_attributes(subject.info),
        "vendor": _text(subject.info.get("Vendor")),          # M&Ms's CSV has them; ACDC and the phantom do not
        "centre": _text(subject.info.get("Centre")),
        "cond": cond.tolist(),
        "ed": 0,
        "es": cycle_index(subject.es, subject.ed, T, cfg.frames),
        "label_frames": torch.nonzero(mask).flatten().tolist(),
        "spacing": [float(nsx), float(nsy), float(sz * max(step, 1.0))],
        "frame_ms": float(subject.frame_ms) * T / cfg.frames,
        "source": {"frames": T, "ed": subject.ed, "es": subject.es, "slices": slices.tolist(),
                   "spacing": [float(sx), float(sy), float(sz)], "centre": [float(c) for c in centre],
                   "grid": grid},
        "superior": superior_direction(affine, grid),
        "rvip": rvip is not None,
    }
    return tensors, entry


def _text(value) -> str | None:
    """An Info value as the manifest records a name: text, None where missing."""
    return None if value is None or str(value).strip() == "" else str(value).strip()


# ----------------------------------------------------------------------------- points: native <-> cache

def map_inplane(points: np.ndarray, grid: dict, to: str = "cache") -> np.ndarray:
    """THE mapping of in-plane points between a subject's native voxel grid and its prepared (cache) grid.

    points: (..., 2). to="cache": native voxel (x, y) of the NIfTI image -> cache (row, col) pixel;
    to="native": the inverse. grid: the manifest entry's `source["grid"]` (see `prepare_subject`): native
    `shape` (X, Y), canonical `swap` / `flip`, `resampled` size and crop `start`. Replays, in order, the
    canonical swap / flip (`canonical_transform`), the in-plane resampling (MONAI Resize = torch interpolate
    with align_corners=False: pixel centres map by (u + 0.5) * new / old - 0.5) and the crop. NaN propagates;
    slices and frames map by `source["slices"]` and `cycle_index`.
    """
    if to not in ("cache", "native"):
        raise CardiolabError(f"map_inplane: to={to!r}; choose cache or native")
    p = np.array(points, dtype=float)
    if p.shape[-1:] != (2,):
        raise CardiolabError(f"map_inplane: points must be (..., 2), got shape {p.shape}")
    shape = np.asarray(grid["shape"], float)[::-1] if grid["swap"] else np.asarray(grid["shape"], float)
    flip, size, start = np.asarray(grid["flip"], bool), np.asarray(grid["resampled"], float), np.asarray(
        grid["start"], float)
    if to == "cache":
        if grid["swap"]:
            p = p[..., ::-1]
        p = np.where(flip, shape - 1 - p, p)
        p = (p + 0.5) * size / shape - 0.5
        return p - start
    p = p + start
    p = (p + 0.5) * shape / size - 0.5
    p = np.where(flip, shape - 1 - p, p)
    return p[..., ::-1].copy() if grid["swap"] else p


def cache_rvip(rvip: np.ndarray | None, grid: dict, slices, ed: int, frames: int) -> torch.Tensor:
    """Native RVIPs (Z, T, 2, 2) voxel (x, y) (None: unknown) -> the cache's (D, frames, 2, 2) (row, col),
    NaN where absent: `map_inplane`, the chosen slices, and the nearest frame as for labels."""
    D = len(slices)
    if rvip is None:
        return torch.full((D, frames, 2, 2), float("nan"))
    pts = torch.from_numpy(map_inplane(np.asarray(rvip, float)[list(slices)], grid, "cache"))    # (D, T, 2, 2)
    pts = resample_cycle(rearrange(pts, "d t l c -> t d l c"), ed, frames, "nearest")
    return rearrange(pts, "t d l c -> d t l c").float().contiguous()


def superior_direction(affine: np.ndarray, grid: dict) -> list[float]:
    """The (row, col) direction in the cache grid along which world z (RAS+ superior) grows fastest: how
    label-derived RVIPs are named (`phantom.RVIP_RULE`: the more superior end is "anterior").
    affine: the canonical (post `canonical_inplane`) affine."""
    shape = np.asarray(grid["shape"], float)[::-1] if grid["swap"] else np.asarray(grid["shape"], float)
    d = np.asarray(affine, float)[2, :2] * shape / np.asarray(grid["resampled"], float)
    return [float(v) for v in d] if np.linalg.norm(d) > 1e-6 else [0.0, 1.0]


# ----------------------------------------------------------------------------- splits and the whole cache

def stratified_splits(ids: list[str], groups: list[str], fractions, seed: int = 0) -> dict[str, list[str]]:
    """Seeded public / private / holdout split, stratified by group.

    Subjects are shuffled within each group, the groups laid end to end, and each subject dealt to the
    split furthest behind its quota, so every split gets ~fraction of the cohort and of each group.
    """
    names = ("public", "private", "holdout")
    frac = np.asarray(fractions, dtype=float)
    if frac.shape != (3,) or (frac < 0).any() or frac.sum() <= 0:
        raise CardiolabError(f"profile data.split: need three non-negative fractions, got {fractions}")
    frac = frac / frac.sum()
    rng = np.random.default_rng(seed)
    by_group: dict[str, list[str]] = {}
    for sid, g in sorted(zip(ids, groups)):
        by_group.setdefault(str(g), []).append(sid)
    order = []
    for g in sorted(by_group):
        members = by_group[g]
        order += [members[i] for i in rng.permutation(len(members))]
    counts = np.zeros(3)
    splits = {n: [] for n in names}
    for k, sid in enumerate(order):
        i = int(np.argmax(frac * (k + 1) - counts))
        counts[i] += 1
        splits[names[i]].append(sid)
    return {n: sorted(v) for n, v in splits.items()}


def split_cohort(entries: list[dict], profile: Profile, seed: int = 0,
                 root: str | os.PathLike = "the cohort") -> dict[str, list[str]]:
    """The splits of prepared subjects (manifest entries) under the profile's split rule (`Profile.split_rule`).

    Plain: `stratified_splits` by `data.split`. With `holdout_vendor`: every subject of those vendors is holdout,
    the others are split between public and private by their two fractions renormalised (stratified, seeded), so
    models train on some vendors and are scored on another. A vendor the cohort lacks raises CardiolabError.
    """
    ids = [e["id"] for e in entries]
    groups = [attributes.describe(e["cond"])["group"] for e in entries]
    if not profile.holdout_vendor:
        return stratified_splits(ids, groups, profile.data.split, seed)
    option = f"--holdout-vendor {','.join(profile.holdout_vendor)} (or ${HOLDOUT_ENV})"
    present = sorted({e["vendor"] for e in entries if e.get("vendor") is not None})
    if not present:
        raise CardiolabError(f"{option}: {root} has no vendor information (vendors present: none; an M&Ms "
                             "cohort names them in its CSV)")
    if unknown := [v for v in profile.holdout_vendor if v not in present]:
        raise CardiolabError(f"{option}: no vendor {', '.join(unknown)} in {root}; vendors present: "
                             f"{', '.join(present)}")
    held = [e.get("vendor") in profile.holdout_vendor for e in entries]
    if all(held):
        raise CardiolabError(f"{option}: every subject of {root} would be holdout, none left to train on; vendors "
                             f"present: {', '.join(present)}")
    public, private, _ = profile.data.split
    rest = [(sid, g) for sid, g, h in zip(ids, groups, held) if not h]
    splits = stratified_splits([sid for sid, _ in rest], [g for _, g in rest], (public, private, 0.0), seed)
    splits["holdout"] = sorted(sid for sid, h in zip(ids, held) if h)
    return splits


def prepare(root: str | os.PathLike, layout: str, profile: Profile,
            out: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Preprocess every subject under `root` into the cache `out` (default profile.cache_dir), split by the
    profile's split rule (`split_cohort`).

    Returns the path of `<out>/manifest.json`. Replaces an existing cache only once the new one is complete.
    """
    out = Path(out) if out is not None else profile.cache_dir
    raise_if_problems(scan_cohort(root, layout)[1])     # what `check` reports (e.g. per-frame files) stops prepare
    subjects = read_cohort(root, layout)
    entries = []
    with atomic_path(out) as tmp:
        (tmp / "subjects").mkdir(parents=True)
        for subject in tqdm(subjects, desc="prepare", unit="subject", leave=False):
            tensors, entry = prepare_subject(subject, profile, read_rvip(Path(root) / subject.id))
            entry["file"] = f"subjects/{subject.id}.pt"
            torch.save(tensors, tmp / entry["file"])
            entries.append(entry)
        if not entries:
            raise CardiolabError(f"{root}: no subjects to prepare")
        splits = split_cohort(entries, profile, seed, root)
        split_of = {sid: name for name, ids in splits.items() for sid in ids}
        for e in entries:
            e["split"] = split_of[e["id"]]
        cfg = profile.data
        manifest = {
            "version": CACHE_VERSION,
            "profile": profile.to_dict(),
            "image_size": cfg.image_size,
            "frames": cfg.frames,
            "slices": cfg.slices,
            "spacing": cfg.spacing,
            "source": {"root": to_record(root), "layout": layout, "seed": seed, "listing": source_listing(root),
                       "subjects": len(entries)},
            "attributes": {f.name: list(f.classes) for f in attributes.FIELDS},
            **({"split_rule": profile.split_rule} if profile.split_rule is not None else {}),  # plain: as before
            "splits": splits,
            "subjects": entries,
        }
        write_json(tmp / MANIFEST, manifest)
    log.info("prepared %d subjects from %s into %s (%s)", len(entries), root, out,
             ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return out / MANIFEST


def source_listing(root: str | os.PathLike) -> str:
    """A short id of a cohort folder's listing: every file's path under it and size (not times: a copied root
    keeps its caches). A cache records it; a source whose files changed, came or went no longer matches."""
    root = Path(root)
    files = sorted((p.relative_to(root).as_posix(), p.stat().st_size) for p in root.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    return fingerprint(files)


def is_current(cache_dir: str | os.PathLike, profile: Profile) -> bool:
    """True when `cache_dir` holds a manifest of this cache version made with this profile's data settings from
    the profile's data source (`Profile.data_root`, in its layout) as that folder is now.

    The listing is compared only while the source is there: a cache copied without its cohort stays usable.
    Manifests written before sources were recorded with a listing are compared by folder and layout only."""
    return up_to_date(cache_dir, *cache_stamps(read_stamp(Path(cache_dir) / MANIFEST), profile))


def cache_stamps(manifest: dict | None, profile: Profile) -> tuple[dict | None, dict]:
    """(the stamp a cache's manifest records, the stamp the profile's data source would give it now), for
    `core.stale`: cache version, profile name, data settings, source folder (as recorded: relative to the root),
    layout, split rule (None: plain, as caches made before the rule hold) and, where both sides have one, the
    source's listing."""
    root = profile.data_root
    wanted = {"version": CACHE_VERSION, "profile": profile.name, "data": shaping_fields(profile.data),
              "root": to_record(root), "layout": profile.data_layout, "split_rule": profile.split_rule}
    if manifest is None:
        return None, wanted
    source, made_with = manifest.get("source", {}), manifest.get("profile", {})
    recorded = {"version": manifest.get("version"), "profile": made_with.get("name"), "data": made_with.get("data"),
                "root": to_record(from_record(source.get("root"))), "layout": source.get("layout", "acdc"),
                "split_rule": manifest.get("split_rule")}
    if "listing" in source and root.is_dir():
        recorded["listing"], wanted["listing"] = source["listing"], source_listing(root)
    return recorded, wanted


def ensure_prepared(profile: Profile) -> Path:
    """The profile's cache folder (`Profile.cache_dir`), prepared from its data source when absent or stale: the
    root's cohort folder (`profiles.with_data`), else the phantom (generated if missing)."""
    if not is_current(profile.cache_dir, profile):
        if profile.data_source is not None:
            root = profile.data_root
            if not root.is_dir():
                raise CardiolabError(f"{root}: the data source of profile {profile.name} is not there "
                                     f"(--data / $CARDIOLAB_DATA) and {profile.cache_dir} is not prepared from it")
        else:
            root = ensure_phantom(profile)
        prepare(root, profile.data_layout, profile, profile.cache_dir)
    log.info("%s", profile.describe_data())
    return profile.cache_dir
