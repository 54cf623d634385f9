"""The 4D cine phantom: determinism, ACDC layout, ground truth, physiology, CLI, ensure_phantom."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from cardiolab.core import CardiolabError, read_json
from cardiolab.data import phantom, phantom_render
from cardiolab.io.acdc import read_acdc
from cardiolab.profiles import DataConfig, get_profile

SMALL = dict(size=32, spacing=6.0, slices=4, frames=6)
REAL_RV_ANGLE_DEG = (51.0, 137.0)   # 10-90 % range of the RV-from-LV angle on real ACDC after prepare
MEDIUM = dict(size=64, spacing=3.0, slices=6, frames=8)


def ef_from_labels(labels: np.ndarray, ed: int, es: int, label: int = 3) -> float:
    """EF (%) counted on a (X, Y, Z, T) label series, independently of the phantom's code."""
    edv, esv = (float((labels[..., f] == label).sum()) for f in (ed, es))
    return 100 * (edv - esv) / edv


def rv_angle_deg(labels: np.ndarray) -> float:
    """Median over slices of the RV centroid's angle from the LV centroid in a (D, H, W) label stack shown
    with imshow: 0 deg = +column, 90 deg = +row (down)."""
    angles = []
    for lab in labels:
        if (lab == 1).any() and (lab == 3).any():
            (r1, c1), (r3, c3) = (np.argwhere(lab == k).mean(0) for k in (1, 3))
            angles.append(np.degrees(np.arctan2(r1 - r3, c1 - c3)))
    return float(np.median(angles))


@pytest.fixture(scope="module")
def prepared(phantom_root, tmp_path_factory):
    """The conftest phantom cohort prepared with the smoke profile: [(group, tensors)] per subject."""
    import torch

    from cardiolab.data.prepare import prepare

    path = prepare(phantom_root, "acdc", get_profile("smoke"), tmp_path_factory.mktemp("cache") / "smoke")
    return [(r["attributes"]["Group"], torch.load(path.parent / r["file"], weights_only=True))
            for r in read_json(path)["subjects"]]


def test_rv_lies_where_real_acdc_puts_it_after_prepare(prepared):
    """RV anterior and right of the LV in the world, ~110 deg from the LV in prepared tensors."""
    angles = {}
    for group, t in prepared:
        angle = rv_angle_deg(t["labels"][..., 0].numpy())                  # ED, (D, H, W)
        angles.setdefault(group, []).append(angle)
        assert REAL_RV_ANGLE_DEG[0] <= angle <= REAL_RV_ANGLE_DEG[1], (group, angle)
    assert set(angles) == set(phantom.GROUPS)
    assert abs(np.median(sum(angles.values(), [])) - phantom.RV_ANGLE_DEG) < 20


def test_affine_puts_rv_anterior_and_right_and_is_canonical():
    from cardiolab.data.geometry import canonical_inplane

    for i in range(5):
        s, _ = phantom.make_subject(i, seed=3, **MEDIUM)
        lab = s.label_series[..., 0]
        image, _, affine = canonical_inplane(s.image, lab, s.affine)
        assert np.array_equal(affine, s.affine)                            # prepare moves nothing
        centroids = [s.affine[:3, :3] @ np.argwhere(lab == k).mean(0) for k in (1, 3)]
        right, anterior, _ = centroids[0] - centroids[1]                   # RAS+ world, mm
        assert right > 5, i
        assert anterior > 5, i


def test_same_seed_same_bytes_other_seed_differs():
    a, ta = phantom.make_subject(3, seed=0, **SMALL)
    b, tb = phantom.make_subject(3, seed=0, **SMALL)
    c, _ = phantom.make_subject(3, seed=1, **SMALL)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.label_series.tobytes() == b.label_series.tobytes()
    assert json.dumps(ta, sort_keys=True) == json.dumps(tb, sort_keys=True)
    assert a.image.tobytes() != c.image.tobytes()
    assert a.label_series.tobytes() != c.label_series.tobytes()


