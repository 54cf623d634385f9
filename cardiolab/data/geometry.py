"""The steps that bring one subject to profile geometry (`prepare.prepare_subject` runs them in order): canonical
in-plane orientation, in-plane resampling, the heart centre, the slices kept, the crop, the cardiac-cycle resampling.
`prepare.map_inplane` replays the in-plane ones on points.

Axes: a NIfTI cine is (X, Y, Z, T); the working tensors are (T, X, Y, Z); the cache is (D, H, W, T) with H the
NIfTI x axis, W the y axis, D the slice axis (base -> apex).
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from einops import rearrange
from monai.transforms import BorderPad, Resize, SpatialCrop
from nibabel.orientations import io_orientation
from scipy import ndimage

from cardiolab.io.cohort import LABELS, Subject
from cardiolab.profiles import Profile

log = logging.getLogger(__name__)

LV, MYO = LABELS["LV"], LABELS["MYO"]
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
    return image, labels, affine  # views; to_txyz copies


def resample_inplane(image: torch.Tensor, labels: torch.Tensor, spacing_xy: tuple[float, float],
                     target: float) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float]]:
    """image, labels: (T, X, Y, Z) -> (T, X', Y', Z) at ~`target` mm in-plane; returns the exact new spacing."""
    X, Y = image.shape[1:3]
    size = [max(1, round(n * s / target)) for n, s in zip((X, Y), spacing_xy)]
    image = Resize((*size, -1), mode="bilinear", anti_aliasing=True)(image)
    labels = Resize((*size, -1), mode="nearest")(labels.float())
    new_spacing = (spacing_xy[0] * X / size[0], spacing_xy[1] * Y / size[1])
    return plain_tensor(image), plain_tensor(labels).round().to(torch.uint8), new_spacing


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
    return plain_tensor(SpatialCrop(roi_start=[*start, 0], roi_end=[start[0] + size, start[1] + size, x.shape[-1]])(x))


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


def to_txyz(a: np.ndarray) -> torch.Tensor:
    """(X, Y, Z, T) numpy -> (T, X, Y, Z) torch: frames as channels for MONAI's channel-first transforms."""
    return torch.from_numpy(rearrange(a, "x y z t -> t x y z").copy())


def plain_tensor(x) -> torch.Tensor:
    """A MONAI MetaTensor as a plain tensor (its metadata has no use here)."""
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
