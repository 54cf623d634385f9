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

Sizes come from ACDC's per-group statistics (ACDC_STATS: mean, SD and range of ED volumes, EF and wall
thickness measured on ACDC's reference segmentations) and are fitted exactly (`fit_sizes`). Around the heart
`thorax` draws the chest (body wall with subcutaneous fat, lungs and liver that the beating heart pushes,
descending aorta beside the spine) and a coil bias field; the heart carries papillary muscles, trabeculae and
partial volume at base and apex; Rician noise last. `simulate` returns every intermediate layer.

Ground truth (phantom_truth.json) is measured on the rasterised labels, so EF recomputed from the
written labels matches it; the analytic volumes sit beside it. Volumes in ml, EF in %, mass in g.
RV insertion points (`rv_insertion_points`) are written for every frame and slice: the two ends of the RV
crescent on the epicardium, named by a world-coordinate rule (RVIP_RULE): the one with the larger world z
(RAS+ superior) is "anterior", the other "inferior"; null on slices without RV.
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

from cardiolab.core import COHORT_FILE, CardiolabError, atomic_path, read_json, read_stamp, up_to_date, write_json
from cardiolab.io.cohort import Subject, write_subject

log = logging.getLogger(__name__)

VERSION = 3                      # bump when the generator's output changes; ensure_phantom then regenerates
GROUPS = ("NOR", "DCM", "HCM", "MINF", "ARV")
TRUTH_FILE = "phantom_truth.json"
N_THETA = 360                    # polar table bins: 1 degree is < 1 mm of arc at the largest radii
THETA = -np.pi + (np.arange(N_THETA) + 0.5) * (2 * np.pi / N_THETA)
D_THETA = 2 * np.pi / N_THETA
MYO_DENSITY = 1.05               # g/ml, LV mass = ED myocardial volume * density

# Per-group cardiac statistics of ACDC, drawn per subject as clip(normal(mean, sd), min, max): the 100 ACDC
# training subjects (20 per group), summarised from the per-subject parameters that Khened et al. measured on
# ACDC's reference (manual) ED / ES segmentations and published with their code (M. Khened, V. A. Kollerathu,
# G. Krishnamurthi, "Fully convolutional multi-scale residual DenseNets for cardiac segmentation and automated
# cardiac diagnosis using ensemble of classifiers", Medical Image Analysis 51:21-45, 2019; file
# ACDC_Diagnosis/training_data/Cardiac_parameters_training.csv of github.com/mahendrakhened/
# Automated-Cardiac-Segmentation-and-Disease-Diagnosis at commit cfa556f; data/README.md has the table).
# Bernard et al. (IEEE TMI 37(11) 2018, sec. III) define the groups; every row lies inside those definitions.
#   lv_edv, rv_edv: ED volume (ml); ef, rv_ef: ejection fraction (%); wall: ED myocardial thickness (mm), the
#   largest per-slice mean over the stack (ED[max(mean(MWT|SA)|LA)] in that file), which the phantom gives
#   its basal slice (the wall tapers towards the apex; HCM's septal bulge is added around that mean).
#   Each entry: (mean, sd, min, max) over the group's 20 subjects.
ACDC_STATS = {
    "NOR": dict(lv_edv=(130.1, 26.4, 74.8, 169.5), ef=(60.3, 5.1, 51.5, 72.9), rv_edv=(153.2, 36.6, 79.3, 203.5),
                rv_ef=(55.1, 8.2, 41.6, 67.6), wall=(8.3, 1.1, 5.7, 9.9)),
    "DCM": dict(lv_edv=(284.6, 47.8, 194.8, 374.4), ef=(18.4, 6.7, 10.5, 30.9), rv_edv=(178.0, 67.4, 82.8, 295.1),
                rv_ef=(31.8, 17.8, 3.9, 69.5), wall=(8.6, 1.2, 6.7, 11.3)),
    "HCM": dict(lv_edv=(129.1, 35.2, 64.7, 173.9), ef=(67.4, 8.9, 50.0, 81.9), rv_edv=(118.3, 34.2, 59.9, 172.9),
                rv_ef=(59.8, 11.2, 40.2, 85.9), wall=(12.9, 2.0, 9.4, 17.0)),
    "MINF": dict(lv_edv=(172.2, 42.7, 103.6, 260.2), ef=(31.0, 8.1, 16.4, 43.6), rv_edv=(119.1, 36.2, 47.4, 179.7),
                 rv_ef=(55.5, 10.5, 39.1, 72.6), wall=(9.1, 1.2, 7.2, 12.2)),
    "ARV": dict(lv_edv=(107.1, 37.9, 49.3, 171.9), ef=(54.7, 6.1, 42.6, 62.8), rv_edv=(196.3, 48.8, 92.2, 284.1),
                rv_ef=(31.4, 15.1, 1.9, 60.4), wall=(7.4, 1.5, 5.0, 10.0)),
}
# The same source's ED myocardial mass (g), mean (sd): NOR 97.6 (24.6), DCM 162.1 (30.7), HCM 168.6 (52.5),
# MINF 117.1 (17.8), ARV 73.5 (24.3). Not drawn: the phantom's mass follows from its volume and wall.
ACDC_MASS_G = {"NOR": 97.6, "DCM": 162.1, "HCM": 168.6, "MINF": 117.1, "ARV": 73.5}
# Beat shape, not diagnosis (uniform ranges): length: ED base-apex length (mm); rv_span: RV crescent half-angle
# (deg); filling / kick: share of the stroke volume refilled by rapid filling (E wave) / the atria (A wave);
# hr: heart rate (bpm).
BEAT_RANGES = {
    "NOR": dict(length=(82, 94), rv_span=(65, 80), filling=(0.65, 0.78), kick=(0.12, 0.2), hr=(55, 75)),
    "DCM": dict(length=(92, 105), rv_span=(65, 80), filling=(0.6, 0.75), kick=(0.1, 0.18), hr=(65, 90)),
    "HCM": dict(length=(78, 90), rv_span=(62, 75), filling=(0.4, 0.55), kick=(0.3, 0.4), hr=(55, 75)),
    "MINF": dict(length=(85, 98), rv_span=(65, 80), filling=(0.5, 0.68), kick=(0.15, 0.25), hr=(60, 85)),
    "ARV": dict(length=(82, 94), rv_span=(80, 95), filling=(0.6, 0.75), kick=(0.12, 0.2), hr=(60, 85)),
}
MALE_FRACTION = {"NOR": 0.5, "DCM": 0.7, "HCM": 0.7, "MINF": 0.8, "ARV": 0.6}
AGE_RANGE = {"NOR": (20, 70), "DCM": (30, 75), "HCM": (20, 70), "MINF": (45, 85), "ARV": (18, 60)}