def test_subject_independent_of_cohort_size_and_workers(tmp_path):
    phantom.generate_cohort(tmp_path / "two", 2, seed=4, **SMALL)
    phantom.generate_cohort(tmp_path / "three", 3, seed=4, workers=2, **SMALL)
    two, three = list(read_acdc(tmp_path / "two")), list(read_acdc(tmp_path / "three"))
    assert [s.id for s in two] == ["patient001", "patient002"]
    assert len(three) == 3
    for x, y in zip(two, three):
        assert x.image.tobytes() == y.image.tobytes()
        assert x.label_series.tobytes() == y.label_series.tobytes()
    # Regenerating a smaller cohort in place leaves exactly that cohort.
    phantom.generate_cohort(tmp_path / "three", 2, seed=4, **SMALL)
    assert sorted(p.name for p in (tmp_path / "three").iterdir() if p.is_dir()) == ["patient001", "patient002"]
    assert read_json(tmp_path / "three" / "cohort.json")["subjects"][1] == {"id": "patient002", "group": "DCM"}


def test_acdc_roundtrip(phantom_root):
    subjects = list(read_acdc(phantom_root))
    assert [s.id for s in subjects] == [f"patient{i:03d}" for i in range(1, 7)]
    assert {s.info["Group"] for s in subjects} == set(phantom.GROUPS)
    stamp = read_json(phantom_root / "cohort.json")
    assert (stamp["n_subjects"], stamp["size"], stamp["frames"], len(stamp["subjects"])) == (6, 48, 10, 6)
    for s in subjects:
        truth = read_json(phantom_root / s.id / "phantom_truth.json")
        assert s.image.shape == (48, 48, 6, 10)
        assert s.label_series.shape == (48, 48, 6, 10)
        assert s.ed == 0
        assert s.es == truth["es"]
        assert 2 <= s.es <= 5          # ES near 35 % of 10 frames
        assert s.spacing == pytest.approx((4.0, 4.0, truth["spacing_mm"][2]))
        assert 8.0 <= s.spacing[2] <= 10.0
        assert s.frame_ms == pytest.approx(60000 / truth["heart_rate_bpm"] / 10, rel=1e-5)
        assert set(np.unique(s.label_series)) <= {0, 1, 2, 3}
        for f in (s.ed, s.es):
            assert np.array_equal(s.labels[f], s.label_series[..., f])
        assert {"Height", "Weight", "Age", "Sex"} <= set(s.info)
        assert s.info["Sex"] in ("M", "F")
        assert s.image.min() >= 0
        assert np.all(s.image == np.round(s.image))   # magnitudes, integer-valued


def test_ef_from_written_labels_matches_truth(phantom_root):
    for s in read_acdc(phantom_root):
        truth = read_json(phantom_root / s.id / "phantom_truth.json")
        assert abs(ef_from_labels(s.label_series, s.ed, s.es) - truth["EF"]) < 2, s.id
        assert abs(ef_from_labels(s.label_series, s.ed, s.es, label=1) - truth["RV_EF"]) < 2, s.id
        edv = (s.labels[s.ed] == 3).sum() * s.voxel_ml
        assert edv == pytest.approx(truth["EDV"], rel=1e-4)
        assert truth["LV_mass"] == pytest.approx(1.05 * (s.labels[s.ed] == 2).sum() * s.voxel_ml, rel=1e-4)
        # The rasterisation follows the continuous model even at 4 mm pixels.
        lv = np.array(truth["analytic_volumes_ml"]["LV"])
        assert abs(100 * (1 - lv[s.es] / lv[0]) - truth["EF"]) < 3, s.id
        assert truth["EF"] == pytest.approx(truth["target_EF"], abs=3)


def test_groups_have_their_physiology():
    rows = {g: [phantom.make_subject(i, seed=0, group=g, **MEDIUM)[1] for i in range(3)] for g in phantom.GROUPS}

    def mean(g, key):
        return np.mean([t[key] for t in rows[g]])

    for g, truths in rows.items():                                          # inside ACDC's range (+-3 %)
        _, _, lo, hi = phantom.ACDC_STATS[g]["ef"]
        assert all(lo - 3 <= t["EF"] <= hi + 3 for t in truths), (g, [t["EF"] for t in truths])
    assert all(t["EF"] < 40 for t in rows["DCM"])
    assert all(t["EF"] < 47 for t in rows["MINF"])
    assert mean("DCM", "EF") < mean("NOR", "EF")
    assert mean("DCM", "EDV") > mean("NOR", "EDV")
    assert mean("HCM", "LV_mass") > 1.3 * mean("NOR", "LV_mass")
    assert mean("ARV", "RV_EDV") > mean("NOR", "RV_EDV")
    assert mean("ARV", "RV_EF") < mean("NOR", "RV_EF")
    assert all(t["parameters"]["infarct"] for t in rows["MINF"])


