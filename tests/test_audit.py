"""`audit plant` and `audit copies --embedding pixels` end to end on a smoke-profile cache of the test phantom."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cardiolab.__main__ import main
from cardiolab.privacy.embeddings import pixel_embeddings
from cardiolab.profiles import get_profile


@pytest.fixture(scope="module")
def cache(phantom_root, tmp_path_factory):
    from cardiolab.data.prepare import prepare

    return prepare(phantom_root, "acdc", get_profile("smoke"), tmp_path_factory.mktemp("audit") / "cache").parent


def test_pixel_embeddings_shape():
    e = pixel_embeddings(torch.zeros(3, 2, 32, 32, 4))
    assert e.shape == (3, 2 * 16 * 16 * 4)


@pytest.fixture(scope="module")
def planted(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("planted") / "cohort"
    code = main(["audit", "plant", "--profile", "smoke", "--train", str(cache), "--out", str(out),
                 "--n-copies", "4", "--n-fresh", "3"])
    assert code == 0
    return out


def test_audit_plant_writes_a_cohort_with_planted_json(planted):
    record = json.loads((planted / "planted.json").read_text())
    assert len(record) == 7
    assert sum(v is not None for v in record.values()) == 4
    assert len([p for p in planted.iterdir() if p.is_dir()]) == 7
    assert not any(planted.glob("*/*_4d_gt.nii.gz"))          # image-only, like another tool's cohort
    nonmembers = json.loads((planted / "nonmembers.json").read_text())
    assert nonmembers == {"kind": "fresh phantoms", "seed": 7, "n": 3, "description": "fresh phantoms, seed 7"}


@pytest.fixture(scope="module")
def real_source(tmp_path_factory):
    """A root whose data source is a 20-subject ACDC release (phantom subjects as ACDC ships them, no phantom truth
    beside them), prepared at smoke: splits 0.5 / 0.3 / 0.2 leave a holdout of 4."""
    from cardiolab.data.prepare import ensure_prepared
    from cardiolab.data.releases import write_acdc_release
    from cardiolab.profiles import DATA_ENV, with_data

    base = tmp_path_factory.mktemp("real")
    data = write_acdc_release(base / "ACDC", 20, seed=3, size=48, spacing=4.0, slices=6, frames=10)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CARDIOLAB_ROOT", str(base / "root"))
        mp.delenv(DATA_ENV, raising=False)
        cache = ensure_prepared(with_data(get_profile("smoke"), data, "acdc"))
    return {"root": base / "root", "data": data, "cache": cache}


def test_on_real_data_the_planted_non_members_are_held_out_patients_never_calibrating_tau(real_source, tmp_path,
                                                                                        monkeypatch, capsys):
    from cardiolab.core import read_json
    from cardiolab.privacy.audit import audit_copies, holdout_halves
    from cardiolab.profiles import with_data

    monkeypatch.setenv("CARDIOLAB_ROOT", str(real_source["root"]))
    splits = read_json(real_source["cache"] / "manifest.json")["splits"]
    holdout, trained = sorted(splits["holdout"]), set(splits["public"] + splits["private"])
    assert len(holdout) == 4
    out = tmp_path / "planted"
    assert main(["audit", "plant", "--profile", "smoke", "--data", str(real_source["data"]), "--out", str(out),
                 "--n-copies", "3"]) == 0                          # smoke asks for 4 non-members: capped at 2
    assert "among 2 non-members (real holdout, 2 subjects)" in capsys.readouterr().out
    record = json.loads((out / "nonmembers.json").read_text())
    calibration_half, nonmember_half = holdout_halves(holdout)
    assert record["kind"] == "real holdout"
    assert record["subjects"] == nonmember_half == holdout[1::2]
    assert not set(record["subjects"]) & trained
    assert not set(record["subjects"]) & set(calibration_half)
    assert sum(v is None for v in json.loads((out / "planted.json").read_text()).values()) == 2
    r = audit_copies(out, with_data(get_profile("smoke"), real_source["data"]), embedding="pixels",
                     out_json=tmp_path / "c.json")
    c = r["calibration"]
    assert c["holdout_planted"] == 2                               # the planted patients calibrate nothing
    assert c["n_holdout"] == len(calibration_half)
    assert c["n_reference"] == len(calibration_half)               # no phantoms beside a real holdout
    assert r["planted"]["n_fresh"] == 2
    assert r["planted"]["nonmembers"] == "real holdout, 2 subjects"


def test_real_non_members_need_a_holdout_of_two(tmp_path):
    from cardiolab.core import CardiolabError, write_json
    from cardiolab.data.prepare import CACHE_VERSION
    from cardiolab.privacy.audit import nonmember_cines
    from cardiolab.profiles import with_data

    write_json(tmp_path / "cache" / "manifest.json",
               {"version": CACHE_VERSION, "subjects": [], "splits": {"public": ["a", "b"], "holdout": ["c"]}})
    real = with_data(get_profile("smoke"), tmp_path, "acdc")
    with pytest.raises(CardiolabError, match=r"has 1 subject\(s\); real non-members need >= 2"):
        nonmember_cines(real, tmp_path / "cache", ["a", "b"], 4)
    assert nonmember_cines(real, tmp_path / "cache", ["a", "b"], 0)[0] is None    # copies only: nothing to draw


def test_audit_copies_pixels_end_to_end(planted, cache, tmp_path):
    out = tmp_path / "copies.json"
    code = main(["audit", "copies", "--profile", "smoke", "--synthetic", str(planted), "--train", str(cache),
                 "--holdout", str(cache), "--embedding", "pixels", "--json", str(out)])
    assert code == 0
    r = json.loads(out.read_text())
    assert {"threshold", "copy_fraction", "memorized_fraction", "per_synthetic", "distances", "planted"} <= set(r)
    assert set(r["per_synthetic"][0]) >= {"id", "nearest_train_id", "distance", "is_copy"}
    assert r["n_train"] == 5
    assert r["n_holdout"] == 1
    assert r["calibration"]["holdout_planted"] == 0               # phantom non-members: the holdout stays whole
    assert r["planted"]["nonmembers"] == "fresh phantoms, seed 7"


def test_audit_copies_calibrates_on_holdout_plus_calibration_phantoms(planted, cache, phantom_root, tmp_path):
    from cardiolab.privacy.audit import CALIBRATION_SEED, FRESH_SEED, audit_copies

    r = audit_copies(planted, get_profile("smoke"), cache, cache, out_json=tmp_path / "c.json")
    c = r["calibration"]
    assert c["n_calibration"] == get_profile("smoke").copydetector.calibration
    assert c["n_reference"] == c["n_holdout"] + c["n_calibration"]
    assert c["enough"]
    assert r["threshold"] == sorted(c["dcr_reference"])[c["rank"] - 1]
    assert CALIBRATION_SEED not in (0, FRESH_SEED)            # neither training nor planted-fresh phantoms
    assert (phantom_root.parent / f"{phantom_root.name}-calibration" / "cohort.json").exists()


def test_audit_copies_holdout_only_says_too_few_references(planted, cache, tmp_path, capsys):
    out = tmp_path / "copies.json"
    code = main(["audit", "copies", "--profile", "smoke", "--synthetic", str(planted), "--train", str(cache),
                 "--holdout", str(cache), "--calibration", "0", "--json", str(out)])
    assert code == 0
    c = json.loads(out.read_text())["calibration"]
    assert c["n_reference"] == 1
    assert not c["enough"]
    assert "too few references" in capsys.readouterr().out


def test_audit_copies_refuses_calibration_phantoms_for_other_data(planted, cache, tmp_path, capsys):
    out = tmp_path / "copies.json"
    code = main(["audit", "copies", "--profile", "smoke", "--synthetic", str(planted), "--train", str(planted),
                 "--holdout", str(cache), "--calibration", "3", "--json", str(out)])
    assert code == 2
    assert not out.exists()
    assert "not a cardiolab phantom" in capsys.readouterr().err


def test_audit_copies_gate_exits_1(planted, cache, tmp_path):
    out = tmp_path / "copies.json"
    code = main(["audit", "copies", "--profile", "smoke", "--synthetic", str(planted), "--train", str(cache),
                 "--holdout", str(cache), "--percentile", "99", "--max-copy-fraction", "0", "--json", str(out)])
    assert code == 1
    assert json.loads(out.read_text())["passed"] is False


@pytest.mark.parametrize("argv, match", [(["--percentile", "150"], "--percentile"),
                                         (["--confidence", "1"], "--confidence"),
                                         (["--embedding", "evaluator", "--detector", "no-such-run"], "--embedding")])
def test_audit_copies_bad_input_exits_2_without_json(planted, cache, tmp_path, capsys, argv, match):
    out = tmp_path / "copies.json"
    code = main(["audit", "copies", "--profile", "smoke", "--synthetic", str(planted), "--train", str(cache),
                 "--holdout", str(cache), "--json", str(out), *argv])
    assert code == 2
    assert not out.exists()
    assert match in capsys.readouterr().err


def test_audit_copies_empty_synthetic_exits_2(cache, tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "copies.json"
    assert main(["audit", "copies", "--profile", "smoke", "--synthetic", str(tmp_path / "empty"),
                 "--train", str(cache), "--holdout", str(cache), "--json", str(out)]) == 2
    assert not out.exists()


def test_untransformed_planted_copies_are_all_found_in_pixels(cache, tmp_path):
    from cardiolab.privacy.audit import audit_copies, plant_cohort
    from cardiolab.privacy.plant import CopyTransforms

    plant_cohort(tmp_path / "p", get_profile("smoke"), cache, n_copies=3, n_fresh=2, transforms=CopyTransforms(p=0.0))
    r = audit_copies(tmp_path / "p", get_profile("smoke"), cache, cache, out_json=tmp_path / "c.json")
    assert r["planted"]["recall_matched"] == 100.0


def test_audit_copies_control_separates_look_alikes_from_memorization(cache, tmp_path, capsys):
    import shutil

    from cardiolab.privacy.audit import plant_cohort
    from cardiolab.privacy.plant import CopyTransforms, read_planted

    plant_cohort(tmp_path / "p", get_profile("smoke"), cache, n_copies=3, n_fresh=2, transforms=CopyTransforms(p=0.0))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for sid, source in read_planted(tmp_path / "p").items():
        if source is None:
            shutil.copytree(tmp_path / "p" / sid, fresh / sid)
    base = ["audit", "copies", "--profile", "smoke", "--synthetic", str(tmp_path / "p"), "--train", str(cache),
            "--holdout", str(cache), "--embedding", "pixels"]
    # the same copies in the control: every flag is shared, nothing is in excess
    assert main(base + ["--control", str(tmp_path / "p"), "--json", str(tmp_path / "same.json")]) == 0
    same = json.loads((tmp_path / "same.json").read_text())
    copies = [p for p in same["per_synthetic"] if p["is_copy"]]
    assert len(copies) == 3
    assert all(p["in_control"] for p in copies)
    assert same["control"]["excess_copy_fraction"] == 0.0
    assert len(same["control"]["shared"]) == 3
    assert "3 of 3 flagged training subjects flagged by the control too" in capsys.readouterr().out
    # fresh phantoms only in the control: the copies are the audited cohort's own
    assert main(base + ["--control", str(fresh), "--json", str(tmp_path / "fresh.json")]) == 0
    own = json.loads((tmp_path / "fresh.json").read_text())
    assert own["control"]["shared"] == []
    assert not any(p["in_control"] for p in own["per_synthetic"])
    assert own["control"]["excess_copy_fraction"] == own["copy_fraction"] - own["control"]["copy_fraction"] > 0
    # a missing control: one line, exit 2, no JSON
    assert main(base + ["--control", str(tmp_path / "nope"), "--json", str(tmp_path / "x.json")]) == 2
    assert "--control" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def _cohort_copy(src, dst, n=2):
    import shutil

    dst.mkdir()
    for p in sorted(q for q in src.iterdir() if q.is_dir())[:n]:
        shutil.copytree(p, dst / p.name)
    return dst


def test_audit_copies_nan_voxel_exits_2_without_json(phantom_root, cache, tmp_path, capsys):
    import nibabel as nib
    import numpy as np

    syn = _cohort_copy(phantom_root, tmp_path / "nan")
    path = next(syn.glob("*/*_4d.nii.gz"))
    img = nib.load(path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    data[10, 10, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine, img.header), path)
    out = tmp_path / "copies.json"
    assert main(["audit", "copies", "--profile", "smoke", "--synthetic", str(syn), "--train", str(cache),
                 "--holdout", str(cache), "--json", str(out)]) == 2
    assert not out.exists()
    assert "NaN" in capsys.readouterr().err


def test_audit_copies_other_geometry_synthetic_exits_2(phantom_root, cache, tmp_path, capsys):
    from cardiolab.data.phantom import generate_cohort

    generate_cohort(tmp_path / "small", 1, seed=3, size=32, spacing=4.0, slices=2, frames=4)
    out = tmp_path / "copies.json"
    assert main(["audit", "copies", "--profile", "smoke", "--synthetic", str(tmp_path / "small"), "--train",
                 str(cache), "--holdout", str(cache), "--json", str(out)]) == 2
    assert not out.exists()


def _image_only_copies(src, dst, ids, labels=False):
    """Copy subjects of an ACDC-layout cohort under new ids (copy001, ...): the 4D image and Info.cfg, and with
    labels=True the 4D label series too. Returns {new id: source id}."""
    import shutil

    dst.mkdir(parents=True, exist_ok=True)
    made = {}
    for k, sid in enumerate(ids):
        new = f"copy{k + 1:03d}"
        (dst / new).mkdir()
        shutil.copy(src / sid / f"{sid}_4d.nii.gz", dst / new / f"{new}_4d.nii.gz")
        shutil.copy(src / sid / "Info.cfg", dst / new / "Info.cfg")
        if labels:
            shutil.copy(src / sid / f"{sid}_4d_gt.nii.gz", dst / new / f"{new}_4d_gt.nii.gz")
        made[new] = sid
    return made


@pytest.fixture(scope="module")
def train_ids(cache):
    from cardiolab.data.datasets import load_manifest

    splits = load_manifest(cache)["splits"]
    return sorted(splits["public"] + splits["private"])


def test_image_only_copy_at_native_geometry_has_distance_zero_and_is_flagged(phantom_root, cache, train_ids,
                                                                                tmp_path):
    from cardiolab.privacy.audit import audit_copies

    made = _image_only_copies(phantom_root, tmp_path / "syn", train_ids[:3])
    assert not list((tmp_path / "syn").glob("*/*_gt.nii.gz"))
    r = audit_copies(tmp_path / "syn", get_profile("smoke"), cache, cache, embedding="pixels",
                     out_json=tmp_path / "c.json")
    for p in r["per_synthetic"]:
        assert p["nearest_train_id"] == made[p["id"]]
        assert p["distance"] < 1e-9
        assert p["is_copy"]


def test_a_copys_distance_does_not_depend_on_its_label_files(phantom_root, cache, train_ids, tmp_path):
    from cardiolab.privacy.audit import audit_copies

    _image_only_copies(phantom_root, tmp_path / "bare", train_ids[:2])
    _image_only_copies(phantom_root, tmp_path / "labelled", train_ids[:2], labels=True)
    assert list((tmp_path / "labelled").glob("*/*_gt.nii.gz"))
    bare, labelled = (audit_copies(tmp_path / name, get_profile("smoke"), cache, cache, embedding="pixels",
                                   out_json=tmp_path / f"{name}.json")["per_synthetic"]
                      for name in ("bare", "labelled"))
    assert [p["distance"] for p in bare] == [p["distance"] for p in labelled]


def test_image_only_copy_at_profile_geometry_is_flagged(cache, train_ids, tmp_path):
    from cardiolab.data.cines import load_cines
    from cardiolab.io.cohort import write_cines
    from cardiolab.privacy.audit import audit_copies

    free = load_cines(cache, get_profile("smoke"), label_free=True)
    pick = [free.ids.index(s) for s in train_ids[:2]]
    d = get_profile("smoke").data
    write_cines(tmp_path / "syn", free.images[pick], {"spacing": [d.spacing, d.spacing, 10.0], "frame_ms": 40.0,
                                                      "es": 3}, ids=["gen001", "gen002"])
    r = audit_copies(tmp_path / "syn", get_profile("smoke"), cache, cache, embedding="pixels",
                     out_json=tmp_path / "c.json")
    for p, source in zip(r["per_synthetic"], train_ids[:2]):
        assert p["nearest_train_id"] == source
        assert p["distance"] < 1e-4               # the stored NIfTI rounds the cine
        assert p["is_copy"]


def test_a_sub_pixel_shifted_image_only_copy_is_flagged(cache, train_ids, tmp_path):
    """Copies moved by 0.5-1.5 px per axis with cubic splines (scipy, not cardiolab's own warps), written image-only: each is
    flagged and matched to its source."""
    from scipy import ndimage

    from cardiolab.data.cines import load_cines
    from cardiolab.io.cohort import write_cines
    from cardiolab.privacy.audit import audit_copies

    free = load_cines(cache, get_profile("smoke"), label_free=True)
    moves = [(1.5, -1.25), (-1.25, 0.5), (0.5, -0.75)]
    copies = torch.stack([torch.from_numpy(ndimage.shift(free.images[free.ids.index(s)].numpy() + 1, (0, dy, dx, 0),
                                                         order=3, mode="constant") - 1).clamp(-1, 1)
                          for s, (dx, dy) in zip(train_ids, moves)])
    d = get_profile("smoke").data
    write_cines(tmp_path / "syn", copies, {"spacing": [d.spacing, d.spacing, 10.0], "frame_ms": 40.0, "es": 3},
                ids=["gen001", "gen002", "gen003"])
    r = audit_copies(tmp_path / "syn", get_profile("smoke"), cache, cache, embedding="pixels",
                     out_json=tmp_path / "c.json")
    for p, source in zip(r["per_synthetic"], train_ids):
        assert p["nearest_train_id"] == source
        assert p["is_copy"], (p, r["threshold"])


def test_a_generators_copy_of_a_cache_cine_is_flagged(cache, train_ids, tmp_path):
    """A generator learns the cache's cines, cropped around the labelled heart; the audit compares label-free
    crops: the copy still lands on its source (alignment), at profile geometry."""
    from cardiolab.data.cines import load_cines
    from cardiolab.io.cohort import write_cines
    from cardiolab.privacy.audit import audit_copies

    cached = load_cines(cache, get_profile("smoke"), split=None)
    pick = [cached.ids.index(s) for s in train_ids[:3]]
    d = get_profile("smoke").data
    write_cines(tmp_path / "syn", cached.images[pick], {"spacing": [d.spacing, d.spacing, 10.0], "frame_ms": 40.0,
                                                        "es": 3}, ids=["gen001", "gen002", "gen003"])
    r = audit_copies(tmp_path / "syn", get_profile("smoke"), cache, cache, embedding="pixels",
                     out_json=tmp_path / "c.json")
    assert [p["nearest_train_id"] for p in r["per_synthetic"]] == train_ids[:3]
    assert all(p["is_copy"] for p in r["per_synthetic"])


def test_label_free_cache_needs_its_source_cohort(cache, tmp_path):
    import shutil

    from cardiolab.core import CardiolabError, read_json, write_json
    from cardiolab.data.cines import load_cines

    moved = tmp_path / "cache"
    shutil.copytree(cache, moved)
    manifest = read_json(moved / "manifest.json")
    manifest["source"]["root"] = str(tmp_path / "gone")
    write_json(moved / "manifest.json", manifest)
    with pytest.raises(CardiolabError, match="manifest.json.*source cohort"):
        load_cines(moved, get_profile("smoke"), label_free=True)


def test_audit_families_leaves_each_family_out_of_its_detector(cache, tmp_path, capsys):
    out = tmp_path / "families"
    assert main(["audit", "families", "--profile", "smoke", "--out", str(out), "--families", "shift,mixed",
                 "--seeds", "11", "--n-fresh", "2", "--steps", "2"]) == 0
    r = json.loads((out / "families.json").read_text())
    assert [(row["family"], row["without"]) for row in r["rows"]] == [("shift", ["shift"]), ("mixed", [])]
    assert r["rows"][0]["detector"].endswith("detector-without-shift")
    assert all(row["fresh_seed"] == 111 for row in r["rows"])
    shift = json.loads((out / "shift-11" / "transforms.json").read_text())
    assert shift
    assert all(t["rotation_deg"] == 0.0 and t["zoom"] == 1.0 for t in shift.values())
    table = capsys.readouterr().out
    assert "| shift | yes |" in table
    assert "| mixed |" in table


def _beating(n=3, seed=0):
    """Toy cines (n, 2, 32, 32, 8): a disc whose radius and brightness beat over the frames, off the middle."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    out = []
    for i in range(n):
        cy, cx = 14 + 3 * torch.rand(1, generator=g), 15 + 3 * torch.rand(1, generator=g)
        frames = [torch.where((yy - cy) ** 2 + (xx - cx) ** 2 <= (5 + 2 * torch.cos(torch.tensor(6.283 * t / 8))) ** 2,
                              0.6 + 0.1 * i, -0.8) for t in range(8)]
        out.append(torch.stack(frames, -1)[None].expand(2, -1, -1, -1))
    return torch.stack(out)


def test_alignment_cancels_a_frame_roll_exactly_and_a_shift_nearly():
    from cardiolab.data.cines import align_cines
    from cardiolab.privacy.copies import correlation_distance
    from cardiolab.privacy.plant import apply_transform

    x = _beating()
    a = align_cines(x)
    assert a.shape == x.shape
    torch.testing.assert_close(align_cines(x.roll(3, dims=-1)), a, atol=1e-4, rtol=0)
    shifted = torch.stack([apply_transform(c, {"shift_px": [2.0, -3.0]})[0] for c in x])
    raw = correlation_distance(pixel_embeddings(x).numpy(), pixel_embeddings(shifted).numpy()).diagonal()
    aligned = correlation_distance(pixel_embeddings(a).numpy(),
                                   pixel_embeddings(align_cines(shifted)).numpy()).diagonal()
    assert (aligned < raw / 3).all(), (aligned, raw)


def test_alignment_commutes_with_a_blur():
    """A blurred copy lands where its source does, blurred: the centre comes from the low temporal harmonics with a
    linear weight (the temporal std squared moved it: 0.0022-0.0045 on these cines)."""
    from cardiolab.data.cines import align_cines
    from cardiolab.privacy.copies import correlation_distance
    from cardiolab.privacy.plant import apply_transform

    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    cines = []
    for _ in range(4):                      # a beating disk and a fainter, smaller one beside it, in noise
        cy, cx = 12 + 3 * torch.rand(1, generator=g), 13 + 3 * torch.rand(1, generator=g)
        c = torch.cos(torch.arange(8) * 6.283 / 8)
        big = (yy - cy)[..., None] ** 2 + (xx - cx)[..., None] ** 2 <= (5 + 2 * c) ** 2
        small = (yy - cy - 9)[..., None] ** 2 + (xx - cx - 7)[..., None] ** 2 <= (2 + c) ** 2
        x = torch.where(big, 0.6, torch.where(small, 0.3, -0.6)).expand(2, -1, -1, -1)
        cines.append((x + 0.08 * torch.randn(x.shape, generator=g)).clamp(-1, 1))
    x = torch.stack(cines)

    def blur(v):
        return torch.stack([apply_transform(c, {"blur_sigma": 1.0})[0] for c in v])

    d = correlation_distance(pixel_embeddings(align_cines(blur(x))).numpy(),
                             pixel_embeddings(blur(align_cines(x))).numpy()).diagonal()
    assert (d < 0.0015).all(), d


def test_a_zoomed_copy_meets_its_source_in_the_view_that_undoes_the_zoom():
    from cardiolab.data.cines import align_cines
    from cardiolab.privacy.copies import correlation_distance
    from cardiolab.privacy.embeddings import Embedder
    from cardiolab.privacy.plant import apply_transform

    x = _beating()
    zoomed = torch.stack([apply_transform(c, {"zoom": 1.1})[0] for c in x])
    embed = Embedder("pixels", None, pixel_embeddings)
    views = embed.views(zoomed).numpy()
    assert views.shape[:2] == (len(x), 5)
    torch.testing.assert_close(torch.from_numpy(views[:, 0]), embed(zoomed))     # view 0: the cine as it is
    source = embed(x).numpy()
    as_is = correlation_distance(views[:, 0], source).diagonal()
    searched = correlation_distance(views, source).diagonal()
    assert (searched < as_is / 3).all(), (searched, as_is)
    # distance over views: the nearest view, per pair
    d = correlation_distance(views, source)
    per_view = [correlation_distance(views[:, v], source) for v in range(views.shape[1])]
    assert (abs(d - np.min(per_view, axis=0)) < 1e-12).all()


def test_correlation_distance_takes_views_on_the_query_side_only():
    from cardiolab.core import CardiolabError
    from cardiolab.privacy.copies import correlation_distance

    with pytest.raises(CardiolabError, match="b: expected embeddings"):
        correlation_distance(np.ones((2, 3, 4)), np.ones((2, 3, 4)))


def test_alignment_rejects_other_shapes():
    from cardiolab.core import CardiolabError
    from cardiolab.data.cines import align_cines

    with pytest.raises(CardiolabError, match="align_cines"):
        align_cines(torch.zeros(2, 32, 32, 8))


def test_audit_copies_defaults_to_the_detector_when_trained_else_pixels_with_a_warning(planted, cache, tmp_path,
                                                                                         monkeypatch, capsys):
    import shutil

    from cardiolab.privacy.embeddings import default_embedding

    monkeypatch.setenv("CARDIOLAB_ROOT", str(tmp_path / "root"))
    assert default_embedding(get_profile("smoke")) == "pixels"
    out = tmp_path / "copies.json"
    assert main(["audit", "copies", "--profile", "smoke", "--synthetic", str(planted), "--train", str(cache),
                 "--holdout", str(cache), "--json", str(out)]) == 0
    err = capsys.readouterr().err
    assert "no trained copy detector" in err
    assert len([l for l in err.splitlines() if "warning" in l]) == 1
    assert json.loads(out.read_text())["embedding"] == "pixels"
    run = get_profile("smoke").run("copy-detector")
    from cardiolab.tasks import copy_detector
    copy_detector.train(get_profile("smoke"), run, steps=2, cache_dir=cache)
    assert default_embedding(get_profile("smoke")) == "copy-detector"
    assert main(["audit", "copies", "--profile", "smoke", "--synthetic", str(planted), "--train", str(cache),
                 "--holdout", str(cache), "--json", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert json.loads(out.read_text())["embedding"] == "copy-detector"
    shutil.rmtree(tmp_path / "root")
