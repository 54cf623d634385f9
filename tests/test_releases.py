"""The phantom written as ACDC and M&Ms ship (`cardiolab.data.releases`, `phantom --release`): the readers take
it as real data (folders, Info.cfg / CSV, labels at ED and ES only, spacing from the header, varying slice
counts, raw uint16 and 8-bit intensities) and `prepare` turns it into a cache like any other source."""
from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from cardiolab.__main__ import main
from cardiolab.data.releases import THICKNESS_MM, write_acdc_release, write_mnms_release
from cardiolab.io.layouts import read_cohort, validate_cohort

GEOMETRY = dict(size=48, spacing=3.0, slices=6, frames=10)


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    base = tmp_path_factory.mktemp("releases")
    return {"acdc": write_acdc_release(base / "ACDC", 10, seed=2, **GEOMETRY),
            "mnms": write_mnms_release(base / "MnM", 8, seed=2, **GEOMETRY)}


def test_acdc_release_looks_like_the_download(releases):
    root = releases["acdc"]
    assert sorted(p.name for p in root.iterdir()) == ["testing", "training"]
    assert [p.name for p in sorted((root / "testing").iterdir())] == ["patient009", "patient010"]
    assert validate_cohort(root, "acdc") == []
    subjects = list(read_cohort(root, "acdc"))
    assert len(subjects) == 10
    for s in subjects:
        folder = next(root.glob(f"*/{s.id}"))
        assert sorted(s.labels) == sorted({s.ed, s.es})
        assert s.label_series is None   # ED and ES only
        assert not list(folder.glob("*_4d_gt.nii.gz"))
        assert not list(folder.glob("*.json"))
        keys = [line.split(":")[0] for line in (folder / "Info.cfg").read_text().splitlines()]
        assert keys == ["ED", "ES", "Group", "Height", "NbFrame", "Weight"]
        assert THICKNESS_MM[0] <= s.spacing[2] <= THICKNESS_MM[1]
        header = nib.load(folder / f"{s.id}_4d.nii.gz").header
        assert header.get_zooms()[:3] == pytest.approx(s.spacing, abs=1e-3)   # spacing from the header
    assert len({s.image.shape[2] for s in subjects}) > 2                       # slice counts vary
    assert len({s.image.shape[3] for s in subjects}) > 1                       # frame counts too
    assert any(s.ed > 0 for s in subjects)                                     # some cines start before ED
    dtypes = {str(nib.load(p).get_data_dtype()) for p in root.glob("*/*/*_4d.nii.gz")}
    assert dtypes == {"uint8", "uint16"}
    tops = sorted(float(s.image.max()) for s in subjects)
    assert tops[0] <= 255
    assert tops[-1] >= 2000                                  # 8-bit and raw scanner ranges


def test_mnms_release_has_vendors_centres_and_the_csv(releases):
    root = releases["mnms"]
    assert validate_cohort(root, "mnms") == []
    rows = list(csv.DictReader((root / "211230_M&Ms_Dataset_information.csv").open()))
    assert {r["Vendor"] for r in rows} == {"A", "B", "C", "D"}
    subjects = {s.id: s for s in read_cohort(root, "mnms")}
    assert sorted(subjects) == sorted(r["External code"] for r in rows)
    acdc = {s.id: s for s in read_cohort(releases["acdc"], "acdc")}    # the same seed: the same hearts
    for r in rows:
        s, twin = subjects[r["External code"]], acdc[f"patient{int(r['']) + 1:03d}"]
        assert (s.ed, s.es) == (int(r["ED"]), int(r["ES"])) == (twin.ed, twin.es)
        assert (s.info["Vendor"], s.info["Centre"], s.info["Group"]) == (r["Vendor"], r["Centre"], r["Pathology"])
        for frame in (s.ed, s.es):                     # M&Ms labels (1 LV, 3 RV) read back as the canonical ones
            np.testing.assert_array_equal(s.labels[frame], twin.labels[frame])
    assert sum(1 for _ in root.glob("Testing/*")) == 2
    assert sum(1 for _ in root.glob("Training/Labeled/*")) == 6


@pytest.mark.parametrize("layout", ["acdc", "mnms"])
def test_prepare_reads_a_release_into_its_own_cache(releases, layout, tmp_path, monkeypatch):
    from cardiolab.data.datasets import load_manifest
    from cardiolab.data.prepare import ensure_prepared
    from cardiolab.profiles import DATA_ENV, get_profile, with_data

    monkeypatch.setenv("CARDIOLAB_ROOT", str(tmp_path))
    monkeypatch.delenv(DATA_ENV, raising=False)
    profile = with_data(get_profile("smoke"), releases[layout], layout)
    manifest = load_manifest(ensure_prepared(profile))
    d = profile.data
    assert len(manifest["subjects"]) == (10 if layout == "acdc" else 8)
    assert all(len(s["label_frames"]) == 2 for s in manifest["subjects"])        # ED and ES, resampled
    assert not (tmp_path / "data" / "phantom").exists()                           # the phantom was never made
    assert (manifest["slices"], manifest["image_size"], manifest["frames"]) == (d.slices, d.image_size, d.frames)


