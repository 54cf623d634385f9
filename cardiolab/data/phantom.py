"""A 4D short-axis cine phantom standing in for ACDC: geometry, motion, bSSFP appearance, ground truth.

A subject is a truncated prolate-spheroid left ventricle (blood pool inside a myocardial wall) with a
crescent right ventricle on its septal side, cut by D short-axis slices from base to apex and moved
through one heart beat of T frames. Every boundary is a polar radius table r(theta) per slice and frame,
so rasterising is one vectorised comparison of each pixel's distance to the LV centre with the table at
its angle, and the same tables give analytic areas (0.5 * integral of r^2 dtheta), which fix the motion:

- the cavity follows a physiologic volume curve (fast ejection, rapid filling, diastasis, atrial kick);
  its radius per frame is solved from the target volume, so the EF is the one the group drew;
- the wall thickens in systole by exactly enough to keep the myocardial volume constant;
- the RV crescent is scaled to its own volume curve; the base descends towards the fixed apex.

Ground truth (phantom_truth.json) is measured on the rasterised labels, so EF recomputed from the
written labels matches it; the analytic volumes sit beside it. Volumes in ml, EF in %, mass in g.
Groups follow ACDC: NOR, DCM (dilated, EF < 40 %), HCM (thick wall, EF > 55 %), MINF (akinetic
sector, reduced EF), ARV (dilated, poorly contracting RV).

Coordinates: a subject's image is (X, Y, Z, T) as in NIfTI; internally frames are built as (D, X, Y)
with D = Z slices from base (0) to apex. In-plane positions are in mm from the image centre.

Orientation (see data/README.md): the affine is an oblique short-axis plane in RAS+ world coordinates
(`sax_axes`): the slice axis runs base -> apex (left, anterior, inferior), voxel +x points mostly
anterior (and right), voxel +y mostly superior (and left). The RV lies anterior and to the patient's right
of the LV, which puts it at ~110 deg (0 deg = +y, 90 deg = +x) from the LV in the voxel grid, as real ACDC
cines give after `prepare`. The in-plane axes already point along increasing world axes, so
`prepare.canonical_inplane` leaves the arrays as they are.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from einops import rearrange
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from cardiolab.core import CardiolabError, atomic_path, read_json, write_json
from cardiolab.io.cohort import Subject, write_subject

log = logging.getLogger(__name__)

VERSION = 2                      # bump when the generator's output changes; ensure_phantom then regenerates
GROUPS = ("NOR", "DCM", "HCM", "MINF", "ARV")
TRUTH_FILE = "phantom_truth.json"
COHORT_FILE = "cohort.json"
N_THETA = 360                    # polar table bins: 1 degree is < 1 mm of arc at the largest radii
THETA = -np.pi + (np.arange(N_THETA) + 0.5) * (2 * np.pi / N_THETA)
D_THETA = 2 * np.pi / N_THETA
MYO_DENSITY = 1.05               # g/ml, LV mass = ED myocardial volume * density

# Uniform ranges per group. radius: ED endocardial radius at the base (mm, before body-size scaling);
# wall: ED wall thickness (mm); ef, rv_ef: %; length: ED base-apex length (mm); rv: RV crescent depth
# at the base (mm); rv_span: crescent half-angle (deg); filling / kick: share of the stroke volume
# refilled by rapid filling (E wave) / the atria (A wave); hr: heart rate (bpm).
GROUP_RANGES = {
    "NOR": dict(radius=(25, 29), wall=(8, 10.5), ef=(57, 68), length=(82, 94), rv=(24, 32), rv_span=(65, 80),
                rv_ef=(50, 62), filling=(0.65, 0.78), kick=(0.12, 0.2), hr=(55, 75)),
    "DCM": dict(radius=(32, 37), wall=(6, 8), ef=(15, 34), length=(92, 105), rv=(22, 30), rv_span=(65, 80),
                rv_ef=(35, 55), filling=(0.6, 0.75), kick=(0.1, 0.18), hr=(65, 90)),
    "HCM": dict(radius=(19, 23), wall=(14, 19), ef=(62, 76), length=(78, 90), rv=(20, 28), rv_span=(62, 75),
                rv_ef=(50, 65), filling=(0.4, 0.55), kick=(0.3, 0.4), hr=(55, 75)),
    "MINF": dict(radius=(28, 33), wall=(8, 10), ef=(25, 40), length=(85, 98), rv=(22, 30), rv_span=(65, 80),
                 rv_ef=(40, 58), filling=(0.5, 0.68), kick=(0.15, 0.25), hr=(60, 85)),
    "ARV": dict(radius=(24, 28), wall=(7.5, 10), ef=(50, 64), length=(82, 94), rv=(34, 44), rv_span=(80, 95),
                rv_ef=(22, 40), filling=(0.6, 0.75), kick=(0.12, 0.2), hr=(60, 85)),
}
MALE_FRACTION = {"NOR": 0.5, "DCM": 0.7, "HCM": 0.7, "MINF": 0.8, "ARV": 0.6}
AGE_RANGE = {"NOR": (20, 70), "DCM": (30, 75), "HCM": (20, 70), "MINF": (45, 85), "ARV": (18, 60)}

# Relative bSSFP signal: bright blood, dark myocardium and muscle, bright fat, black lungs and air.
SIGNAL = dict(blood=1.0, myo=0.28, fat=0.85, muscle=0.3, tissue=0.42, lung=0.06, liver=0.45)
SCANNER_SCALE = 1000.0           # written as integer-valued magnitudes like a scanner's

# World (RAS+) geometry of the short-axis stack. The LV long axis points from base to apex towards the
# patient's left, anterior and inferior; the RV lies to the right and anterior of the LV. The in-plane voxel
# axes are turned so that, once `prepare` has made them point along increasing world axes, the RV sits at
# RV_ANGLE_DEG from the LV as measured on real ACDC (median 110 deg, 10-90 % range 51-137 deg).
LONG_AXIS_RAS = (-0.6, 0.55, -0.6)
RV_DIRECTION_RAS = (1.0, 1.0, 0.0)
RV_ANGLE_DEG = 110.0             # image angle: 0 deg = +y (column), 90 deg = +x (row)
SEPTUM_JITTER = 0.35             # rad, per-subject spread of the RV direction (+-20 deg)


def sax_axes() -> np.ndarray:
    """(3, 3) world unit vectors (columns) of voxel x, voxel y and the slice axis (base -> apex)."""
    n = np.asarray(LONG_AXIS_RAS, float)
    n /= np.linalg.norm(n)
    w = np.asarray(RV_DIRECTION_RAS, float)
    w -= (w @ n) * n
    w /= np.linalg.norm(w)
    p = np.cross(n, w)
    a = np.deg2rad(RV_ANGLE_DEG)
    # w = sin(a) x + cos(a) y in the voxel grid, with x and y pointing along increasing world axes
    x, y = np.sin(a) * w + np.cos(a) * p, np.cos(a) * w - np.sin(a) * p
    return np.stack([x, y, n], axis=1)


def sax_affine(size: int, spacing: float, slice_thickness: float, slices: int) -> np.ndarray:
    """Voxel -> world (mm) affine of a phantom stack, the centre of the stack at the world origin."""
    aff = np.eye(4)
    aff[:3, :3] = sax_axes() * np.array([spacing, spacing, slice_thickness])
    aff[:3, 3] = -aff[:3, :3] @ np.array([(size - 1) / 2, (size - 1) / 2, (slices - 1) / 2])
    return aff


def septum_angle() -> float:
    """Polar angle (rad, atan2(dy, dx) in the voxel grid) of the LV -> RV direction for the mean subject."""
    return float(np.pi / 2 - np.deg2rad(RV_ANGLE_DEG))


def group_of(index: int) -> str:
    """Subject i's group: the five ACDC groups in turn, so any 5 consecutive subjects cover all."""
    return GROUPS[index % len(GROUPS)]