# Systolic thickening of the mid-ventricular wall: reduced where the LV contracts poorly.
THICKENING = {"NOR": 1.2, "DCM": 1.04, "HCM": 1.15, "MINF": 1.04, "ARV": 1.2}


@pytest.mark.parametrize("group", phantom.GROUPS)
def test_myocardium_constant_wall_thickens_rv_ends_before_apex(group):
    s, truth = phantom.make_subject(1, seed=2, group=group, size=96, spacing=2.0, slices=8, frames=12)
    myo = (s.label_series == 2).sum((0, 1, 2)).astype(float)
    assert np.abs(myo / myo[0] - 1).max() < 0.05
    analytic = np.array(truth["analytic_volumes_ml"]["MYO"])
    assert np.allclose(analytic, analytic[0], rtol=1e-9)
    lv = (s.label_series == 3).sum((0, 1, 2))
    assert lv.argmax() == 0
    assert lv.argmin() == s.es
    # Mid-ventricular wall thickness from areas: r_epi - r_endo of equal-area circles.
    mid = s.label_series[:, :, 3]
    cav, wall = (mid == 3).sum((0, 1)), (mid >= 2).sum((0, 1))
    thick = np.sqrt(wall / np.pi) - np.sqrt(cav / np.pi)
    assert thick[s.es] > THICKENING[group] * thick[0]
    rv = (s.label_series == 1).sum((0, 1))                                  # (Z, T)
    assert rv[0].min() > 0
    assert rv[-1].max() == 0                            # at the base always, never at the apex
    assert (s.label_series[:, :, -1] == 3).any()                            # the apex slice still shows LV


def test_contraction_curve_phases():
    c = phantom.contraction_curve(20, 7, filling=0.7, kick=0.15)
    assert c[0] == 0
    assert c[7] == 1
    assert c.argmax() == 7
    assert np.all(c[1:] > 0)
    assert np.all(np.diff(c[:8]) > 0)
    assert np.all(np.diff(c[7:]) <= 1e-12)
    assert np.diff(c[:8])[:4].sum() > 0.6                                  # fast early ejection
    assert 1 - c[11] > 0.65                                                # rapid filling done ~200 ms after ES
    assert 0 < c[15] - c[19]
    assert c[15] > 0.1                               # the atrial kick refills the rest


def test_insertion_points_and_appearance():
    s, truth = phantom.make_subject(0, seed=1, size=96, spacing=2.0, slices=8, frames=8, snr=1000)
    lab = s.label_series[..., 0]
    points = truth["rv_insertion_points"]["frames"][truth["ed"]]
    assert points[-1] is None
    assert all(p is not None for p in points[:3])
    for z, pts in enumerate(points[:4]):
        for x, y in pts.values():
            i, j = int(round(x)), int(round(y))
            window = lab[i - 2:i + 3, j - 2:j + 3, z]
            assert 2 in window, (z, x, y)
            assert 0 in window, (z, x, y)                  # on the epicardium
    img = s.image[..., 0]
    blood, myo = img[lab == 3].mean(), img[lab == 2].mean()
    assert blood > 2.5 * myo                                               # bSSFP: bright blood, dark muscle
    noisy = phantom.make_subject(0, seed=1, size=96, spacing=2.0, slices=8, frames=8, snr=10)[0].image[..., 0]
    assert np.std(noisy - img) > 50                                        # sigma = 1000 / SNR scanner units


def test_bad_input_raises(tmp_path):
    with pytest.raises(CardiolabError, match="size"):
        phantom.make_subject(0, size=8)
    with pytest.raises(CardiolabError, match="group"):
        phantom.make_subject(0, group="XYZ", **SMALL)
    with pytest.raises(CardiolabError, match="subjects"):
        phantom.generate_cohort(tmp_path / "none", 0)
    with pytest.raises(CardiolabError, match="size=8"):
        phantom.generate_cohort(tmp_path / "none", 2, size=8)
    assert not (tmp_path / "none").exists()                                # refused before writing anything