def test_phantom_release_cli(tmp_path, capsys):
    out = tmp_path / "ACDC"
    assert main(["phantom", "--profile", "smoke", "--release", "acdc", "--out", str(out), "--subjects", "3"]) == 0
    assert "acdc layout" in capsys.readouterr().out
    assert len(list(read_cohort(out, "acdc"))) == 3
    assert main(["phantom", "--profile", "smoke", "--release", "mnms"]) != 0
    assert "--out" in capsys.readouterr().err


# ---- generalisation across vendors: `prepare --holdout-vendor` ------------------------------------------------

def _vendor_and_centre(root) -> dict:
    """{subject code: (Vendor, Centre)} as the release's CSV has them: the truth the cache must follow."""
    rows = csv.DictReader((root / "211230_M&Ms_Dataset_information.csv").open())
    return {r["External code"]: (r["Vendor"], r["Centre"]) for r in rows}


def test_holdout_vendor_puts_that_vendor_alone_in_holdout(releases, tmp_path, monkeypatch):
    from cardiolab.data import prepare as prep
    from cardiolab.data.datasets import load_manifest
    from cardiolab.profiles import HOLDOUT_ENV, get_profile, with_data

    monkeypatch.delenv(HOLDOUT_ENV, raising=False)
    root, truth = releases["mnms"], _vendor_and_centre(releases["mnms"])
    plain = with_data(get_profile("smoke"), root, "mnms")
    profile = with_data(plain, root, "mnms", holdout_vendor="A")
    m = load_manifest(prep.prepare(root, "mnms", profile, tmp_path / "vendor").parent)
    assert m["split_rule"] == {"holdout_vendor": ["A"]}
    assert {e["id"]: (e["vendor"], e["centre"]) for e in m["subjects"]} == truth
    assert m["splits"]["holdout"] == sorted(code for code, (vendor, _) in truth.items() if vendor == "A")
    trained = m["splits"]["public"] + m["splits"]["private"]
    assert sorted({truth[code][0] for code in trained}) == ["B", "C", "D"]
    assert [len(m["splits"][k]) for k in ("public", "private")] == [4, 2]     # 0.5 : 0.3 of the other 6
    assert prep.is_current(tmp_path / "vendor", profile)
    assert not prep.is_current(tmp_path / "vendor", plain)                    # another rule: rebuilt, not reused
    assert not prep.is_current(tmp_path / "vendor", with_data(plain, root, "mnms", holdout_vendor="B"))


def test_default_split_is_unchanged_and_older_caches_stay_current(releases, tmp_path, monkeypatch):
    from cardiolab.core import read_json, write_json
    from cardiolab.data import attributes
    from cardiolab.data import prepare as prep
    from cardiolab.profiles import HOLDOUT_ENV, get_profile, with_data

    monkeypatch.delenv(HOLDOUT_ENV, raising=False)
    root = releases["mnms"]
    plain = with_data(get_profile("smoke"), root, "mnms")
    path = prep.prepare(root, "mnms", plain, tmp_path / "plain")
    m = read_json(path)
    assert "split_rule" not in m
    ids, groups = [e["id"] for e in m["subjects"]], [attributes.describe(e["cond"])["group"] for e in m["subjects"]]
    assert m["splits"] == prep.stratified_splits(ids, groups, plain.data.split, 0)   # the split of every older cache
    assert {e["id"]: (e["vendor"], e["centre"]) for e in m["subjects"]} == _vendor_and_centre(root)
    for e in m["subjects"]:                           # the cache as cardiolab wrote it before vendors were recorded
        del e["vendor"], e["centre"]
    del m["profile"]["holdout_vendor"]
    write_json(path, m)
    assert prep.is_current(path.parent, plain)
    assert not prep.is_current(path.parent, with_data(plain, root, "mnms", holdout_vendor="A"))


def test_unknown_or_missing_vendor_fails_in_one_line_and_writes_nothing(releases, tmp_path, capsys, monkeypatch):
    from cardiolab.core import CardiolabError
    from cardiolab.data import prepare as prep
    from cardiolab.profiles import HOLDOUT_ENV, get_profile, with_data

    monkeypatch.delenv(HOLDOUT_ENV, raising=False)
    out = tmp_path / "cache"
    assert main(["prepare", "--profile", "smoke", "--data", str(releases["mnms"]), "--layout", "mnms",
                 "--holdout-vendor", "Z", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: --holdout-vendor Z")
    assert err.endswith("vendors present: A, B, C, D")
    assert list(tmp_path.iterdir()) == []
    acdc = with_data(get_profile("smoke"), releases["acdc"], "acdc", holdout_vendor="A")
    with pytest.raises(CardiolabError, match="^--holdout-vendor A .*no vendor information") as e:
        prep.prepare(releases["acdc"], "acdc", acdc, out)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_holdout_vendor_comes_from_the_environment_and_shapes_the_runs(monkeypatch):
    from cardiolab.profiles import HOLDOUT_ENV, data_shaping, get_profile, profile_from_dict, with_data

    monkeypatch.setenv(HOLDOUT_ENV, "C, A")
    profile = get_profile("smoke")
    assert profile.holdout_vendor == ("A", "C")
    assert data_shaping(profile)["split_rule"] == {"holdout_vendor": ["A", "C"]}   # other subjects: other models
    assert profile_from_dict(profile.to_dict()) == profile
    assert with_data(profile, holdout_vendor="").holdout_vendor == ()
    monkeypatch.delenv(HOLDOUT_ENV)
    assert "split_rule" not in data_shaping(get_profile("smoke"))                   # plain: runs shaped as before