# Relative bSSFP signal (LV blood = 1) before the coil bias field. Calibrated so that `prepare`'s percentile
# scaling to [-1, 1] lands near real ACDC means over labelled frames (measured on real ACDC: LV blood 0.15, myocardium
# -0.52, RV blood -0.16, background -0.50): fat as bright as blood or brighter (it sets the 99.5th percentile
# with the coil's hot spot at the chest wall), muscle and myocardium dark, lungs and air darkest.
SIGNAL = dict(blood=1.0, myo=0.3, fat=1.25, muscle=0.27, tissue=0.35, lung=0.04, liver=0.5, bone=0.5,
              cortex=0.12, csf=1.15, aorta=1.05)
TISSUES = ("air", "tissue", "fat", "muscle", "lung", "liver", "bone", "csf", "aorta")   # `thorax` tissue map
RV_BLOOD = (0.5, 0.78)           # RV blood relative to LV blood: slower flow and trabeculae darken it
SNR_RANGE = (14, 28)             # blood-pool SNR
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
    """Draw one subject's heart: ED volumes, EF and wall from the group's ACDC_STATS (absolute, as measured on
    ACDC: not indexed to body size), beat shape from BEAT_RANGES; body size scales the length and first guesses.

    radius and rv (mm) are first guesses; `fit_sizes` rescales them to the drawn volumes `edv`, `rv_edv` (ml).
    """
    u = {k: float(np.clip(rng.normal(mean, sd), lo, hi)) for k, (mean, sd, lo, hi) in ACDC_STATS[group].items()}
    u.update({k: float(rng.uniform(*v)) for k, v in BEAT_RANGES[group].items()})
    male = attrs["Sex"] == "M"
    bsa = float(np.sqrt(attrs["Height"] * attrs["Weight"] / 3600.0))   # Mosteller, m^2
    body = float((bsa / 1.9) ** 0.35 * (1.03 if male else 0.97))
    length = u["length"] * body
    # Slices cover base to apex; ACDC-like 8-10 mm thick, so few slices means a shorter heart.
    thickness = round(float(np.clip(length / (slices + 0.4), 8.0, 10.0)), 1)
    septum = float(septum_angle() + rng.uniform(-SEPTUM_JITTER, SEPTUM_JITTER))   # LV centre -> RV direction
    asymmetry = float(rng.uniform(0.3, 0.6)) if group == "HCM" else 0.0   # septal hypertrophy
    p = dict(
        edv=u["lv_edv"], rv_edv=u["rv_edv"], bsa=bsa, radius=27.0 * body, rv=28.0 * body,
        # the drawn wall is the basal slice's circumferential mean: the septal bulge (1 + a cos+) averages 1 + a/pi
        wall=u["wall"] / (1 + asymmetry / np.pi), ef=u["ef"], rv_ef=u["rv_ef"],
        rv_span=float(np.deg2rad(u["rv_span"])), filling=u["filling"], kick=u["kick"],
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
        asymmetry=asymmetry,
        snr=float(rng.uniform(*SNR_RANGE)), rv_blood=float(rng.uniform(*RV_BLOOD)),
        # papillary muscles: angle from the septum (rad) of the anterolateral / posteromedial one, radius (mm)
        papillary=[float(np.pi - rng.uniform(0.7, 1.1)), float(np.pi + rng.uniform(0.7, 1.1))],
        papillary_mm=float(rng.uniform(3.5, 5.0) * (1.3 if group == "HCM" else 1.0)),
        infarct=None,
    )
    if group == "MINF":   # transmural infarct: a sector from mid/apical slices to the apex, akinetic and thinned
        p["infarct"] = dict(centre=float(septum + rng.choice([-1, 1]) * rng.uniform(np.pi / 3, np.pi)),
                            half_width=float(np.deg2rad(rng.uniform(35, 60))), start=float(rng.uniform(0.2, 0.5)))
    return p