def test_cli(tmp_path, capsys):
    from cardiolab.__main__ import main

    out = tmp_path / "cohort"
    assert main(["phantom", "--out", str(out), "--subjects", "2", "--size", "32", "--slices", "4",
                 "--frames", "6", "--spacing", "6", "--seed", "3"]) == 0
    subjects = list(read_acdc(out))
    assert [s.image.shape for s in subjects] == [(32, 32, 4, 6)] * 2
    assert read_json(out / "cohort.json")["seed"] == 3
    ref, _ = phantom.make_subject(1, seed=3, **SMALL)
    assert np.array_equal(subjects[1].image, ref.image)
    assert main(["phantom", "--out", str(out), "--subjects", "0"]) == 2
    assert "subjects" in capsys.readouterr().err


def test_ensure_phantom_stamps_and_regenerates(tmp_path, monkeypatch):
    monkeypatch.setenv("CARDIOLAB_ROOT", str(tmp_path))
    data = DataConfig(phantom_subjects=2, phantom_size=24, phantom_spacing=8.0, phantom_slices=3, phantom_frames=4)
    profile = dataclasses.replace(get_profile("smoke"), data=data)
    root = phantom.ensure_phantom(profile)
    assert root == tmp_path / "data" / "phantom" / "smoke"
    stamp = root / "cohort.json"
    first = stamp.stat().st_mtime_ns
    assert phantom.ensure_phantom(profile) == root
    assert stamp.stat().st_mtime_ns == first   # up to date: kept
    bigger = dataclasses.replace(profile, data=dataclasses.replace(data, phantom_subjects=3))
    phantom.ensure_phantom(bigger)
    assert read_json(stamp)["n_subjects"] == 3
    assert len(list(read_acdc(root))) == 3


# Real ACDC means over labelled frames after prepare's percentile scaling to [-1, 1] (tiny profile).
# The phantom is calibrated on the tiny profile; the smoke-sized cohort here (6 mm after prepare) blurs more,
# which lifts the myocardium and the RV, hence the tolerance, and its 6 subjects make one large DCM heart (its
# blood pool sets the 99.5th percentile) move a mean by ~0.1, hence the median over subjects.
REAL_MEANS = {"LV": (3, 0.15), "MYO": (2, -0.52), "RV": (1, -0.16), "background": (0, -0.50)}
MEAN_TOLERANCE = 0.15


def test_prepared_intensities_near_real_acdc(prepared):
    means = {name: np.median([t["image"][t["labels"] == lab].mean().item() for _, t in prepared])
             for name, (lab, _) in REAL_MEANS.items()}
    for name, (_, real) in REAL_MEANS.items():
        assert abs(means[name] - real) < MEAN_TOLERANCE, (name, means[name], real)
    assert means["RV"] < means["LV"]                                       # RV blood darker than the LV's
    assert means["MYO"] < means["RV"]


@pytest.mark.parametrize("group", phantom.GROUPS)
def test_tissue_ordering_fat_bright_lungs_darkest(group):
    sim = phantom.simulate(0, seed=5, group=group, **MEDIUM)
    img, lab, tissue = sim["image"][0], sim["labels"][0], sim["layers"]["tissue"]       # ED, (D, X, Y)
    away = ~binary_dilation(lab > 0, iterations=3)                         # thorax clear of the beating heart
    masks = {name: away & (tissue == phantom_render.TISSUES.index(name)) for name in ("fat", "muscle", "lung", "liver")}
    mean = {name: img[m].mean() for name, m in masks.items() if m.any()}
    mean.update(myo=img[lab == 2].mean(), blood=img[lab == 3].mean())
    assert {"fat", "lung", "muscle"} <= set(mean)
    assert mean["fat"] > mean["myo"]
    assert mean["fat"] > 0.8 * mean["blood"]                                # fat competes with the blood pool
    assert min(mean, key=mean.get) == "lung"