def sample_attributes(group: str, rng: np.random.Generator) -> dict:
    """Info.cfg attributes: Group, Height (cm), Weight (kg), Age (years), Sex (M/F)."""
    sex = "M" if rng.random() < MALE_FRACTION[group] else "F"
    height = float(np.clip(rng.normal(176, 7) if sex == "M" else rng.normal(163, 6), 148, 200))
    bmi = float(np.clip(rng.normal(26, 4), 18, 40))
    age = int(rng.uniform(*AGE_RANGE[group]))
    return {"Group": group, "Height": round(height), "Weight": round(bmi * (height / 100) ** 2), "Age": age,
            "Sex": sex}


def sample_heart(group: str, attrs: dict, rng: np.random.Generator, slices: int) -> dict:
    """Draw one subject's heart: sizes scale with body surface area, shape/pose/motion are random."""
    ranges = GROUP_RANGES[group]
    u = {k: float(rng.uniform(*v)) for k, v in ranges.items()}
    male = attrs["Sex"] == "M"
    bsa = np.sqrt(attrs["Height"] * attrs["Weight"] / 3600.0)    # Mosteller, m^2
    body = float((bsa / 1.9) ** 0.35 * (1.03 if male else 0.97))
    length = u["length"] * body
    # Slices cover base to apex; ACDC-like 8-10 mm thick, so few slices means a shorter heart.
    thickness = round(float(np.clip(length / (slices + 0.4), 8.0, 10.0)), 1)
    septum = float(septum_angle() + rng.uniform(-SEPTUM_JITTER, SEPTUM_JITTER))   # LV centre -> RV direction
    p = dict(
        radius=u["radius"] * body, wall=u["wall"] * (1.05 if male else 0.95), ef=u["ef"], rv=u["rv"] * body,
        rv_span=float(np.deg2rad(u["rv_span"])), rv_ef=u["rv_ef"], filling=u["filling"], kick=u["kick"],
        heart_rate=u["hr"], slice_thickness=thickness,
        rv_reach=float(rng.uniform(0.72, 0.85)),                   # RV ends at this fraction base -> apex
        eccentricity=float(rng.uniform(1.0, 1.15)), ellipse_angle=float(rng.uniform(0, np.pi)),
        harmonics=rng.uniform(0, 0.03, 3).tolist(), harmonic_phases=rng.uniform(0, 2 * np.pi, 3).tolist(),
        septum=septum,
        offset=rng.uniform(-6, 6, 2).tolist(),                     # mm, LV centre from the image centre
        tilt=rng.uniform(-1.5, 1.5, 2).tolist(),                   # mm per slice: long axis not normal to slices
        drift=rng.uniform(-2, 2, 2).tolist(),                      # mm, in-plane shift at ES
        base_descent=float(min(rng.uniform(10, 15) * u["ef"] / 62.0, 0.85 * thickness)),
        es_fraction=float(rng.uniform(0.32, 0.38)),
        asymmetry=float(rng.uniform(0.2, 0.6)) if group == "HCM" else 0.0,   # septal hypertrophy
        snr=float(rng.uniform(15, 30)),
        infarct=None,
    )
    if group == "MINF":   # transmural infarct: a sector from mid/apical slices to the apex, akinetic and thinned
        p["infarct"] = dict(centre=float(septum + rng.choice([-1, 1]) * rng.uniform(np.pi / 3, np.pi)),
                            half_width=float(np.deg2rad(rng.uniform(35, 60))), start=float(rng.uniform(0.2, 0.5)))
    return p


