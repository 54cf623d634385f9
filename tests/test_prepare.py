"""Preprocessing, the cache, splits, datasets and attribute codes (smoke profile sizes)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cardiolab.core import CardiolabError
from cardiolab.data import attributes, geometry, prepare as prep
from cardiolab.data.datasets import CineDataset, load_manifest
from cardiolab.io.cohort import Subject, make_affine, write_subject
from cardiolab.profiles import get_profile, with_data

SMOKE = get_profile("smoke")
GROUPS = ("NOR", "DCM", "HCM", "MINF", "ARV")
N, SIZE, SLICES, FRAMES, SPACING = 10, 64, 6, 12, 3.0


def toy_subject(i: int, full_series: bool = True) -> Subject:
    """A beating LV disk + MYO ring + RV blob, off-centre, ED at frame 3; LV only in slices 1..4."""
    rng = np.random.default_rng(i)
    ed = 3
    es = (ed + 5) % FRAMES
    cx, cy = 24 + i % 3, 38 - i % 4  # heart away from the image centre (32, 32)
    gx, gy = np.indices((SIZE, SIZE))
    image = np.full((SIZE, SIZE, SLICES, FRAMES), 0.1, np.float32)
    series = np.zeros((SIZE, SIZE, SLICES, FRAMES), np.uint8)
    for t in range(FRAMES):
        phase = np.sin(np.pi * ((t - ed) % FRAMES) / FRAMES) ** 2  # 0 at ED, max near mid-cycle
        for z in range(1, 5):
            r = (7.0 - 0.6 * z) * (1 - 0.35 * phase)
            d = np.hypot(gx - cx, gy - cy)
            rv = np.hypot(gx - cx, gy - (cy - 11)) < 5
            lab = np.where(d < r, 3, np.where(d < r + 2.5, 2, np.where(rv, 1, 0)))
            series[..., z, t] = lab
            image[..., z, t] = np.choose(lab, [0.1, 0.85, 0.3, 1.0])
    image += rng.normal(0, 0.02, image.shape).astype(np.float32)
    info = {"Group": GROUPS[i % 5], "Height": 160 + 3 * i, "Weight": 60 + 4 * i, "Age": 30 + 5 * i,
            "Sex": "MF"[i % 2]}
    labels = {} if full_series else {ed: series[..., ed], es: series[..., es]}
    return Subject(id=f"toy{i:03d}", image=image, affine=make_affine((SPACING, SPACING, 10.0)), frame_ms=40.0,
                   ed=ed, es=es, labels=labels, label_series=series if full_series else None, info=info)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_cohort")
    for i in range(N):
        write_subject(root, toy_subject(i, full_series=i % 4 != 3))
    return root


@pytest.fixture(scope="module")
def cache(toy_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "smoke"
    prep.prepare(toy_root, "acdc", SMOKE, out, seed=0)
    return out


def test_cache_shapes_and_ranges(cache):
    m = load_manifest(cache)
    d = SMOKE.data
    assert (m["image_size"], m["frames"], m["slices"]) == (d.image_size, d.frames, d.slices)
    assert len(m["subjects"]) == N
    assert m["profile"]["name"] == "smoke"
    for rec in m["subjects"]:
        t = torch.load(cache / rec["file"], weights_only=True)
        assert t["image"].shape == (d.slices, d.image_size, d.image_size, d.frames)
        assert t["image"].dtype == torch.float32
        assert t["labels"].dtype == torch.uint8
        assert t["image"].min() >= -1
        assert t["image"].max() <= 1
        assert t["image"].max() > 0.9
        assert t["image"].min() < -0.9  # the range is used, not squashed
        assert set(t["labels"].unique().tolist()) <= {0, 1, 2, 3}
        assert t["label_mask"].shape == (d.frames,)
        assert t["label_mask"].dtype == torch.bool
        assert rec["ed"] == 0
        assert rec["label_frames"] == torch.nonzero(t["label_mask"]).flatten().tolist()
        assert rec["spacing"][0] == pytest.approx(d.spacing)
        assert rec["frame_ms"] == pytest.approx(40.0 * FRAMES / d.frames)
        assert t["cond"].tolist() == rec["cond"] == attributes.encode(rec["attributes"]).tolist()


def test_ed_first_heart_centred_lv_slices(cache):
    m = load_manifest(cache)
    size = SMOKE.data.image_size
    for rec in m["subjects"]:
        t = torch.load(cache / rec["file"], weights_only=True)
        lv = t["labels"] == 3
        if t["label_mask"].all():
            vol = lv.sum(dim=(0, 1, 2))
            assert int(vol.argmax()) == 0
            assert vol[0] > vol.min() * 1.3  # frame 0 = ED = largest LV
        else:  # ED/ES-only labels: exactly the ED frame and the mapped ES frame are valid
            assert rec["label_frames"] == sorted({0, rec["es"]})
            assert rec["es"] == round(5 * SMOKE.data.frames / FRAMES)
        # every chosen slice holds LV (LV spans 4 of 6 source slices, 4 are wanted)
        assert rec["source"]["slices"] == [1, 2, 3, 4]
        assert lv[..., 0].any(dim=(1, 2)).all()
        cx, cy = np.argwhere(lv[..., 0].numpy().any(0)).mean(0)
        assert abs(cx - (size - 1) / 2) <= 0.6
        assert abs(cy - (size - 1) / 2) <= 0.6


def test_unlabelled_subject_centred_from_motion():
    s = toy_subject(1)
    truth = s.label_series
    s.label_series, s.labels = None, {}
    tensors, entry = prep.prepare_subject(s, SMOKE)
    assert not tensors["label_mask"].any()
    assert tensors["labels"].sum() == 0
    assert entry["source"]["slices"] == [1, 2, 3, 4]  # central slices
    # the motion-based centre lands within a voxel or so of the true LV centroid
    x0, y0 = np.argwhere(truth[..., 2, 3] == 3).mean(0) / (SMOKE.data.spacing / SPACING)
    cx, cy = entry["source"]["centre"]
    assert abs(cx - x0) < 1.5
    assert abs(cy - y0) < 1.5


def test_cine_at_profile_geometry_is_not_recentred():
    """A generator's export (profile crop size, spacing, slices, frames) keeps its field of view: no band of
    padding from a heart centre guessed off a noisy sample."""
    d = SMOKE.data
    s = toy_subject(2)
    image = s.image[::2, ::2, 1:5, ::2][: d.image_size, : d.image_size, :, : d.frames]  # 32 x 32 x 4 x 6 at 6 mm
    image = np.concatenate([image, image[..., :2]], axis=-1)                           # 8 frames
    at = Subject(id="synth0001", image=image, affine=make_affine((d.spacing, d.spacing, 10.0)), frame_ms=40.0,
                 ed=0, es=3, labels={}, label_series=None, info={})
    assert geometry.at_profile_geometry(image.shape, (d.spacing, d.spacing), SMOKE)
    tensors, entry = prep.prepare_subject(at, SMOKE)
    assert entry["source"]["grid"]["start"] == [0, 0]
    guessed = geometry.heart_centre(geometry.to_txyz(image), geometry.to_txyz(np.zeros(image.shape, np.uint8)),
                                    np.zeros(8, bool),
                                d.spacing)
    assert np.abs(guessed - 15.5).max() > 2  # the heart is off-centre: a heart-centred crop would have moved
    lo, hi = np.percentile(image, [prep.PCT_LOW, prep.PCT_HIGH])
    expected = np.clip((image - lo) / (hi - lo) * 2 - 1, -1, 1).transpose(2, 0, 1, 3)
    np.testing.assert_allclose(tensors["image"].numpy(), expected, atol=1e-4)
    # one voxel more in-plane and it is a cohort like any other: heart-centred
    assert not geometry.at_profile_geometry((d.image_size + 1, d.image_size, d.slices, d.frames), (6.0, 6.0), SMOKE)


def test_resample_cycle_known_answer():
    x = torch.arange(6, dtype=torch.float32)  # value = frame index
    out = geometry.resample_cycle(x, ed=4, frames=4)  # times 4, 5.5, 7 -> 1, 8.5 -> 2.5 (mod 6)
    assert out.tolist() == pytest.approx([4.0, 2.5, 1.0, 2.5])
    assert geometry.resample_cycle(x, 4, 4, "nearest").tolist() == [4.0, 0.0, 1.0, 2.0]  # round half to even
    assert geometry.cycle_index(1, ed=4, n_old=6, n_new=4) == 2


def test_canonical_inplane_flips_x():
    img = np.arange(2 * 3 * 1 * 1, dtype=np.float32).reshape(2, 3, 1, 1)
    aff = np.diag([-1.5, 2.0, 8.0, 1.0])
    out, lab, a = geometry.canonical_inplane(img, img.astype(np.uint8), aff)
    assert np.array_equal(out, img[::-1])
    assert a[0, 0] == 1.5
    assert a[0, 3] == -1.5
    # the world position of voxel (0, 0, 0) after the flip is that of voxel (1, 0, 0) before
    assert np.allclose(a @ [0, 0, 0, 1], aff @ [1, 0, 0, 1])


def test_splits_disjoint_cover_stratified_deterministic():
    ids = [f"s{i:02d}" for i in range(40)]
    groups = [GROUPS[i % 5] for i in range(40)]
    a = prep.stratified_splits(ids, groups, (0.5, 0.3, 0.2), seed=3)
    assert a == prep.stratified_splits(ids, groups, (0.5, 0.3, 0.2), seed=3)
    assert a != prep.stratified_splits(ids, groups, (0.5, 0.3, 0.2), seed=4)
    members = [s for v in a.values() for s in v]
    assert sorted(members) == ids
    assert len(set(members)) == 40
    assert [len(a[k]) for k in ("public", "private", "holdout")] == [20, 12, 8]
    group = dict(zip(ids, groups))
    for name, frac in zip(("public", "private", "holdout"), (0.5, 0.3, 0.2)):
        for g in GROUPS:  # 8 per group -> 4 / 2.4 / 1.6 expected
            assert abs(sum(group[s] == g for s in a[name]) - frac * 8) < 1.0


def test_manifest_splits(cache):
    m = load_manifest(cache)
    assert sorted(sum(m["splits"].values(), [])) == sorted(r["id"] for r in m["subjects"])
    assert [len(m["splits"][k]) for k in ("public", "private", "holdout")] == [5, 3, 2]
    assert all(r["id"] in m["splits"][r["split"]] for r in m["subjects"])


def test_prepare_is_atomic(toy_root, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    real, calls = prep.prepare_subject, []

    def flaky(subject, profile, rvip=None):
        calls.append(subject.id)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(subject, profile, rvip)

    monkeypatch.setattr(prep, "prepare_subject", flaky)
    with pytest.raises(RuntimeError):
        prep.prepare(toy_root, "acdc", SMOKE, out)
    assert list(tmp_path.iterdir()) == []  # no cache, no temp folder


def test_prepare_replaces_only_when_done(toy_root, cache, tmp_path, monkeypatch):
    out = tmp_path / "c"
    prep.prepare(toy_root, "acdc", SMOKE, out, seed=1)
    assert prep.is_current(out, with_data(SMOKE, toy_root))
    assert not prep.is_current(out, with_data(get_profile("tiny"), toy_root))     # other data settings
    assert not prep.is_current(out, SMOKE)                                       # not the phantom's cache
    before = (out / "manifest.json").read_text()
    monkeypatch.setattr(prep, "prepare_subject", lambda s, p, rvip=None: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        prep.prepare(toy_root, "acdc", SMOKE, out, seed=2)
    assert (out / "manifest.json").read_text() == before
    with pytest.raises(CardiolabError, match="not a folder"):
        prep.prepare(tmp_path / "nowhere", "acdc", SMOKE, tmp_path / "c2")
    assert not (tmp_path / "c2").exists()


def test_dataset_volume_and_slice(cache):
    d = SMOKE.data
    vol = CineDataset(cache, "public")
    assert len(vol) == 5
    assert vol.ids == load_manifest(cache)["splits"]["public"]
    item = vol[1]
    assert item["image"].shape == (1, d.slices, d.image_size, d.image_size, d.frames)
    assert item["image"].dtype == torch.float32
    assert item["labels"].dtype == torch.int64
    assert item["labels"].shape == (d.slices, d.image_size, d.image_size, d.frames)
    assert item["label_mask"].dtype == torch.bool
    assert item["cond"].shape == (len(attributes.FIELDS),)
    assert item["cond"].dtype == torch.int64
    assert item["index"] == 1
    sl = CineDataset(cache, vol.ids[:2], mode="slice")
    assert len(sl) == 2 * d.slices
    s = sl[d.slices + 2]
    assert (s["index"], s["slice"]) == (1, 2)
    assert s["image"].shape == (1, d.image_size, d.image_size, d.frames)
    assert s["labels"].shape == s["image"].shape[1:]
    assert torch.equal(s["image"][0], vol[1]["image"][0, 2])
    assert torch.equal(s["labels"], vol[1]["labels"][2])
    batch = next(iter(torch.utils.data.DataLoader(sl, batch_size=3)))
    assert batch["image"].shape == (3, 1, d.image_size, d.image_size, d.frames)
    assert CineDataset(cache).stack().shape == (N, 1, d.slices, d.image_size, d.image_size, d.frames)
    with pytest.raises(CardiolabError, match="split"):
        CineDataset(cache, "train")
    with pytest.raises(CardiolabError, match="manifest.json"):
        CineDataset(cache.parent / "missing")


@pytest.mark.parametrize("info,names", [
    ({"Group": "DCM", "Height": 181.0, "Weight": 92.0}, ("DCM", "unknown", "unknown", "180+cm", "85+kg")),
    ({"pathology": "Normal", "Sex": "Female", "Age": 45, "Height": 1.62}, ("NOR", "F", "40-59", "<165cm", "unknown")),
    ({"Group": "HHD", "Weight": "n/a"}, ("unknown", "unknown", "unknown", "unknown", "unknown")),
])
def test_attributes_encode(info, names):
    codes = attributes.encode(info)
    assert codes.dtype == np.int64
    assert codes.shape == (len(attributes.FIELDS),)
    assert tuple(attributes.describe(codes).values()) == names


def test_attributes_round_trip_every_code():
    cards = attributes.cardinalities()
    assert cards == [6, 3, 4, 4, 4]
    for f, card in zip(attributes.FIELDS, cards):
        for c in range(card + 1):  # + the DiT's null class, read as unknown
            codes = np.array([fl.unknown for fl in attributes.FIELDS])
            codes[attributes.FIELDS.index(f)] = c
            back = attributes.encode(attributes.decode(codes))
            assert back.tolist() == [min(x, fl.unknown) for x, fl in zip(codes, attributes.FIELDS)]
    with pytest.raises(CardiolabError):
        attributes.decode([0, 0, 0, 0, 9])


def test_unlabelled_phantom_centre_near_lv():
    """On the phantom (moving RV, bright fat) the image-based centre stays near the LV in most subjects."""
    from cardiolab.data.phantom import make_subject

    d = SMOKE.data
    errors = []
    for i in range(6):
        s, _ = make_subject(i, 0, d.phantom_size, d.phantom_spacing, d.phantom_slices, d.phantom_frames)
        _, with_labels = prep.prepare_subject(s, SMOKE)
        s.label_series = None
        _, without = prep.prepare_subject(s, SMOKE)
        errors.append(np.linalg.norm(np.subtract(with_labels["source"]["centre"], without["source"]["centre"])))
    assert np.median(errors) < 2.0     # voxels of 6 mm; the image is 32 voxels wide
    assert max(errors) < 5.0


def test_plots_write_files(cache, tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from PIL import Image

    from cardiolab import plots
    t = torch.load(cache / load_manifest(cache)["subjects"][0]["file"], weights_only=True)
    png = plots.save_figure(plots.cine_montage(t["image"], t["labels"], frames=[0, 3]), tmp_path / "f" / "m.png",
                            close=True)
    assert Image.open(png).format == "PNG"
    gif = plots.save_gif(t["image"], tmp_path / "c.gif", labels=t["labels"])
    assert Image.open(gif).n_frames == SMOKE.data.frames
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.gif", "f"]  # no temp files left
    with pytest.raises(CardiolabError, match="D, H, W, T"):
        plots.cine_montage(t["image"][0])


def test_prepare_phantom_cohort(phantom_root, tmp_path):
    """The real phantom (ED at frame 0 of 10, 4 mm) through the smoke profile: ED first, LV centred, all frames."""
    manifest = prep.prepare(phantom_root, "acdc", SMOKE, tmp_path / "cache")
    m = load_manifest(manifest.parent)
    d = SMOKE.data
    assert len(m["subjects"]) == 6
    assert sorted(sum(m["splits"].values(), [])) == [f"patient{i:03d}" for i in range(1, 7)]
    assert [len(m["splits"][k]) for k in ("public", "private", "holdout")] == [3, 2, 1]
    ds = CineDataset(manifest.parent)
    for rec, item in zip(ds.records, ds):
        assert item["label_mask"].all()
        assert rec["label_frames"] == list(range(d.frames))
        lv = (item["labels"] == 3).sum(dim=(0, 1, 2))
        assert int(lv.argmax()) == 0
        assert int(lv.argmin()) == rec["es"]
        cx, cy = np.argwhere((item["labels"][..., 0] == 3).numpy().any(0)).mean(0)
        assert abs(cx - (d.image_size - 1) / 2) < 1.5
        assert abs(cy - (d.image_size - 1) / 2) < 1.5
        assert rec["cond"] == attributes.encode(rec["attributes"]).tolist()
        assert rec["cond"][0] < 5


def test_ensure_prepared_builds_once_and_rebuilds_when_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("CARDIOLAB_ROOT", str(tmp_path))
    cache = prep.ensure_prepared(get_profile("smoke"))
    assert cache == tmp_path / "data" / "cache" / "smoke"
    assert (tmp_path / "data" / "phantom" / "smoke").is_dir()
    m = load_manifest(cache)
    assert len(m["subjects"]) == SMOKE.data.phantom_subjects
    assert m["source"]["layout"] == "acdc"
    stamp = (cache / "manifest.json").stat().st_mtime_ns
    assert prep.ensure_prepared(SMOKE) == cache
    assert (cache / "manifest.json").stat().st_mtime_ns == stamp
    m["version"] = prep.CACHE_VERSION - 1  # an old cache is rebuilt, not read
    (cache / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CardiolabError, match="cache version"):
        load_manifest(cache)
    prep.ensure_prepared(SMOKE)
    assert load_manifest(cache)["version"] == prep.CACHE_VERSION


def test_dataset_lazy_matches_in_memory(cache):
    eager, lazy = CineDataset(cache, "private", in_memory=True), CineDataset(cache, "private", in_memory=False)
    assert lazy._data is None
    assert len(lazy) == len(eager) == 3
    for a, b in zip(eager, lazy):
        assert all(torch.equal(a[k], b[k]) for k in ("image", "labels", "label_mask", "cond"))


def test_crop_around_pads_and_centres():
    x = torch.arange(10 * 10, dtype=torch.float32).reshape(1, 10, 10, 1)
    out = geometry.crop_around(x, np.array([1.0, 8.0]), size=6, value=-1.0)
    assert out.shape == (1, 6, 6, 1)
    assert out[0, 2, 2, 0] == x[0, 1, 8, 0]  # an integer centre sits half a voxel before the middle, 2.5
    assert (out[0, 0] == -1).all()
    assert (out[0, :, 4:] == -1).all()  # rows < 0 and columns > 9 are padding
    assert out[0, 1, 0, 0] == x[0, 0, 6, 0]
    assert (out[0, 1:, :4] >= 0).all()