def test_group_sizes_follow_the_table():
    rows = {g: [phantom.make_subject(i, seed=1, group=g, **MEDIUM)[1] for i in range(3)] for g in phantom.GROUPS}
    for g, truths in rows.items():
        _, _, lo, hi = phantom.ACDC_STATS[g]["lv_edv"]
        for t in truths:                                                   # rasterised at 3 mm: within 12 %
            assert 0.88 * lo <= t["EDV"] <= 1.12 * hi, (g, t["EDV"])
    edv = {g: np.mean([t["EDV"] for t in truths]) for g, truths in rows.items()}
    assert edv["DCM"] > 1.3 * edv["NOR"]

    def mid_wall_mm(group: str) -> float:   # from the written labels: equal-area circles on a mid slice
        out = []
        for i in range(3):
            s, _ = phantom.make_subject(i, seed=1, group=group, **MEDIUM)
            mid = s.label_series[:, :, 2, 0]
            cav, wall = (mid == 3).sum(), (mid >= 2).sum()
            out.append(3.0 * (np.sqrt(wall / np.pi) - np.sqrt(cav / np.pi)))
        return float(np.mean(out))

    nor, hcm = mid_wall_mm("NOR"), mid_wall_mm("HCM")
    assert nor < 12                                                        # ACDC: normal wall < 12 mm in diastole
    assert hcm > 1.3 * nor


def test_group_draws_follow_acdc_statistics():
    """Drawn (not rasterised) sizes: per group, the mean of 200 draws lies within 0.3 SD of ACDC's mean, every
    draw inside ACDC's range, and the spread is ACDC's (clipping only trims it)."""
    rng = np.random.default_rng(0)
    for g in phantom.GROUPS:
        draws = [phantom.sample_heart(g, phantom.sample_attributes(g, rng), rng, slices=8) for _ in range(200)]
        for key, column in (("edv", "lv_edv"), ("rv_edv", "rv_edv"), ("ef", "ef"), ("rv_ef", "rv_ef")):
            mean, sd, lo, hi = phantom.ACDC_STATS[g][column]
            x = np.array([d[key] for d in draws])
            assert abs(x.mean() - mean) < 0.3 * sd, (g, column, x.mean())
            assert lo <= x.min(), (g, column)
            assert x.max() <= hi, (g, column)
            assert 0.6 * sd < x.std() <= 1.05 * sd, (g, column, x.std())
        mean, sd, lo, hi = phantom.ACDC_STATS[g]["wall"]
        basal = np.array([d["wall"] * (1 + d["asymmetry"] / np.pi) for d in draws])   # circumferential mean
        assert abs(basal.mean() - mean) < 0.3 * sd, (g, basal.mean())


def test_insertion_points_every_frame_named_by_world_rule(tmp_path):
    """Every frame, null exactly where a slice has no RV, 'anterior' = the larger world z."""
    path = phantom.write_phantom_subject(tmp_path, 2, seed=4, **MEDIUM)
    s = next(iter(read_acdc(tmp_path)))
    rvip = read_json(path / phantom.TRUTH_FILE)["rv_insertion_points"]
    assert rvip["rule"] == phantom.RVIP_RULE
    frames = rvip["frames"]
    assert len(frames) == s.n_frames
    more_anterior, named = 0, 0
    for t, per_slice in enumerate(frames):
        assert len(per_slice) == s.image.shape[2]
        for z, pts in enumerate(per_slice):
            has_rv = bool((s.label_series[..., z, t] == 1).any())
            assert (pts is not None) == has_rv, (t, z)
            if pts is None:
                continue
            assert set(pts) == {"anterior", "inferior"}
            ant, inf = (s.affine @ [*pts[k], z, 1.0] for k in ("anterior", "inferior"))   # RAS+ world, mm
            assert ant[2] > inf[2], (t, z)                                 # the rule: anterior is superior
            more_anterior += ant[1] > inf[1]
            named += 1
    assert named > 0
    assert more_anterior / named > 0.9                                     # and, anatomically, anterior too


def test_default_workers_stay_serial_under_a_plain_script(monkeypatch):
    """Spawned workers rerun a plain script's top level: cohorts go parallel only under -m, notebooks and pytest."""
    import sys
    import types

    script = types.ModuleType("__main__")
    script.__file__, script.__spec__ = "/tmp/user_script.py", None
    monkeypatch.setitem(sys.modules, "__main__", script)
    assert phantom.default_workers(100) == 1
    script.__spec__ = types.SimpleNamespace(name="cardiolab.__main__")             # python -m cardiolab
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert phantom.default_workers(100) == 2
    assert phantom.default_workers(phantom.PARALLEL_FROM - 1) == 1
