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
`geometry.canonical_inplane` leaves the arrays as they are.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from einops import rearrange
from tqdm import tqdm

from cardiolab.core import COHORT_FILE, CardiolabError, atomic_path, read_json, read_stamp, up_to_date, write_json
from cardiolab.data.phantom_render import (D_THETA, RV_ANGLE_DEG, heart_tables, insertion_points, render, sax_axes,
                                          smoothstep, solve_quadratic, thorax)
from cardiolab.io.cohort import Subject, write_subject
from cardiolab.profiles import Profile

log = logging.getLogger(__name__)

VERSION = 3                      # bump when the generator's output changes; ensure_phantom then regenerates
GROUPS = ("NOR", "DCM", "HCM", "MINF", "ARV")
TRUTH_FILE = "phantom_truth.json"
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

RV_BLOOD = (0.5, 0.78)           # RV blood relative to LV blood: slower flow and trabeculae darken it
SNR_RANGE = (14, 28)             # blood-pool SNR

SEPTUM_JITTER = 0.35             # rad, per-subject spread of the RV direction (+-20 deg)


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
    p["rv"] = float(solve_quadratic(b2, b1, -p["rv_edv"]))
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
    refill = (filling * smoothstep((phi - phi_es) / (e_end - phi_es))
              + (1 - filling - kick) * smoothstep((phi - e_end) / (a_start - e_end))
              + kick * smoothstep((phi - a_start) / (1.0 - a_start)))
    return np.where(phi <= phi_es, systole, 1 - refill)


RVIP_RULE = ("anterior / inferior: of the two points where the RV crescent meets the LV epicardium, the one with "
             "the larger world z (RAS+ superior, from the NIfTI affine) is 'anterior', the other 'inferior'")
RVIP_COORDINATES = ("voxel (x, y) of the written image; list index = frame, then slice (base -> apex); "
                    "null where the slice has no RV label")


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


PARALLEL_FROM = 16   # subjects from which a cohort is spread over processes by default (a spawned worker's imports
                     # cost ~2 s; one subject ~0.6 s of rendering and gzip)


def default_workers(n: int) -> int:
    """Processes for n subjects: every core (at most 4) from PARALLEL_FROM subjects on, else 1; and 1 under a
    plain `python script.py`, whose top level a spawned worker runs again (fatal unless the script guards it with
    `if __name__ == "__main__"`); the CLI (`python -m cardiolab`), notebooks and pytest are safe."""
    main = sys.modules.get("__main__")
    script = main is not None and getattr(main, "__spec__", None) is None and hasattr(main, "__file__")
    return min(4, os.cpu_count() or 1) if n >= PARALLEL_FROM and not script else 1


def generate_cohort(out: str | os.PathLike, n: int, seed: int = 0, size: int = 128, spacing: float = 1.5,
                    slices: int = 8, frames: int = 20, workers: int | None = None,
                    snr: tuple[float, float] | None = None, first: int = 0) -> list[Path]:
    """Write subjects first..first+n-1 into `out` (ACDC layout) plus `cohort.json` with the parameters; returns the
    folders. first > 0 writes a later chunk of the same cohort (a large cohort streamed through a small folder).

    workers > 1 spreads subjects over processes (None: `default_workers`); the output is the same since each
    depends on (seed, i) only. Workers are spawned, never forked: a fork of a process whose OpenMP threads are
    running (a notebook kernel after training) can hang.
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
    workers = default_workers(n) if workers is None else workers
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
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


def ensure_phantom(profile: Profile, seed: int = 0, workers: int | None = None) -> Path:
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
