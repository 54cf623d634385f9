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
from monai.transforms import BorderPad, Resize, ScaleIntensityRangePercentiles, SpatialCrop
from nibabel.orientations import io_orientation
from scipy import ndimage
from tqdm import tqdm

from cardiolab.core import (MANIFEST, CardiolabError, atomic_path, fingerprint, from_record, read_stamp, to_record,
                            up_to_date, write_json)
from cardiolab.data import attributes
from cardiolab.data.phantom import ensure_phantom, read_rvip
from cardiolab.io.cohort import LABELS, Subject
from cardiolab.io.layouts import read_cohort, scan_cohort
from cardiolab.io.validate import raise_if_problems
from cardiolab.profiles import Profile, shaping_fields

log = logging.getLogger(__name__)

CACHE_VERSION = 2                    # 2: "rvip" tensors and the source grid
LV, MYO = LABELS["LV"], LABELS["MYO"]
PCT_LOW, PCT_HIGH = 0.5, 99.5        # robust to a few bright fat / flow-artefact voxels
HEART_SEARCH_MM = 20.0               # smoothing of the temporal-std map when no labels exist
HEART_WINDOW_MM = 80.0               # radius around the std peak searched for the LV cavity (the smoothed
                                     # peak can sit on the RV or chest wall, a whole LV diameter away)
MOVING_LEVEL = 0.3                   # std above this fraction of its maximum: a moving wall
BLOOD_LEVEL = 0.5                    # blood-pool threshold between the 10th and 99th intensity percentile
                                     # (fat is brighter than blood in bSSFP: a higher level keeps only fat)


# ----------------------------------------------------------------------------- one subject, step by step

def canonical_transform(affine: np.ndarray) -> tuple[bool, tuple[bool, bool]]:
    """(swap x and y?, (flip axis 0?, flip axis 1?) after the swap) that makes x, y run along increasing world
    axes; what `canonical_inplane` applies and `map_inplane` replays on points."""
    ornt = io_orientation(affine)
    swap = bool(ornt[0, 0] > ornt[1, 0])
    if swap:
        ornt = ornt[[1, 0, 2]]
    return swap, (bool(ornt[0, 1] < 0), bool(ornt[1, 1] < 0))


def canonical_inplane(image: np.ndarray, labels: np.ndarray, affine: np.ndarray):
    """Swap / flip the in-plane axes so x, y run along increasing world axes; the slice axis is untouched.

    image, labels: (X, Y, Z, T). Returns (image, labels, affine) reoriented (a full RAS reorientation
    could move the slice axis of an oblique short-axis stack in-plane, so only x, y move).
    """
    swap, flips = canonical_transform(affine)
    affine = affine.copy()
    if swap:
        image, labels = image.swapaxes(0, 1), labels.swapaxes(0, 1)
        affine[:, [0, 1]] = affine[:, [1, 0]]
    for axis in (0, 1):
        if flips[axis]:
            image, labels = np.flip(image, axis), np.flip(labels, axis)
            affine[:, 3] += affine[:, axis] * (image.shape[axis] - 1)
            affine[:, axis] *= -1
    return image, labels, affine  # views; _txyz copies


def resample_inplane(image: torch.Tensor, labels: torch.Tensor, spacing_xy: tuple[float, float],
                     target: float) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float]]:
    """image, labels: (T, X, Y, Z) -> (T, X', Y', Z) at ~`target` mm in-plane; returns the exact new spacing."""
    X, Y = image.shape[1:3]
    size = [max(1, round(n * s / target)) for n, s in zip((X, Y), spacing_xy)]
    image = Resize((*size, -1), mode="bilinear", anti_aliasing=True)(image)
    labels = Resize((*size, -1), mode="nearest")(labels.float())
    new_spacing = (spacing_xy[0] * X / size[0], spacing_xy[1] * Y / size[1])
    return _plain(image), _plain(labels).round().to(torch.uint8), new_spacing