def fit_sizes(p: dict, slices: int, c: np.ndarray) -> dict:
    """Rescale p's cavity radius and RV depth so the analytic ED volumes equal p['edv'] and p['rv_edv'];
    returns the final `heart_tables`. Cavity volume scales with radius^2 exactly; the RV crescent volume is
    k b1 + k^2 b2 in its depth scale k."""
    t = heart_tables(p, slices, c)
    p["radius"] *= float(np.sqrt(p["edv"] / t["analytic_ml"]["LV"][0]))
    t = heart_tables(p, slices, c)
    unit = t["tau"][:, 0] / p["rv"]                              # (D, N_THETA) crescent depth per mm of rv
    scale = p["slice_thickness"] / 1000 * D_THETA
    b1, b2 = scale * (t["r_epi"][:, 0] * unit).sum(), scale * 0.5 * (unit**2).sum()
    p["rv"] = float(_solve_quadratic(b2, b1, -p["rv_edv"]))
    return heart_tables(p, slices, c)


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


def heart_tables(p: dict, slices: int, c: np.ndarray, z_shift: float = 0.0) -> dict:
    """Polar boundary tables of one beat, each (D, T, N_THETA) in mm, plus LV centres (D, T, 2) in mm.

    r_endo / r_epi: LV endo- and epicardial radius; tau: RV crescent depth beyond the epicardium;
    w: (D, T) position along the long axis, 0 at the base and 1 at the apex.
    c: (T,) contraction curve. Volumes are sums of slice areas times the slice thickness.
    z_shift: mm added to every slice position (sub-slices for through-plane partial volume).
    """
    D, sz = slices, p["slice_thickness"]
    z = (np.arange(D) + 0.5) * sz + z_shift            # slice centres from the top of the stack
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
    cap = (w >= 0) * np.clip((1.08 - w) / 0.08, 0, 1)  # no wall above the base; a thin cap beyond the apex
    th0 = (p["wall"] * (1 - 0.3 * w[:, :1, None] ** 2) * (1 + p["asymmetry"] * septal) * (1 - 0.35 * m[:, None])
           * cap[..., None])
    a, b = th0 * m[:, None], th0 * (1 - m[:, None])
    m0 = D_THETA * (r_endo * a + a * a / 2).sum((0, 2))
    m1 = D_THETA * (r_endo * b + a * b).sum((0, 2))
    m2 = D_THETA * np.broadcast_to(b * b / 2, r_endo.shape).sum((0, 2))
    g = _solve_quadratic(m2, m1, m0 - (m0[0] + m1[0] + m2[0]))
    r_epi = r_endo + a + b * g[:, None]

    # RV: a crescent on the septal side, depth tau = s(t) * profile; s solved for the RV volume curve.
    bump = np.clip(1 - (_angle_diff(THETA, p["septum"]) / p["rv_span"]) ** 2, 0, None) ** 0.8
    reach = np.sqrt(np.clip(1 - (w / p["rv_reach"]) ** 2, 0, None))
    tau_shape = p["rv"] * (reach * (w >= 0))[..., None] * bump
    b1, b2 = D_THETA * (r_epi * tau_shape).sum((0, 2)), 0.5 * D_THETA * (tau_shape**2).sum((0, 2))
    s = _solve_quadratic(b2, b1, -(b1[0] + b2[0]) * (1 - p["rv_ef"] / 100 * c))
    tau = s[:, None] * tau_shape

    k = np.arange(D)[:, None, None] - (D - 1) / 2
    centre = np.asarray(p["offset"]) + k * np.asarray(p["tilt"]) + c[None, :, None] * np.asarray(p["drift"])
    analytic = {name: sz / 1000 * (0.5 * D_THETA * val).sum((0, 2)) for name, val in
                (("LV", r_endo**2), ("MYO", r_epi**2 - r_endo**2), ("RV", (r_epi + tau) ** 2 - r_epi**2))}
    return dict(r_endo=r_endo, r_epi=r_epi, tau=tau, centre=centre, w=w, analytic_ml=analytic)


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
    """Signed distance (mm, positive inside) to an ellipse with a wobbly boundary; x, y in one frame, ax, ay
    its semi-axes along that frame's axes."""
    dx, dy = x - cx, y - cy
    ang = np.arctan2(dy, dx)
    rad = 1 / np.sqrt((np.cos(ang) / ax) ** 2 + (np.sin(ang) / ay) ** 2)
    for n, ph in enumerate(phases, start=2):
        rad = rad * (1 + wobble * np.cos(n * ang + ph))
    return rad - np.hypot(dx, dy)


