"""A whole-heart 3D phantom standing in for coronary CTA (MedLoRD's data): image + six-structure mask.

The heart is built from a few analytic solids in a heart frame (u: long axis base -> apex, v, w): truncated
ellipsoids for the LV cavity, the myocardium around it and the RV on its septal side (below the base
plane), ellipsoids for the two atria above it, and a cylinder for the ascending aorta from the outflow.
The frame is tilted as in a chest (apex anterior, inferior, left) with jitter per subject, and set in a
torso of soft tissue with lungs, a spine and the descending aorta. Labels follow cardiolab.io.volume:
1 aorta, 2 LA, 3 RA, 4 myocardium, 5 LV, 6 RV (the descending aorta is labelled aorta too).

CT-like intensities are Hounsfield units of a contrast-enhanced scan (left heart brighter than right),
blurred by a voxel-sized point spread, with noise, clipped to +-1000 and scaled to [-1, 1]. MR-like
("mr") gives bright blood and dark myocardium on [-1, 1]. Each subject depends only on (seed, i).

Coordinates: arrays are (X, Y, Z) as in NIfTI; world positions in mm from the field-of-view centre,
X right -> left, Y posterior -> anterior, Z inferior -> superior.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from cardiolab.core import COHORT_FILE, CardiolabError, atomic_path, read_stamp, up_to_date, write_json
from cardiolab.io.volume import VolumeSubject, write_labels, write_volume_subject
from cardiolab.profiles import Profile

log = logging.getLogger(__name__)

FOV_MM = (192.0, 192.0, 160.0)   # default field of view; spacing = FOV / size when not given
MIN_FOV_MM = 140.0               # the heart spans ~130 mm: a smaller field of view cuts structures off
HU_CLIP = 1000.0                 # CT: HU clipped to +-1000, then / 1000 -> [-1, 1]
MODALITIES = ("ct", "mr")
SLAB = 32                        # z slices painted at a time
AORTA, LA, RA, MYO, LV, RV = 1, 2, 3, 4, 5, 6

# Tissue intensities: CT in HU (contrast in the blood pools is drawn per subject), MR on [0, 1] (bSSFP-like).
CT_HU = dict(air=-1000.0, lung=-850.0, soft=40.0, bone=700.0, myo=(80.0, 130.0), left_blood=(280.0, 450.0),
             right_ratio=(0.55, 0.85), noise=(15.0, 35.0))
MR = dict(air=0.0, lung=0.05, soft=0.35, bone=0.2, myo=0.22, blood=0.9, noise=0.03)


def _rotation(u: np.ndarray) -> np.ndarray:
    """(3, 3) matrix whose columns are the heart frame (u, v, w) in world coordinates, u the long axis."""
    u = u / np.linalg.norm(u)
    v = np.cross([0.0, 0.0, 1.0], u)
    v /= np.linalg.norm(v)
    return np.stack([u, v, np.cross(u, v)], axis=1)


def sample_anatomy(rng: np.random.Generator) -> dict:
    """Random shape parameters of one heart (mm, radians)."""
    s = rng.uniform(0.85, 1.1)                                     # overall heart size
    axis = np.array([0.55, 0.6, -0.55]) + rng.uniform(-0.12, 0.12, 3)   # apex: left, anterior, inferior
    return dict(
        centre=np.array([12.0, 10.0, -5.0]) + rng.uniform(-6, 6, 3),
        frame=_rotation(axis),
        base=-22.0 * s,                                           # base plane at u = base
        lv=np.array([45.0, 22.0, 22.0]) * s * rng.uniform(0.9, 1.15, 3),     # cavity semi-axes (u, v, w)
        lv_centre=np.array([8.0, 8.0, 0.0]) * s,
        wall=rng.uniform(7.0, 12.0) * s,
        rv=np.array([40.0, 22.0, 30.0]) * s * rng.uniform(0.9, 1.15, 3),
        rv_centre=np.array([2.0, -20.0, 6.0]) * s,
        la=np.array([22.0, 20.0, 18.0]) * s * rng.uniform(0.85, 1.15, 3),
        la_centre=np.array([-42.0, 12.0, -14.0]) * s,
        ra=np.array([24.0, 20.0, 20.0]) * s * rng.uniform(0.85, 1.15, 3),
        ra_centre=np.array([-38.0, -26.0, 4.0]) * s,
        aorta_r=rng.uniform(11.0, 15.0) * s,
        aorta_root=np.array([-24.0, -4.0, 14.0]) * s,
        aorta_len=rng.uniform(45.0, 60.0) * s,
        descending=np.array([25.0, -55.0]) + rng.uniform(-5, 5, 2),   # (x, y) of the descending aorta
        descending_r=rng.uniform(9.0, 12.0),
    )


def _ellipsoid(local: np.ndarray, centre: np.ndarray, semi: np.ndarray) -> np.ndarray:
    """local (3, ...) heart-frame points -> boolean mask inside the ellipsoid."""
    d = (local - centre.reshape(3, *[1] * (local.ndim - 1))) / semi.reshape(3, *[1] * (local.ndim - 1))
    return (d ** 2).sum(0) <= 1.0


def paint_labels(a: dict, world: np.ndarray) -> np.ndarray:
    """world (3, X, Y, Z) mm -> labels (X, Y, Z) uint8; later structures overwrite earlier ones."""
    c = a["centre"].reshape(3, 1, 1, 1)
    local = np.einsum("ji,j...->i...", a["frame"], world - c)      # (3, X, Y, Z) in the heart frame
    u = local[0]
    below, above = u >= a["base"], u < a["base"]
    labels = np.zeros(world.shape[1:], np.uint8)
    # ascending aorta: a cylinder from the outflow tract going up (world +Z), then the descending one
    root = a["centre"] + a["frame"] @ a["aorta_root"]
    rel = world - root.reshape(3, 1, 1, 1)
    asc = (rel[0] ** 2 + rel[1] ** 2 <= a["aorta_r"] ** 2) & (rel[2] >= -a["aorta_r"]) & (rel[2] <= a["aorta_len"])
    dx, dy = world[0] - a["descending"][0], world[1] - a["descending"][1]
    labels[asc | (dx ** 2 + dy ** 2 <= a["descending_r"] ** 2)] = AORTA
    labels[_ellipsoid(local, a["la_centre"], a["la"]) & above] = LA
    labels[_ellipsoid(local, a["ra_centre"], a["ra"]) & above] = RA
    labels[_ellipsoid(local, a["rv_centre"], a["rv"]) & below] = RV
    labels[_ellipsoid(local, a["lv_centre"], a["lv"] + a["wall"]) & below] = MYO
    labels[_ellipsoid(local, a["lv_centre"], a["lv"]) & below] = LV
    return labels


def _torso(plane: np.ndarray) -> dict[str, np.ndarray]:
    """plane (3, X, Y, 1) mm -> boolean masks (X, Y, 1) of body, lungs and spine (the same on every slice)."""
    x, y = plane[0], plane[1]
    body = (x / 140.0) ** 2 + (y / 105.0) ** 2 <= 1.0
    lungs = (((np.abs(x) - 62.0) / 48.0) ** 2 + (y / 75.0) ** 2 <= 1.0) & body
    spine = x ** 2 + (y + 80.0) ** 2 <= 16.0 ** 2
    return dict(body=body, lungs=lungs, spine=spine)


def render(labels: np.ndarray, plane: np.ndarray, rng: np.random.Generator, modality: str) -> np.ndarray:
    """Labels (X, Y, Z) and the in-plane grid plane (3, X, Y, 1) -> image (X, Y, Z) float32 in [-1, 1]."""
    t = _torso(plane)
    heart = labels > 0
    if modality == "ct":
        left = rng.uniform(*CT_HU["left_blood"])
        right = left * rng.uniform(*CT_HU["right_ratio"])
        lut = np.array([0.0, left, left, right, rng.uniform(*CT_HU["myo"]), left, right], np.float32)
        tissue, noise, scale = CT_HU, rng.uniform(*CT_HU["noise"]), HU_CLIP
    else:
        lut = np.array([0.0, MR["blood"], MR["blood"], MR["blood"], MR["myo"], MR["blood"], MR["blood"]], np.float32)
        tissue, noise, scale = MR, MR["noise"], 1.0
    body = np.select([t["spine"], t["lungs"], t["body"]], [tissue["bone"], tissue["lung"], tissue["soft"]],
                     tissue["air"]).astype(np.float32)                    # (X, Y, 1)
    img = np.where(heart, lut[labels], body)                              # (X, Y, Z)
    # point spread of about half a voxel, so edges have partial-volume values as in a real scan
    img = gaussian_filter(img, sigma=0.5, mode="nearest")
    img += noise * rng.standard_normal(img.shape, dtype=np.float32)
    if modality == "ct":
        return np.clip(img, -HU_CLIP, HU_CLIP) / scale
    return np.clip(2.0 * img - 1.0, -1.0, 1.0)


def world_grid(size: tuple[int, int, int], spacing: tuple[float, float, float],
               z: slice = slice(None)) -> np.ndarray:
    """(3, X, Y, z) float32 voxel-centre positions in mm from the field-of-view centre, for slices `z`."""
    axes = [((np.arange(n) - (n - 1) / 2) * s).astype(np.float32) for n, s in zip(size, spacing)]
    return np.stack(np.meshgrid(axes[0], axes[1], axes[2][z], indexing="ij"))


def _geometry(size, spacing) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    size = tuple(int(n) for n in size)
    if len(size) != 3 or any(n < 8 for n in size):
        raise CardiolabError(f"phantom3d: size must be three sizes >= 8 (X, Y, Z), got {size}")
    if spacing is None:
        spacing = tuple(f / n for f, n in zip(FOV_MM, size))
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or any(not s > 0 for s in spacing):
        raise CardiolabError(f"phantom3d: spacing must be three positive mm values, got {spacing}")
    fov = tuple(n * s for n, s in zip(size, spacing))
    if min(fov) < MIN_FOV_MM:
        raise CardiolabError(f"phantom3d: size x spacing = {tuple(round(f) for f in fov)} mm; every axis needs "
                             f">= {MIN_FOV_MM:.0f} mm to hold the heart (raise spacing or size)")
    return size, spacing


def make_volume(index: int, seed: int = 0, size: tuple[int, int, int] = (128, 128, 64),
                spacing: tuple[float, float, float] | None = None, modality: str = "ct") -> VolumeSubject:
    """Subject `index` of the cohort drawn with `seed`: image (X, Y, Z) in [-1, 1] and mask (X, Y, Z) 0-6.

    spacing: (sx, sy, sz) mm; None spreads FOV_MM over `size`. modality: 'ct' or 'mr'.
    """
    if modality not in MODALITIES:
        raise CardiolabError(f"phantom3d: modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    size, spacing = _geometry(size, spacing)
    rng = np.random.default_rng([int(seed), int(index)])
    anatomy = sample_anatomy(rng)
    # painted SLAB slices at a time: the (3, X, Y, slab) coordinate arrays stay small at 512x512x256
    labels = np.concatenate([paint_labels(anatomy, world_grid(size, spacing, slice(z, z + SLAB)))
                             for z in range(0, size[2], SLAB)], axis=2)
    image = render(labels, world_grid(size, spacing, slice(0, 1)), rng, modality).astype(np.float32)
    return VolumeSubject(id=f"volume{index + 1:03d}", image=image, mask=labels, affine=np.diag([*spacing, 1.0]))


def generate_volume_cohort(out: str | os.PathLike, n: int, seed: int = 0, size: tuple[int, int, int] = (128, 128, 64),
                           spacing: tuple[float, float, float] | None = None, modality: str = "ct") -> list[Path]:
    """Write subjects 0..n-1 into `out` in the volume layout (with labels.json); returns the subject folders."""
    if n < 1:
        raise CardiolabError(f"phantom3d: --subjects must be >= 1, got {n}")
    _geometry(size, spacing)
    paths = [write_volume_subject(out, make_volume(i, seed, size, spacing, modality)) for i in range(n)]
    write_labels(out)
    return paths


def ensure_volume_cohort(profile: Profile, seed: int = 0) -> Path:
    """The profile's volume cohort (profile.volume_dir) from profile.highres, generated if missing or stale."""
    h = profile.highres
    params = {"subjects": h.subjects, "seed": seed, "size": list(h.size), "modality": h.modality}
    root = Path(profile.volume_dir)
    if up_to_date(root, read_stamp(root / COHORT_FILE), params):
        return root
    with atomic_path(root) as tmp:   # a crash never leaves a half-written cohort behind
        generate_volume_cohort(tmp, h.subjects, seed=seed, size=h.size, modality=h.modality)
        write_json(tmp / COHORT_FILE, params)
    log.info("phantom3d: %d volumes -> %s", h.subjects, root)
    return root