def contraction_curve(frames: int, es: int, filling: float, kick: float) -> np.ndarray:
    """Share of the stroke volume ejected at each frame, (T,): 0 at ED (frame 0), 1 exactly at frame `es`.

    Systole ejects front-loaded (fast ejection); diastole refills `filling` in the rapid-filling phase
    (~200 ms), a little during diastasis, and `kick` by atrial contraction right before the next ED.
    """
    phi = np.arange(frames) / frames
    phi_es = es / frames
    systole = 0.5 * (1 - np.cos(np.pi * np.clip(phi / phi_es, 0, 1) ** 0.75))
    e_end, a_start = phi_es + 0.2, 0.82
    refill = (filling * _smoothstep((phi - phi_es) / (e_end - phi_es))
              + (1 - filling - kick) * _smoothstep((phi - e_end) / (a_start - e_end))
              + kick * _smoothstep((phi - a_start) / (1.0 - a_start)))
    return np.where(phi <= phi_es, systole, 1 - refill)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


def _angle_diff(a, b):
    return (np.asarray(a) - b + np.pi) % (2 * np.pi) - np.pi


def _solve_quadratic(a2, a1, a0):
    """Positive root of a2 x^2 + a1 x + a0 = 0 (a2 > 0, a0 <= 0)."""
    return (-a1 + np.sqrt(np.maximum(a1 * a1 - 4 * a2 * a0, 0))) / (2 * a2)