def _disc(x, y, cx, cy, radius) -> np.ndarray:
    return radius - np.hypot(x - cx, y - cy)


def anatomy_frame() -> tuple[np.ndarray, np.ndarray]:
    """In-plane unit vectors (voxel x, y components) pointing to the patient's right and anterior.

    Anterior is the world +y axis projected into the slice plane; right is the in-plane perpendicular on
    the side of world +x (the plane is oblique, so the projected axes are not exactly perpendicular).
    """
    axes = sax_axes()
    ant = axes[1, :2] / np.linalg.norm(axes[1, :2])
    right = np.array([ant[1], -ant[0]])
    return (right if right @ axes[0, :2] > 0 else -right), ant


def _extent(tables: dict, direction: np.ndarray) -> float:
    """How far (mm) the ED heart (epicardium + RV) reaches from the LV centre towards `direction`."""
    reach = (tables["r_epi"][:, 0] + tables["tau"][:, 0]) * np.cos(THETA - np.arctan2(direction[1], direction[0]))
    return float(reach.max())


def thorax(p: dict, tables: dict, rng: np.random.Generator, slices: int, size: int, spacing: float) -> dict:
    """The chest around the heart, static over the beat; arrays are (D, X, Y) float32.

    static: body (skin, subcutaneous fat, chest-wall muscle), mediastinal tissue and fat, spine (vertebral
    body, cortex, spinal canal), paraspinal muscle and the descending aorta beside the spine, air outside;
    organs / organ_signal: lungs either side of the heart and the liver (right, inferior: apical slices),
    which the beating heart pushes (`render` carves them around the heart in every frame);
    bias: the coil sensitivity (brighter towards the anterior chest wall), applied to the whole image;
    tissue: uint8 index into TISSUES of the structure that dominates each voxel (before the heart is drawn).
    """
    D = slices
    xs = (np.arange(size) - (size - 1) / 2) * spacing
    k = (np.arange(D)[:, None, None] + 0.5) / D                       # 0 at the base, 1 at the apex
    right, ant = anatomy_frame()
    x0, y0 = xs[None, :, None] - p["offset"][0], xs[None, None, :] - p["offset"][1]
    r, a = x0 * right[0] + y0 * right[1], x0 * ant[0] + y0 * ant[1]  # mm from the LV centre: right, anterior
    tex = _smooth_noise(rng, (D, size, size), 4.0 / spacing)
    ph = lambda n: rng.uniform(0, 2 * np.pi, n)                       # noqa: E731 (wobble phases)

    img = SIGNAL["tissue"] * (1 + 0.12 * tex)
    tissue = np.full(img.shape, TISSUES.index("tissue"), np.uint8)

    def paint(img, occ, value, name):   # blend a structure in and record where it dominates
        tissue[np.broadcast_to(occ > 0.5, tissue.shape)] = TISSUES.index(name)
        return _blend(img, occ, value)

    # Body: an ellipse whose anterior wall sits a little in front of the heart, centred right of it.
    fat_mm = float(np.clip(1.2 * (p["bmi"] - 17) + rng.uniform(2, 6), 4, 30))
    muscle_mm = float(rng.uniform(6, 12))
    # The back stays 13-16 cm behind the LV centre whatever the heart's size; a big heart deepens the chest.
    front = _extent(tables, ant) + rng.uniform(3, 12) + muscle_mm + fat_mm
    back, lat = -rng.uniform(130, 160) - fat_mm, rng.uniform(150, 175)
    ap = (front - back) / 2
    depth = _blob(r, a, rng.uniform(20, 35), (front + back) / 2, lat, ap, 0.02, ph(2))
    img = paint(img, _occupancy(-(depth - fat_mm - muscle_mm), spacing), SIGNAL["muscle"] * (1 + 0.1 * tex),
                "muscle")
    img = paint(img, _occupancy(-(depth - fat_mm), spacing), SIGNAL["fat"] * (1 + 0.05 * tex), "fat")
    # Mediastinal fat in front of the heart.
    pad = _blob(r, a, rng.uniform(-5, 20), _extent(tables, ant) + 3, rng.uniform(20, 35), rng.uniform(2.5, 5),
                0.15, ph(3))
    img = paint(img, _occupancy(pad, spacing), SIGNAL["fat"] * (1 + 0.05 * tex), "fat")
    # Descending aorta behind the heart, left of the spine; the spine behind and right of it.
    ao_r, ao_mm = rng.uniform(-25, -10), rng.uniform(10, 13.5)
    ao_a = -(_extent(tables, -ant) + rng.uniform(6, 14) + ao_mm)
    sp_r, sp_a, sp_mm = ao_r + rng.uniform(18, 26), ao_a - rng.uniform(16, 24), rng.uniform(14, 18)
    for side in (-1, 1):                                               # paraspinal muscles
        img = paint(img, _occupancy(_blob(r, a, sp_r + side * 30, sp_a - 40, 22, 30, 0.05, ph(2)), spacing),
                    SIGNAL["muscle"] * (1 + 0.1 * tex), "muscle")
    vert = _disc(r, a, sp_r, sp_a, sp_mm)
    img = paint(img, _occupancy(vert, spacing), SIGNAL["cortex"], "bone")
    img = paint(img, _occupancy(vert - 2.0, spacing), SIGNAL["bone"] * (1 + 0.15 * tex), "bone")
    img = paint(img, _occupancy(_disc(r, a, sp_r, sp_a - sp_mm - 9, 6.5), spacing), SIGNAL["csf"], "csf")
    aorta = _disc(r, a, ao_r, ao_a, ao_mm)
    img = paint(img, _occupancy(aorta + 1.5, spacing), SIGNAL["muscle"], "muscle")           # aortic wall
    img = paint(img, _occupancy(aorta, spacing), SIGNAL["aorta"] * rng.uniform(0.9, 1.1), "aorta")
    img = paint(img, _occupancy(-depth, spacing), 0.0, "air")                                 # outside the body

    # Organs the heart pushes: lungs left and right of it (overlapping its ED outline, so the heart's own
    # boundary carves them), the liver right-inferior on apical slices (the plane moves inferior to the apex).
    inner = _occupancy(depth - fat_mm - muscle_mm - 2, spacing)
    keep_out = np.minimum(-aorta - 4, -vert - 12)
    lungs = np.zeros_like(img)
    for side, dist in ((-1, rng.uniform(10, 25)), (1, _extent(tables, right) - rng.uniform(5, 15))):
        half = rng.uniform(55, 70)
        lung = _blob(r, a, side * (dist + half), rng.uniform(-45, -25), half, rng.uniform(75, 90), 0.08, ph(3))
        lungs = np.maximum(lungs, _occupancy(np.minimum(lung - 12 * k, keep_out), spacing))
    grow = np.clip((k - rng.uniform(0.1, 0.35)) / 0.4, 0, 1)
    liver = _occupancy(_blob(r, a, rng.uniform(50, 70), rng.uniform(-40, -20), 80 * grow + 1e-3, 60 * grow + 1e-3,
                             0.05, ph(2)), spacing) * inner
    organs = np.maximum(lungs * inner, liver)
    organ_signal = np.where(liver > lungs, SIGNAL["liver"] * (1 + 0.06 * tex), SIGNAL["lung"] * (1 + 0.5 * tex))
    organs, liver = np.broadcast_arrays(organs, liver)
    tissue[organs > 0.5] = np.where(liver > 0.5, TISSUES.index("liver"), TISSUES.index("lung"))[organs > 0.5]

    # Coil sensitivity: anterior and posterior receive arrays, bright within a few cm of the body surface
    # (subcutaneous fat there sets the top percentile, as on real cines), slowly varying elsewhere.
    reach = rng.uniform(22, 32)
    g = (rng.uniform(0.35, 0.7) * np.exp(-np.clip(front - a, 0, None) / reach)
         + rng.uniform(0.15, 0.4) * np.exp(-np.clip(a - back, 0, None) / reach))
    g = np.log1p(g) + rng.uniform(-0.1, 0.1) * r / 100 + 0.06 * _smooth_noise(rng, (1, size, size), 25.0 / spacing)
    bias = np.exp(g - g[:, size // 2, size // 2].mean())
    f32 = lambda v: np.ascontiguousarray(v, dtype=np.float32)         # noqa: E731
    return dict(static=f32(img), organs=f32(organs), organ_signal=f32(organ_signal),
                bias=f32(np.broadcast_to(bias, img.shape)), tissue=tissue)


def _frame(tabs: dict, t: int, sel, layers: dict, p: dict, extra: dict, xs: np.ndarray, spacing: np.float32
           ) -> tuple[np.ndarray, np.ndarray]:
    """Labels (D', X, Y) and the noise-free image of frame t for slices `sel` of the tables `tabs`."""
    centre = tabs["centre"][sel, t]                                   # (D', 2)
    dx = xs[None, :, None] - centre[:, 0, None, None]                 # (D', X, 1)
    dy = xs[None, None, :] - centre[:, 1, None, None]                 # (D', 1, Y)
    dist = np.hypot(dx, dy)                                           # (D', X, Y)
    idx = ((np.arctan2(dy, dx) + np.float32(np.pi)) * np.float32(1 / D_THETA)).astype(np.int64) % N_THETA
    flat = idx.reshape(len(centre), -1)

    def at(tab):   # table (D', N_THETA) value at each pixel's angle: (D', X, Y)
        return np.take_along_axis(tab, flat, axis=1).reshape(dist.shape)

    r_endo = tabs["r_endo"][sel, t]
    s_endo, s_epi, depth = at(r_endo) - dist, at(tabs["r_epi"][sel, t]) - dist, at(tabs["tau"][sel, t])
    s_rv, has_rv = s_epi + depth, depth > 0
    rim = 2.5 * np.clip(depth / 2.0, 0, 1)                            # RV free wall, mm
    lab = np.zeros(dist.shape, np.uint8)
    lab[(s_rv > 0) & has_rv] = 1
    lab[s_epi > 0] = 2
    lab[s_endo > 0] = 3
    s_fat = s_rv + rim + extra["fat_mm"][idx]
    # The heart pushes its neighbours: lungs and liver stay a few mm outside its epicardial fat in every frame.
    img = _blend(layers["static"][sel], layers["organs"][sel] * _occupancy(-s_fat - 3.0, spacing),
                 layers["organ_signal"][sel])
    blood = extra["blood_tex"][sel]
    img = _blend(img, _occupancy(s_fat, spacing), SIGNAL["fat"])
    img = _blend(img, _occupancy(s_rv + rim, spacing) * has_rv, SIGNAL["muscle"])
    img = _blend(img, _occupancy(s_rv, spacing) * has_rv, p["rv_blood"] * blood)
    img = _blend(img, _occupancy(s_epi, spacing), SIGNAL["myo"])
    img = _blend(img, _occupancy(s_endo, spacing), blood)
    # Trabeculae: dark myocardial fingers a few mm into the cavity, deeper towards the apex.
    img = _blend(img, 0.6 * _occupancy(s_endo, spacing) * _occupancy(at(extra["trabeculae"][sel]) - s_endo,
                                                                      spacing), SIGNAL["myo"])
    # Papillary muscles: two discs on the free wall, inside the LV label as ACDC draws it.
    w = tabs["w"][sel, t]
    fade = np.clip(np.minimum(w - 0.15, 0.85 - w) / 0.1, 0, 1)         # (D',): mid-ventricular slices only
    for angle in p["papillary"]:
        theta = p["septum"] + angle
        i = int(((theta + np.pi) % (2 * np.pi)) / D_THETA) % N_THETA
        rad = p["papillary_mm"] * fade * (r_endo[:, i] > 2.5 * p["papillary_mm"])    # (D',)
        rho = r_endo[:, i] - 1.1 * rad
        px, py = centre[:, 0] + rho * np.cos(theta), centre[:, 1] + rho * np.sin(theta)
        sd = rad[:, None, None] - np.hypot(xs[None, :, None] - px[:, None, None], xs[None, None, :] - py[:, None, None])
        img = _blend(img, _occupancy(sd, spacing) * _occupancy(s_endo, spacing), SIGNAL["myo"])
    return lab, img


def render(p: dict, tables: dict, layers: dict, rng: np.random.Generator, size: int, spacing: float,
           outer: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise the beat: labels (T, D, X, Y) uint8 and the bSSFP-like image (T, D, X, Y) float32.

    outer: tables shifted a third of a slice outwards (`heart_tables(z_shift=...)`, base slice from the
    minus-shifted stack, apex slice from the plus-shifted one): the first and last slices average over
    their thickness, so the base and apex blur as a thick slice blurs them (through-plane partial volume).
    """
    # float32 throughout: half the memory traffic of float64, far below the noise in precision.
    tables, outer = (None if tab is None else {k: v.astype(np.float32) for k, v in tab.items() if k != "analytic_ml"}
                     for tab in (tables, outer))
    D, T, _ = tables["r_endo"].shape
    xs = ((np.arange(size) - (size - 1) / 2) * spacing).astype(np.float32)
    spacing = np.float32(spacing)
    extra = dict(
        fat_mm=np.clip(2.5 * _smooth_noise(rng, (1, 1, N_THETA), 8)[0, 0] + 1.0, 0, 4).astype(np.float32),
        blood_tex=(1 + 0.04 * _smooth_noise(rng, (D, size, size), 1.5)).astype(np.float32),
        trabeculae=(np.clip(_smooth_noise(rng, (D, 1, N_THETA), 2.5)[:, 0], 0, 2.5)          # mm into the cavity
                    * (1 + np.arange(D)[:, None] / max(D - 1, 1))).astype(np.float32),
    )
    labels = np.zeros((T, D, size, size), np.uint8)
    image = np.zeros((T, D, size, size), np.float32)
    ends = [0, D - 1]
    for t in range(T):
        labels[t], img = _frame(tables, t, slice(None), layers, p, extra, xs, spacing)
        if outer is not None:
            _, pv = _frame(outer, t, ends, layers, p, extra, xs, spacing)
            img[ends] = 0.6 * img[ends] + 0.4 * pv
        image[t] = gaussian_filter(img * layers["bias"], sigma=(0, 0.5, 0.5), truncate=2.0)   # point-spread blur
    sigma = np.float32(SIGNAL["blood"] / p["snr"])                          # SNR of the blood pool
    noisy = np.hypot(image + sigma * rng.standard_normal(image.shape, np.float32),
                     sigma * rng.standard_normal(image.shape, np.float32))   # Rician magnitude
    return labels, np.round(noisy * SCANNER_SCALE).astype(np.float32)


RVIP_RULE = ("anterior / inferior: of the two points where the RV crescent meets the LV epicardium, the one with "
             "the larger world z (RAS+ superior, from the NIfTI affine) is 'anterior', the other 'inferior'")
RVIP_COORDINATES = ("voxel (x, y) of the written image; list index = frame, then slice (base -> apex); "
                    "null where the slice has no RV label")


def insertion_points(tables: dict, p: dict, labels: np.ndarray, affine: np.ndarray, size: int, spacing: float
                     ) -> list[list[dict | None]]:
    """RV insertion points of every frame and slice: [t][z] = {"anterior": [x, y], "inferior": [x, y]} in voxel
    coordinates of the written image (x, y, slice z), or None on a slice whose labels hold no RV.

    The points are the ends of the RV crescent (septum +- rv_span) on the epicardium; they are named by RVIP_RULE.
    labels: (T, D, X, Y).
    """
    T, D = labels.shape[:2]
    has_rv = (labels == 1).any(axis=(2, 3))                                 # (T, D)
    idx = [int(((p["septum"] + sign * p["rv_span"] + np.pi) % (2 * np.pi)) / D_THETA) % N_THETA for sign in (-1, 1)]
    theta = THETA[idx]                                                      # (2,)
    r = tables["r_epi"][:, :, idx]                                          # (D, T, 2)
    xy = tables["centre"][:, :, None] + r[..., None] * np.stack([np.cos(theta), np.sin(theta)], -1)   # (D, T, 2, 2)
    vox = xy / spacing + (size - 1) / 2
    z = (affine[2, 0] * vox[..., 0] + affine[2, 1] * vox[..., 1]
         + affine[2, 2] * np.arange(D)[:, None, None])                     # world z up to the shared offset
    out = []
    for t in range(T):
        frame = []
        for k in range(D):
            if not has_rv[t, k]:
                frame.append(None)
                continue
            hi = int(np.argmax(z[k, t]))
            frame.append({name: [round(float(v), 2) for v in vox[k, t, j]]
                          for name, j in (("anterior", hi), ("inferior", 1 - hi))})
        out.append(frame)
    return out


def read_rvip(subject_dir: str | os.PathLike) -> np.ndarray | None:
    """The RV insertion points of a phantom subject folder as an array, or None when it holds no phantom truth.

    Returns (Z, T, 2, 2) float: slice, frame, landmark (0 anterior, 1 inferior), voxel (x, y) of the written
    image; NaN on slices without RV (see `insertion_points` and data/README.md).
    """
    path = Path(subject_dir) / TRUTH_FILE
    if not path.exists():
        return None
    frames = read_json(path).get("rv_insertion_points", {}).get("frames")
    if not frames:
        return None
    out = np.full((len(frames[0]), len(frames), 2, 2), np.nan)
    for t, frame in enumerate(frames):
        for z, pts in enumerate(frame):
            if pts is not None:
                out[z, t] = [pts["anterior"], pts["inferior"]]
    return out


def _check_shape(size: int, spacing: float, slices: int, frames: int) -> None:
    if size < 16 or slices < 2 or frames < 4 or not spacing > 0:
        raise CardiolabError(f"phantom: need size >= 16, slices >= 2, frames >= 4, spacing > 0; got size={size}, "
                             f"slices={slices}, frames={frames}, spacing={spacing}")


def simulate(index: int, seed: int = 0, size: int = 128, spacing: float = 1.5, slices: int = 8, frames: int = 20,
             group: str | None = None, snr: float | None = None) -> dict:
    """Everything `make_subject` draws and renders, before it is packed into a Subject: attrs, p (parameters),
    c (contraction curve), es, tables (`heart_tables`), layers (`thorax`), labels and image (T, D, X, Y)."""
    _check_shape(size, spacing, slices, frames)
    group = group or group_of(index)
    if group not in GROUPS:
        raise CardiolabError(f"phantom: unknown group {group!r}: choose one of {', '.join(GROUPS)}")
    rng = np.random.default_rng([seed, index])
    attrs = sample_attributes(group, rng)
    p = sample_heart(group, attrs, rng, slices)
    if snr is not None:
        p["snr"] = float(snr)
    p["bmi"] = attrs["Weight"] / (attrs["Height"] / 100) ** 2
    es = int(np.clip(round(p["es_fraction"] * frames), 1, frames - 2))
    c = contraction_curve(frames, es, p["filling"], p["kick"])
    tables = fit_sizes(p, slices, c)
    sz = p["slice_thickness"]
    # Sub-slices a third of a slice beyond the base and the apex, for their partial-volume blur.
    below, above = (heart_tables(p, slices, c, z_shift=f * sz) for f in (-0.35, 0.35))
    outer = {k: np.concatenate([below[k][:-1], above[k][-1:]]) for k in ("r_endo", "r_epi", "tau", "centre", "w")}
    layers = thorax(p, tables, rng, slices, size, spacing)
    labels, image = render(p, tables, layers, rng, size, spacing, outer)
    return dict(group=group, attrs=attrs, p=p, c=c, es=es, tables=tables, layers=layers, labels=labels,
                image=image)


def make_subject(index: int, seed: int = 0, size: int = 128, spacing: float = 1.5, slices: int = 8,
                 frames: int = 20, group: str | None = None, snr: float | None = None) -> tuple[Subject, dict]:
    """Generate phantom subject `index` of the cohort drawn with `seed`; depends only on (seed, index).

    size: in-plane pixels; spacing: in-plane mm; slices: D (base -> apex); frames: T over one beat.
    group: override the group (default: `group_of(index)`); snr: override the blood-pool SNR.
    Returns the Subject (image (X, Y, Z, T), label_series (X, Y, Z, T), ED = frame 0) and its truth dict.
    """
    sim = simulate(index, seed, size, spacing, slices, frames, group, snr)
    group, attrs, p, c, es, tables, labels, image = (sim[k] for k in ("group", "attrs", "p", "c", "es", "tables",
                                                                      "labels", "image"))
    sz = p["slice_thickness"]
    affine = sax_affine(size, spacing, sz, slices)
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
        rv_insertion_points={"rule": RVIP_RULE, "coordinates": RVIP_COORDINATES,
                             "frames": insertion_points(tables, p, labels, affine, size, spacing)},
        contraction=c.tolist(), parameters=p,
    )
    truth = {k: (float(v) if isinstance(v, np.floating) else v) for k, v in truth.items()}
    subject = Subject(id=sid, image=rearrange(image, "t z x y -> x y z t"),
                      affine=affine, frame_ms=frame_ms, ed=0, es=es,
                      label_series=rearrange(labels, "t z x y -> x y z t"), info=dict(attrs))
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
                    slices: int = 8, frames: int = 20, workers: int = 1,
                    snr: tuple[float, float] | None = None, first: int = 0) -> list[Path]:
    """Write subjects first..first+n-1 into `out` (ACDC layout) plus `cohort.json` with the parameters; returns the
    folders. first > 0 writes a later chunk of the same cohort (a large cohort streamed through a small folder).

    workers > 1 spreads subjects over processes; the output is the same since each depends on (seed, i) only.
    snr: (low, high) blood-pool SNR range drawn uniformly per subject (default SNR_RANGE): a noisier or cleaner
    "scanner" for a cross-dataset test cohort.
    Phantom folders of an earlier, larger cohort in `out` are removed so the folder holds exactly this one.
    """
    if n < 1:
        raise CardiolabError(f"phantom: --subjects must be >= 1, got {n}")
    _check_shape(size, spacing, slices, frames)
    if snr is not None and not (len(snr) == 2 and 0 < snr[0] <= snr[1]):
        raise CardiolabError(f"phantom: --snr must be LO,HI with 0 < LO <= HI, got {snr}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CardiolabError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    kwargs = dict(size=size, spacing=spacing, slices=slices, frames=frames)
    jobs = [(out, i, seed, {**kwargs, "snr": subject_snr(snr, seed, i)} if snr is not None else kwargs)
            for i in range(first, first + n)]
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
    params = cohort_params(n, seed, size, spacing, slices, frames)
    if snr is not None:
        params["snr_range"] = [float(v) for v in snr]
    write_json(out / COHORT_FILE, dict(params, subjects=[{"id": p.name, "group": group_of(i)} for i, p in enumerate(paths, first)]))
    log.debug("phantom: %d subjects -> %s", n, out)
    return paths


def subject_snr(snr: tuple[float, float], seed: int, index: int) -> float:
    """Subject index's SNR drawn uniformly from snr = (low, high); depends only on (seed, index)."""
    rng = np.random.default_rng([seed, index, 0x5A])   # a stream apart from the subject's own draws
    return float(rng.uniform(*snr))


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
    if up_to_date(root, read_stamp(root / COHORT_FILE), params):
        return root
    with atomic_path(root) as tmp:   # a crash never leaves a half-written cohort behind
        generate_cohort(tmp, d.phantom_subjects, seed=seed, size=d.phantom_size, spacing=d.phantom_spacing,
                        slices=d.phantom_slices, frames=d.phantom_frames, workers=workers)
    log.info("phantom: %d subjects -> %s", d.phantom_subjects, root)
    return root
