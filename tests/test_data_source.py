"""One data source per root: a cohort folder other than the phantom (`--data`, $CARDIOLAB_DATA, notebook 01's
data_dir, `make reproduce DATA=...`) is prepared into its own cache, never over the phantom's, and the cache's
staleness check notices a different source."""
from __future__ import annotations

import shutil

import pytest

from cardiolab.__main__ import main
from cardiolab.core import CardiolabError, read_json, write_json
from cardiolab.profiles import DATA_ENV, LAYOUT_ENV, get_profile, with_data

SMALL = dict(size=48, spacing=4.0, slices=6, frames=10)     # conftest's phantom geometry


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory, phantom_root):
    """A root whose smoke phantom (data/phantom/smoke) is the shared phantom, prepared into data/cache/smoke, and
    a second ACDC-layout folder outside it: 4 phantom subjects of another seed."""
    from cardiolab.data.phantom import generate_cohort
    from cardiolab.data.prepare import ensure_prepared

    base = tmp_path_factory.mktemp("sources")
    root, other = base / "root", base / "elsewhere" / "ACDC-like"
    generate_cohort(other, 4, seed=5, **SMALL)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CARDIOLAB_ROOT", str(root))
        mp.delenv(DATA_ENV, raising=False)
        profile = get_profile("smoke")
        shutil.copytree(phantom_root, profile.phantom_dir)
        assert ensure_prepared(profile) == root / "data" / "cache" / "smoke"
    return {"root": root, "other": other}


@pytest.fixture
def at_root(two_sources, monkeypatch):
    monkeypatch.setenv("CARDIOLAB_ROOT", str(two_sources["root"]))
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.delenv(LAYOUT_ENV, raising=False)
    return two_sources


def _stamp(folder):
    """(manifest bytes, mtime of every file) of a cache: anything rewritten changes it."""
    return (folder / "manifest.json").read_bytes(), {p.name: p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_prepare_data_writes_its_own_cache_and_leaves_the_phantoms_alone(at_root, capsys):
    from cardiolab.data.prepare import is_current

    phantom = get_profile("smoke")
    before = _stamp(phantom.cache_dir)
    assert main(["prepare", "--profile", "smoke", "--data", str(at_root["other"]), "--layout", "acdc"]) == 0
    real = with_data(phantom, at_root["other"], "acdc")
    assert real.cache_dir != phantom.cache_dir
    assert real.cache_dir.parent == phantom.cache_dir.parent
    assert real.cache_dir.name.startswith("smoke-ACDC-like-")
    assert f"cache {real.cache_dir}" in capsys.readouterr().out        # the call names the cache it wrote
    assert _stamp(phantom.cache_dir) == before                        # the phantom's cache was not touched
    manifest = read_json(real.cache_dir / "manifest.json")
    assert manifest["source"]["root"] == str(at_root["other"].resolve())   # outside the root: absolute
    assert manifest["source"]["layout"] == "acdc"
    assert len(manifest["subjects"]) == 4
    assert is_current(real.cache_dir, real)
    assert is_current(phantom.cache_dir, phantom)
    assert not is_current(phantom.cache_dir, real)                    # a different source is stale
    assert not is_current(real.cache_dir, phantom)


def test_the_phantom_cache_records_its_source_relative_to_the_root(at_root):
    manifest = read_json(get_profile("smoke").cache_dir / "manifest.json")
    assert manifest["source"]["root"] == "data/phantom/smoke"
    assert manifest["source"]["listing"]


def test_cardiolab_data_selects_the_source_for_every_profile_lookup(at_root, monkeypatch):
    from cardiolab.data.prepare import ensure_prepared

    monkeypatch.setenv(DATA_ENV, str(at_root["other"]))
    profile = get_profile("smoke")
    assert profile.data_root == at_root["other"].resolve()
    assert profile.cache_dir.name.startswith("smoke-ACDC-like-")
    phantom_cache = at_root["root"] / "data" / "cache" / "smoke"
    before = _stamp(phantom_cache)
    assert ensure_prepared(get_profile("smoke")) == profile.cache_dir
    assert _stamp(phantom_cache) == before
    assert "ACDC-like" in profile.describe_data()


def test_a_changed_source_listing_makes_its_cache_stale(at_root, tmp_path):
    from cardiolab.data.prepare import is_current, prepare

    src = shutil.copytree(at_root["other"], tmp_path / "copy")
    profile = with_data(get_profile("smoke"), src, "acdc")
    prepare(src, "acdc", profile, profile.cache_dir)
    assert is_current(profile.cache_dir, profile)
    shutil.rmtree(sorted(p for p in src.iterdir() if p.is_dir())[-1])      # a subject went
    assert not is_current(profile.cache_dir, profile)
    shutil.rmtree(src)                                                       # a cache without its source: usable
    assert is_current(profile.cache_dir, profile)
    shutil.rmtree(profile.cache_dir)


def test_a_manifest_from_before_listings_is_still_current(at_root, tmp_path):
    from cardiolab.data.prepare import is_current

    profile = get_profile("smoke")
    old = shutil.copytree(profile.cache_dir, tmp_path / "old")
    manifest = read_json(old / "manifest.json")
    manifest["source"] = {"root": str(profile.phantom_dir), "layout": "acdc", "seed": 0}   # absolute, no listing
    write_json(old / "manifest.json", manifest)
    assert is_current(old, profile)


def test_bad_data_and_layout_name_the_problem(at_root, tmp_path):
    with pytest.raises(CardiolabError, match="nowhere"):
        with_data(get_profile("smoke"), tmp_path / "nowhere")
    with pytest.raises(CardiolabError, match="layout"):
        with_data(get_profile("smoke"), at_root["other"], "nifti")
    assert with_data(get_profile("smoke")) == get_profile("smoke")        # no data: the phantom


def test_runs_on_another_source_never_pass_for_the_phantoms(at_root):
    from cardiolab.tasks import dit, evaluator, vqgan

    phantom, real = get_profile("smoke"), with_data(get_profile("smoke"), at_root["other"], "mnms")
    assert vqgan.shaping(phantom) != vqgan.shaping(real)
    assert vqgan.run_id(phantom) != vqgan.run_id(real)                    # the DiT records it, so it retrains too
    assert dit.shaping(phantom) != dit.shaping(real)
    assert evaluator.shaping(phantom) != evaluator.shaping(real)


def test_reproduce_passes_the_source_to_every_notebook(at_root, monkeypatch):
    import os

    import papermill

    from cardiolab.reporting import reproduce

    root = at_root["root"]
    (root / "notebooks").mkdir(exist_ok=True)
    for name in ("01_data.ipynb", "02_vqvae.ipynb"):
        (root / "notebooks" / name).write_text("{}")
    seen = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda src, dst, parameters, **kw: seen.append(
        (parameters, os.environ.get(DATA_ENV), os.environ.get(LAYOUT_ENV))))
    reproduce.run_notebooks("smoke", data=at_root["other"], layout="mnms")
    assert len(seen) == 2
    for parameters, env_data, env_layout in seen:
        assert parameters["data_dir"] == str(at_root["other"].resolve())
        assert parameters["layout"] == "mnms"
        assert (env_data, env_layout) == (str(at_root["other"].resolve()), "mnms")
    assert DATA_ENV not in os.environ                                      # restored after the run
    seen.clear()
    reproduce.run_notebooks("smoke")
    assert "data_dir" not in seen[0][0]                                    # the phantom: nothing passed
    shutil.rmtree(root / "notebooks")