def heart_tables(p: dict, slices: int, c: np.ndarray) -> dict:
    """Polar boundary tables of one beat, each (D, T, N_THETA) in mm, plus LV centres (D, T, 2) in mm.

    r_endo / r_epi: LV endo- and epicardial radius; tau: RV crescent depth beyond the epicardium.
    c: (T,) contraction curve. Volumes are sums of slice areas times the slice thickness.
    """
    D, sz = slices, p["slice_thickness"]
    z = (np.arange(D) + 0.5) * sz                      # slice centres from the top of the stack
    z_apex = (D - 0.2) * sz                            # the apex stays put; the base moves towards it
    z_base = -0.6 * sz + p["base_descent"] * c         # (T,)
    w = (z[:, None] - z_base) / (z_apex - z_base)      # (D, T): 0 at the base, 1 at the apex
    h = np.sqrt(np.clip(1 - w**2, 0, None))            # prolate spheroid profile

    # In-plane shape: a rotated ellipse of area pi r^2 with small harmonic wobble.
    ang = THETA - p["ellipse_angle"]
    e = p["eccentricity"]
    shape = 1 / np.sqrt((np.cos(ang) / e) ** 2 + (np.sin(ang) * e) ** 2)
    for n, (a, ph) in enumerate(zip(p["harmonics"], p["harmonic_phases"]), start=2):
        shape = shape * (1 + a * np.cos(n * THETA + ph))

    m = np.zeros((D, N_THETA))                         # akinetic (infarcted) share of each angle
    if p["infarct"]:
        inf = p["infarct"]
        sector = np.clip((inf["half_width"] - np.abs(_angle_diff(THETA, inf["centre"]))) / np.deg2rad(15), 0, 1)
        m = np.clip((w[:, :1] - inf["start"]) / 0.1, 0, 1) * sector

    # Cavity: r = R(t) u + v, v frozen at its ED radius where akinetic; solve R(t) for the target volume.
    u = shape * h[..., None] * (1 - m[:, None])
    v = p["radius"] * shape * h[:, :1, None] * m[:, None]
    a2, a1, a0 = (0.5 * D_THETA * (u * u).sum((0, 2)), D_THETA * (u * v).sum((0, 2)),
                  0.5 * D_THETA * (v * v).sum((0, 2)))
    area_ed = a2[0] * p["radius"] ** 2 + a1[0] * p["radius"] + a0[0]
    R = _solve_quadratic(a2, a1, a0 - area_ed * (1 - p["ef"] / 100 * c))
    r_endo = R[:, None] * u + v

    # Wall: thickness th0 (m + (1 - m) g(t)); g solved so the myocardial area sum stays at its ED value.
    septal = np.clip(np.cos(_angle_diff(THETA, p["septum"])), 0, None)
    th0 = p["wall"] * (1 - 0.3 * w[:, :1, None] ** 2) * (1 + p["asymmetry"] * septal) * (1 - 0.35 * m[:, None])
    a, b = th0 * m[:, None], th0 * (1 - m[:, None])
    m0 = D_THETA * (r_endo * a + a * a / 2).sum((0, 2))
    m1 = D_THETA * (r_endo * b + a * b).sum((0, 2))
    m2 = D_THETA * np.broadcast_to(b * b / 2, r_endo.shape).sum((0, 2))
    g = _solve_quadratic(m2, m1, m0 - (m0[0] + m1[0] + m2[0]))
    r_epi = r_endo + a + b * g[:, None]

    # RV: a crescent on the septal side, depth tau = s(t) * profile; s solved for the RV volume curve.
    bump = np.clip(1 - (_angle_diff(THETA, p["septum"]) / p["rv_span"]) ** 2, 0, None) ** 0.8
    reach = np.sqrt(np.clip(1 - (w / p["rv_reach"]) ** 2, 0, None))
    tau_shape = p["rv"] * reach[..., None] * bump
    b1, b2 = D_THETA * (r_epi * tau_shape).sum((0, 2)), 0.5 * D_THETA * (tau_shape**2).sum((0, 2))
    s = _solve_quadratic(b2, b1, -(b1[0] + b2[0]) * (1 - p["rv_ef"] / 100 * c))
    tau = s[:, None] * tau_shape

    k = np.arange(D)[:, None, None] - (D - 1) / 2
    centre = np.asarray(p["offset"]) + k * np.asarray(p["tilt"]) + c[None, :, None] * np.asarray(p["drift"])
    analytic = {name: sz / 1000 * (0.5 * D_THETA * val).sum((0, 2)) for name, val in
                (("LV", r_endo**2), ("MYO", r_epi**2 - r_endo**2), ("RV", (r_epi + tau) ** 2 - r_epi**2))}
    return dict(r_endo=r_endo, r_epi=r_epi, tau=tau, centre=centre, analytic_ml=analytic)