def heart_centre(image: torch.Tensor, labels: torch.Tensor, valid: np.ndarray, spacing: float,
                 ed: int = 0) -> np.ndarray:
    """In-plane (x, y) voxel centre of the LV. image, labels: (T, X, Y, Z); valid: (T,) labelled frames.

    With labels: the LV + MYO centroid (all labelled frames and slices). Without: the heart is what moves
    over the cycle (temporal-std map), and the LV cavity is the thickest bright blood pool at ED inside the
    moving region. Bright fat, liver and vessels compete with blood in bSSFP but do not move, so the search
    is restricted to the region the moving walls enclose (holes of the thresholded std map: the cavity's
    centre stays blood all cycle long, its rim moves), then to the whole filled region, then to the std peak.
    """
    lab = labels[torch.as_tensor(valid)] if valid.any() else labels[:0]
    for mask in ((lab == LV) | (lab == MYO), lab > 0):
        if mask.any():
            return _centroid(mask.sum(dim=(0, 3)).double().numpy())  # (X, Y) voxel counts
    std = image.std(dim=0).mean(dim=-1).numpy()  # (X, Y)
    peak = np.unravel_index(np.argmax(ndimage.gaussian_filter(std, HEART_SEARCH_MM / spacing / 2)), std.shape)
    gx, gy = np.indices(std.shape)
    near = (gx - peak[0]) ** 2 + (gy - peak[1]) ** 2 <= (HEART_WINDOW_MM / spacing) ** 2
    moving = std > MOVING_LEVEL * std[near].max()
    enclosed = ndimage.binary_fill_holes(moving) & near
    Z = image.shape[-1]
    ed_img = ndimage.gaussian_filter(image[ed][..., Z // 4: Z - Z // 4].mean(dim=-1).numpy(), 0.5)
    region = enclosed if enclosed.any() else near
    lo, hi = np.quantile(ed_img[region], [0.1, 0.99])
    bright = region & (ed_img > lo + BLOOD_LEVEL * (hi - lo))
    for blood in (bright & ~moving, bright):
        # zero-padded: a bright band along the image border is no thicker than it looks
        depth = ndimage.distance_transform_edt(np.pad(blood, 1))[1:-1, 1:-1]
        if depth.max() > 0:
            c = np.unravel_index(np.argmax(ndimage.gaussian_filter(depth, 1.0)), depth.shape)
            cavity = blood & ((gx - c[0]) ** 2 + (gy - c[1]) ** 2 <= (depth.max() + 1) ** 2)
            return _centroid(cavity.astype(float))
    return np.array(peak, dtype=float)


def _centroid(weight: np.ndarray) -> np.ndarray:
    return np.array(ndimage.center_of_mass(weight), dtype=float)


def choose_slices(labels: torch.Tensor, valid: np.ndarray, n: int, sid: str) -> np.ndarray:
    """Indices of `n` slices base -> apex. labels: (T, X, Y, Z).

    Evenly spaced over the slices holding LV in any labelled frame; a window of n neighbouring slices
    when the LV spans fewer; the central n slices without labels.
    """
    Z = labels.shape[-1]
    if Z < n:
        log.warning("%s: %d slices < %d wanted; repeating slices", sid, Z, n)
        return np.linspace(0, Z - 1, n).round().astype(int)
    lv = (labels[torch.as_tensor(valid)] == LV).any(dim=(0, 1, 2)).numpy() if valid.any() else np.zeros(Z, bool)
    if lv.any():
        first, last = np.flatnonzero(lv)[[0, -1]]
        if last - first + 1 >= n:
            return np.linspace(first, last, n).round().astype(int)
        start = (first + last + 1) // 2 - n // 2
    else:
        start = (Z - n) // 2
    start = int(np.clip(start, 0, Z - n))
    return np.arange(start, start + n)


def crop_around(x: torch.Tensor, centre: np.ndarray, size: int, value: float) -> torch.Tensor:
    """(C, X, Y, Z) -> (C, size, size, Z) centred on `centre` (x, y), padding with `value` where needed."""
    start = crop_start(centre, size)
    pads = [(max(0, -s), max(0, s + size - n)) for s, n in zip(start, x.shape[1:3])]
    if any(p for pair in pads for p in pair):
        x = BorderPad([*pads[0], *pads[1], 0, 0], mode="constant", value=value)(x)
    start = [s + lo for s, (lo, _) in zip(start, pads)]
    return _plain(SpatialCrop(roi_start=[*start, 0], roi_end=[start[0] + size, start[1] + size, x.shape[-1]])(x))


def crop_start(centre, size: int) -> list[int]:
    """First (x, y) index of the crop: its middle, start + (size - 1) / 2, lands within half a voxel of centre."""
    return [int(np.floor(c - (size - 1) / 2 + 0.5)) for c in centre]


def resample_cycle(x: torch.Tensor, ed: int, frames: int, mode: str = "linear") -> torch.Tensor:
    """(T, ...) one periodic heart cycle -> (frames, ...) starting at frame `ed`.

    New frame k sits at old time ed + k T / frames (mod T); 'linear' blends the two neighbours
    (wrapping from the last frame to the first), 'nearest' picks the closest (labels).
    """
    T = x.shape[0]
    t = ed + torch.arange(frames, dtype=torch.float64) * T / frames
    if mode == "nearest":
        return x[torch.round(t).long() % T]
    lo = torch.floor(t).long()
    w = (t - lo).to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
    return (1 - w) * x[lo % T] + w * x[(lo + 1) % T]


def resample_labels(labels: torch.Tensor, valid: np.ndarray, ed: int, frames: int):
    """(T, ...) labels and (T,) labelled-frame mask -> (frames, ...) labels and (frames,) mask, ED first.

    A full series is resampled by nearest frame; sparse labels (ACDC: ED and ES) each move to their
    nearest new frame, and every other new frame is zero and masked out.
    """
    if valid.all():
        return resample_cycle(labels, ed, frames, "nearest"), torch.ones(frames, dtype=torch.bool)
    out = torch.zeros((frames, *labels.shape[1:]), dtype=labels.dtype)
    mask = torch.zeros(frames, dtype=torch.bool)
    for f in np.flatnonzero(valid):
        k = cycle_index(int(f), ed, len(valid), frames)
        out[k], mask[k] = labels[f], True
    return out, mask


def cycle_index(frame: int, ed: int, n_old: int, n_new: int) -> int:
    """Old frame index -> nearest new frame index after `resample_cycle` (ED -> 0)."""
    return int(round(((frame - ed) % n_old) * n_new / n_old)) % n_new


def _txyz(a: np.ndarray) -> torch.Tensor:
    """(X, Y, Z, T) numpy -> (T, X, Y, Z) torch: frames as channels for MONAI's channel-first transforms."""
    return torch.from_numpy(rearrange(a, "x y z t -> t x y z").copy())


def _plain(x) -> torch.Tensor:
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


def label_stack(subject: Subject) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z, T) uint8 labels with zeros in unlabelled frames, and the (T,) bool mask of labelled frames."""
    T = subject.n_frames
    if subject.label_series is not None:
        return subject.label_series.astype(np.uint8), np.ones(T, bool)
    stack = np.zeros(subject.image.shape, np.uint8)
    valid = np.zeros(T, bool)
    for frame, lab in subject.labels.items():
        if 0 <= frame < T:
            stack[..., frame], valid[frame] = lab, True
    return stack, valid


def label_free_view(shape, centre, size: int, n_slices: int) -> tuple[np.ndarray, np.ndarray]:
    """THE label-free comparison geometry (`prepare_subject(use_labels=False)`): where two cohorts are compared
    after preparation (copy audits, DCR / NNDR, the MIA distance attack), every side is cropped by this rule, so
    an image-only copy of a labelled subject is cropped exactly as its source.

    shape: the resampled (X, Y, Z); centre: the label-free heart estimate (`heart_centre` without labels).
    Returns (centre, slice indices). The crop window is clamped inside the image where the image is at least
    `size` wide (a -1 band would otherwise stand in for anatomy the image has, and the estimate can sit a whole
    LV diameter off the heart: up to 13 px of 64 on the tiny phantom, whose labelled centre sits within 2 px of
    the middle); slices are spread evenly over the whole stack (the labelled rule spreads them over the slices
    holding LV: the whole stack on the phantom).
    """
    centre = np.asarray(centre, dtype=float).copy()
    for axis, n in enumerate(shape[:2]):
        if n >= size:
            half = (size - 1) / 2
            centre[axis] = float(np.clip(centre[axis], half, n - 1 - half))
    return centre, np.linspace(0, shape[2] - 1, n_slices).round().astype(int)


def at_profile_geometry(shape, spacing_xy, profile: Profile) -> bool:
    """True when an (X, Y, Z, T) cine already has the profile's crop size, spacing, slices and frames: what
    cardiolab's generators export. Its crop is the whole image: re-centring on a heart estimated from the
    intensities of a noisy sample would shift the window off the image and pad a black band."""
    cfg = profile.data
    return (tuple(shape) == (cfg.image_size, cfg.image_size, cfg.slices, cfg.frames)
            and bool(np.allclose(spacing_xy, cfg.spacing, rtol=1e-3)))


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

    img, lab, (nsx, nsy) = resample_inplane(_txyz(image), _txyz(labels), (sx, sy), cfg.spacing)
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

    img = _plain(ScaleIntensityRangePercentiles(PCT_LOW, PCT_HIGH, -1.0, 1.0, clip=True)(img))
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


def prepare(root: str | os.PathLike, layout: str, profile: Profile,
            out: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Preprocess every subject under `root` into the cache `out` (default profile.cache_dir).

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
        groups = [attributes.describe(e["cond"])["group"] for e in entries]
        splits = stratified_splits([e["id"] for e in entries], groups, profile.data.split, seed)
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
    layout and, where both sides have one, the source's listing."""
    root = profile.data_root
    wanted = {"version": CACHE_VERSION, "profile": profile.name, "data": shaping_fields(profile.data),
              "root": to_record(root), "layout": profile.data_layout}
    if manifest is None:
        return None, wanted
    source, made_with = manifest.get("source", {}), manifest.get("profile", {})
    recorded = {"version": manifest.get("version"), "profile": made_with.get("name"), "data": made_with.get("data"),
                "root": to_record(from_record(source.get("root"))), "layout": source.get("layout", "acdc")}
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