def _smooth_noise(rng: np.random.Generator, shape: tuple, sigma_px: float) -> np.ndarray:
    """Unit-variance smooth random field, smoothed in-plane only: (D, X, Y)."""
    f = gaussian_filter(rng.standard_normal(shape), sigma=(0, sigma_px, sigma_px), mode="wrap")
    return f / (f.std() + 1e-8)


def _occupancy(signed_mm: np.ndarray, spacing: float) -> np.ndarray:
    """Partial-volume fraction of a pixel whose centre lies `signed_mm` inside a boundary."""
    return np.clip(0.5 + signed_mm / spacing, 0, 1)


def _blend(img: np.ndarray, occ: np.ndarray, value) -> np.ndarray:
    return img + occ * (value - img)


def _blob(x, y, cx, cy, ax, ay, wobble, phases) -> np.ndarray:
    """Signed distance (mm, positive inside) to an ellipse with a wobbly boundary."""
    dx, dy = x - cx, y - cy
    ang = np.arctan2(dy, dx)
    rad = 1 / np.sqrt((np.cos(ang) / ax) ** 2 + (np.sin(ang) / ay) ** 2)
    for n, ph in enumerate(phases, start=2):
        rad = rad * (1 + wobble * np.cos(n * ang + ph))
    return rad - np.hypot(dx, dy)


def background(p: dict, rng: np.random.Generator, slices: int, size: int, spacing: float) -> np.ndarray:
    """Static chest around the heart, (D, X, Y): body with fat and muscle layers, lungs, liver, texture."""
    D = slices
    xs = (np.arange(size) - (size - 1) / 2) * spacing
    x, y = xs[None, :, None], xs[None, None, :]
    k = np.arange(D)[:, None, None] / max(D - 1, 1)
    tex = _smooth_noise(rng, (D, size, size), 6.0 / spacing)
    hx, hy = p["offset"]
    # Body: an ellipse a bit larger than the field of view, skin fat then chest wall muscle.
    body_a, body_b, body_y = rng.uniform(150, 175), rng.uniform(110, 130), rng.uniform(5, 25)
    depth = _blob(x, y, 0.0, body_y, body_a, body_b, 0.02, rng.uniform(0, 2 * np.pi, 2))
    fat_mm, muscle_mm = rng.uniform(8, 15), rng.uniform(6, 12)
    img = SIGNAL["tissue"] * (1 + 0.15 * tex)
    img = _blend(img, _occupancy(-(depth - fat_mm - muscle_mm), spacing), SIGNAL["muscle"] * (1 + 0.1 * tex))
    img = _blend(img, _occupancy(-(depth - fat_mm), spacing), SIGNAL["fat"] * (1 + 0.05 * tex))
    # Lungs either side of the heart, the liver below it on apical slices.
    for side in (-1, 1):
        lung = _blob(x, y, hx + side * rng.uniform(65, 80), hy + rng.uniform(-5, 15), rng.uniform(28, 38),
                     rng.uniform(45, 60), 0.1, rng.uniform(0, 2 * np.pi, 3))
        img = _blend(img, _occupancy(lung, spacing), SIGNAL["lung"] * (1 + 0.3 * tex))
    liver = _blob(x, y, hx + rng.uniform(-40, -20), hy + rng.uniform(60, 75), 60 * (0.3 + 0.7 * k),
                  45 * (0.3 + 0.7 * k), 0.05, rng.uniform(0, 2 * np.pi, 2))
    img = _blend(img, _occupancy(liver, spacing) * (k > 0.3), SIGNAL["liver"] * (1 + 0.05 * tex))
    return _blend(img, _occupancy(-depth, spacing), 0.0)        # air outside the body


def render(p: dict, tables: dict, bg: np.ndarray, rng: np.random.Generator, size: int, spacing: float
           ) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise the beat: labels (T, D, X, Y) uint8 and the bSSFP-like image (T, D, X, Y) float32."""
    # float32 throughout: half the memory traffic of float64, far below the noise in precision.
    r_endo, r_epi, tau, centre = (tables[k].astype(np.float32) for k in ("r_endo", "r_epi", "tau", "centre"))
    D, T, _ = r_endo.shape
    xs = ((np.arange(size) - (size - 1) / 2) * spacing).astype(np.float32)
    fat_mm = np.clip(2.5 * _smooth_noise(rng, (1, 1, N_THETA), 8)[0, 0] + 1.0, 0, 4).astype(np.float32)
    blood_tex = (1 + 0.04 * _smooth_noise(rng, (D, size, size), 1.5)).astype(np.float32)
    bg = bg.astype(np.float32)
    spacing = np.float32(spacing)
    bias = np.exp(rng.uniform(-0.3, 0.3) * xs[:, None] / xs[-1] + rng.uniform(-0.3, 0.3) * xs[None, :] / xs[-1]
                  - rng.uniform(0, 0.3) * (xs[:, None] ** 2 + xs[None, :] ** 2) / xs[-1] ** 2).astype(np.float32)
    labels = np.zeros((T, D, size, size), np.uint8)
    image = np.zeros((T, D, size, size), np.float32)
    for t in range(T):
        dx = xs[None, :, None] - centre[:, t, 0, None, None]                 # (D, X, 1)
        dy = xs[None, None, :] - centre[:, t, 1, None, None]                 # (D, 1, Y)
        dist = np.hypot(dx, dy)                                              # (D, X, Y)
        idx = ((np.arctan2(dy, dx) + np.float32(np.pi)) * np.float32(1 / D_THETA)).astype(np.int64) % N_THETA
        flat = idx.reshape(D, -1)

        def at(tab):   # table value at each pixel's angle: (D, X, Y)
            return np.take_along_axis(tab[:, t], flat, axis=1).reshape(D, size, size)

        s_endo, s_epi, depth = at(r_endo) - dist, at(r_epi) - dist, at(tau)
        s_rv, has_rv = s_epi + depth, depth > 0
        rim = 2.5 * np.clip(depth / 2.0, 0, 1)                               # RV free wall, mm
        lab = labels[t]
        lab[(s_rv > 0) & has_rv] = 1
        lab[s_epi > 0] = 2
        lab[s_endo > 0] = 3
        img = _blend(bg, _occupancy(s_rv + rim + fat_mm[idx], spacing), SIGNAL["fat"])
        img = _blend(img, _occupancy(s_rv + rim, spacing) * has_rv, SIGNAL["muscle"])
        img = _blend(img, _occupancy(s_rv, spacing) * has_rv, SIGNAL["blood"] * blood_tex)
        img = _blend(img, _occupancy(s_epi, spacing), SIGNAL["myo"])
        img = _blend(img, _occupancy(s_endo, spacing), SIGNAL["blood"] * blood_tex)
        image[t] = gaussian_filter(img * bias, sigma=(0, 0.5, 0.5), truncate=2.0)   # mild point-spread blur
    sigma = np.float32(SIGNAL["blood"] / p["snr"])                          # SNR of the blood pool
    noisy = np.hypot(image + sigma * rng.standard_normal(image.shape, np.float32),
                     sigma * rng.standard_normal(image.shape, np.float32))   # Rician magnitude
    return labels, np.round(noisy * SCANNER_SCALE).astype(np.float32)


def _insertion_points(tables: dict, p: dict, labels: np.ndarray, frame: int, size: int, spacing: float) -> list:
    """The two RV insertion points per slice, voxel (x, y), where the crescent meets the epicardium; None
    on slices without RV."""
    out = []
    for k in range(labels.shape[1]):
        if not (labels[frame, k] == 1).any():
            out.append(None)
            continue
        pts = []
        for sign in (-1, 1):
            theta = p["septum"] + sign * p["rv_span"]
            i = int(((theta + np.pi) % (2 * np.pi)) / D_THETA) % N_THETA
            r = tables["r_epi"][k, frame, i]
            xy = tables["centre"][k, frame] + r * np.array([np.cos(THETA[i]), np.sin(THETA[i])])
            pts.append([round(float(v / spacing + (size - 1) / 2), 2) for v in xy])
        out.append(pts)
    return out


def _check_shape(size: int, spacing: float, slices: int, frames: int) -> None:
    if size < 16 or slices < 2 or frames < 4 or not spacing > 0:
        raise CardiolabError(f"phantom: need size >= 16, slices >= 2, frames >= 4, spacing > 0; got size={size}, "
                             f"slices={slices}, frames={frames}, spacing={spacing}")


def make_subject(index: int, seed: int = 0, size: int = 128, spacing: float = 1.5, slices: int = 8,
                 frames: int = 20, group: str | None = None, snr: float | None = None) -> tuple[Subject, dict]:
    """Generate phantom subject `index` of the cohort drawn with `seed`; depends only on (seed, index).

    size: in-plane pixels; spacing: in-plane mm; slices: D (base -> apex); frames: T over one beat.
    group: override the group (default: `group_of(index)`); snr: override the blood-pool SNR.
    Returns the Subject (image (X, Y, Z, T), label_series (X, Y, Z, T), ED = frame 0) and its truth dict.
    """
    _check_shape(size, spacing, slices, frames)
    group = group or group_of(index)
    if group not in GROUPS:
        raise CardiolabError(f"phantom: unknown group {group!r}: choose one of {', '.join(GROUPS)}")
    rng = np.random.default_rng([seed, index])
    attrs = sample_attributes(group, rng)
    p = sample_heart(group, attrs, rng, slices)
    if snr is not None:
        p["snr"] = float(snr)
    es = int(np.clip(round(p["es_fraction"] * frames), 1, frames - 2))
    c = contraction_curve(frames, es, p["filling"], p["kick"])
    tables = heart_tables(p, slices, c)
    bg = background(p, rng, slices, size, spacing)
    labels, image = render(p, tables, bg, rng, size, spacing)

    sz = p["slice_thickness"]
    voxel_ml = spacing * spacing * sz / 1000
    vol = {name: (labels == lab).sum((1, 2, 3)) * voxel_ml for name, lab in (("LV", 3), ("MYO", 2), ("RV", 1))}
    sid = f"patient{index + 1:03d}"
    frame_ms = 60000.0 / p["heart_rate"] / frames
    truth = dict(
        id=sid, index=index, seed=seed, group=group, generator="cardiolab.data.phantom", version=VERSION,
        ed=0, es=es, frame_ms=frame_ms, heart_rate_bpm=p["heart_rate"], spacing_mm=[spacing, spacing, sz],
        snr=p["snr"], EDV=vol["LV"][0], ESV=vol["LV"][es], SV=vol["LV"][0] - vol["LV"][es],
        EF=_ef(vol["LV"][0], vol["LV"][es]), LV_mass=MYO_DENSITY * vol["MYO"][0],
        RV_EDV=vol["RV"][0], RV_ESV=vol["RV"][es], RV_EF=_ef(vol["RV"][0], vol["RV"][es]),
        target_EF=p["ef"], target_RV_EF=p["rv_ef"],
        volumes_ml={k: v.tolist() for k, v in vol.items()},
        analytic_volumes_ml={k: v.tolist() for k, v in tables["analytic_ml"].items()},
        rv_insertion_points={"ed": _insertion_points(tables, p, labels, 0, size, spacing),
                             "es": _insertion_points(tables, p, labels, es, size, spacing)},
        contraction=c.tolist(), parameters=p,
    )
    truth = {k: (float(v) if isinstance(v, np.floating) else v) for k, v in truth.items()}
    subject = Subject(id=sid, image=rearrange(image, "t z x y -> x y z t"), affine=sax_affine(size, spacing, sz, slices),
                      frame_ms=frame_ms, ed=0, es=es, label_series=rearrange(labels, "t z x y -> x y z t"),
                      info=dict(attrs))
    return subject, truth


def _ef(edv: float, esv: float) -> float:
    """Ejection fraction in %; 0 when the chamber is too small to show at this resolution."""
    return float(100 * (edv - esv) / edv) if edv > 0 else 0.0


def write_phantom_subject(out: str | os.PathLike, index: int, seed: int = 0, **kwargs) -> Path:
    """make_subject + write_subject (ACDC layout, with phantom_truth.json); returns the subject folder."""
    subject, truth = make_subject(index, seed, **kwargs)
    return write_subject(out, subject, extra_files={TRUTH_FILE: json.dumps(truth, indent=2) + "\n"})


def _write_one(job: tuple) -> Path:
    out, index, seed, kwargs = job
    return write_phantom_subject(out, index, seed, **kwargs)


def generate_cohort(out: str | os.PathLike, n: int, seed: int = 0, size: int = 128, spacing: float = 1.5,
                    slices: int = 8, frames: int = 20, workers: int = 1) -> list[Path]:
    """Write subjects 0..n-1 into `out` (ACDC layout) plus `cohort.json` with the parameters; returns the folders.

    workers > 1 spreads subjects over processes; the output is the same since each depends on (seed, i) only.
    Phantom folders of an earlier, larger cohort in `out` are removed so the folder holds exactly this one.
    """
    if n < 1:
        raise CardiolabError(f"phantom: --subjects must be >= 1, got {n}")
    _check_shape(size, spacing, slices, frames)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CardiolabError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    kwargs = dict(size=size, spacing=spacing, slices=slices, frames=frames)
    jobs = [(out, i, seed, kwargs) for i in range(n)]
    bar = dict(total=n, desc="phantom", unit="subject")
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            paths = list(tqdm(pool.map(_write_one, jobs), **bar))
    else:
        paths = [_write_one(j) for j in tqdm(jobs, **bar)]
    keep = {p.name for p in paths}
    for stale in out.iterdir():   # only folders this generator wrote (they hold phantom_truth.json)
        if stale.is_dir() and re.fullmatch(r"patient\d{3,}", stale.name) and stale.name not in keep \
                and (stale / TRUTH_FILE).exists():
            shutil.rmtree(stale)
    write_json(out / COHORT_FILE, dict(cohort_params(n, seed, size, spacing, slices, frames),
                                       subjects=[{"id": p.name, "group": group_of(i)} for i, p in enumerate(paths)]))
    log.debug("phantom: %d subjects -> %s", n, out)
    return paths


def cohort_params(n: int, seed: int, size: int, spacing: float, slices: int, frames: int) -> dict:
    """The generation parameters stamped into cohort.json (ensure_phantom regenerates when they differ)."""
    return dict(generator="cardiolab.data.phantom", version=VERSION, n_subjects=int(n), seed=int(seed),
                size=int(size), spacing=float(spacing), slices=int(slices), frames=int(frames))


def ensure_phantom(profile, seed: int = 0, workers: int = 1) -> Path:
    """The profile's phantom cohort (profile.phantom_dir), generated from profile.data if missing or stale."""
    d = profile.data
    params = cohort_params(d.phantom_subjects, seed, d.phantom_size, d.phantom_spacing, d.phantom_slices,
                           d.phantom_frames)
    root = Path(profile.phantom_dir)
    stamp = root / COHORT_FILE
    if stamp.exists():
        try:
            old = read_json(stamp)
        except CardiolabError:
            old = {}
        if {k: old.get(k) for k in params} == params:
            return root
        log.info("phantom: %s was made with other parameters, regenerating", root)
    with atomic_path(root) as tmp:   # a crash never leaves a half-written cohort behind
        generate_cohort(tmp, d.phantom_subjects, seed=seed, size=d.phantom_size, spacing=d.phantom_spacing,
                        slices=d.phantom_slices, frames=d.phantom_frames, workers=workers)
    log.info("phantom: %d subjects -> %s", d.phantom_subjects, root)
    return root
