"""Every notebook on a cohort written as ACDC ships, and 01-05 on one written as M&Ms ships, the way
`make reproduce DATA=DIR LAYOUT=acdc|mnms PROFILE=smoke` runs them (`notebooks --data DIR --layout L`, then
`report`), in a fresh root: each notebook names the source's cache, every run records that cache, the VQ-GAN and
DiT trained on the public split and DP on the private one, the report names the source, and nothing of the
embedded phantom cohort is made or read (no data/phantom/smoke, no data/cache/smoke).

Smoke profile, 12 subjects per cohort; the whole module takes several minutes on 2 CPU cores."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cardiolab.__main__ import main
from cardiolab.core import from_record, read_json
from cardiolab.data.releases import write_acdc_release, write_mnms_release
from cardiolab.profiles import DATA_ENV, LAYOUT_ENV, get_profile, with_data

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
pytestmark = pytest.mark.slow
SUBJECTS = 12          # smoke splits 0.5 / 0.3 / 0.2: a private split and a holdout of a few subjects each


def _reproduce(root: Path, data: Path, layout: str, only: list[str], monkeypatch) -> dict:
    """Run the notebooks (`only`) and the report in `root` on `data`; returns what they left."""
    monkeypatch.setenv("CARDIOLAB_ROOT", str(root))
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.delenv(LAYOUT_ENV, raising=False)
    root.mkdir(parents=True)
    (root / "notebooks").symlink_to(NOTEBOOKS, target_is_directory=True)      # the sources, read only
    assert main(["notebooks", "--profile", "smoke", "--data", str(data), "--layout", layout, "--only", *only]) == 0
    run_dir = root / "runs" / "smoke"
    assert main(["report", "--runs", str(run_dir)]) == 0
    profile = with_data(get_profile("smoke"), data, layout)
    return {"profile": profile, "run_dir": run_dir, "report": (run_dir / "report.md").read_text()}


def _assert_only_the_source_was_read(root: Path, made: dict, only: list[str]) -> None:
    profile, run_dir = made["profile"], made["run_dir"]
    cache = profile.cache_dir
    assert cache.name.startswith("smoke-")
    assert cache != get_profile("smoke").cache_dir
    assert not (root / "data" / "phantom" / "smoke").exists()              # the embedded phantom was never made
    assert sorted(p.name for p in (root / "data" / "cache").iterdir()) == [cache.name]
    phantoms = root / "data" / "phantom"
    assert not phantoms.exists() or {p.name for p in phantoms.iterdir()} <= {"smoke-volume"}   # 09: whole heart
    for nb in only:                                                        # each notebook names the cache it read
        (path,) = (run_dir / "notebooks").glob(f"{nb}_*.ipynb")
        text = "".join("".join(o.get("text", "")) for c in json.loads(path.read_text())["cells"]
                       for o in c.get("outputs", []))
        assert f"cache {cache}" in text, path.name
    recorded = {from_record(read_json(c)["cache_dir"]).resolve() for c in run_dir.rglob("config.json")
                if isinstance(read_json(c).get("cache_dir"), str)}
    assert recorded == {cache.resolve()}                                   # every run trained on the source's cache
    manifest = read_json(cache / "manifest.json")
    vqgan = read_json(run_dir / "vqgan" / "config.json")
    assert sorted(vqgan["train_ids"]) == sorted(manifest["splits"]["public"])   # the private split stays out
    assert f"cache `{from_record(vqgan['cache_dir']).relative_to(root)}`" in made["report"]


def test_every_notebook_on_an_acdc_release(tmp_path, monkeypatch):
    import torch

    from cardiolab.tasks.dp import PRIVATE_LATENTS

    d = get_profile("smoke").data
    data = write_acdc_release(tmp_path / "ACDC", SUBJECTS, seed=3, size=d.phantom_size, spacing=d.phantom_spacing,
                              slices=d.phantom_slices, frames=d.phantom_frames)
    only = [p.name[:2] for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))]
    made = _reproduce(tmp_path / "root", data, "acdc", only, monkeypatch)
    _assert_only_the_source_was_read(tmp_path / "root", made, [nb for nb in only if nb != "09"])
    assert "the acdc cohort" in made["report"]
    manifest = read_json(made["profile"].cache_dir / "manifest.json")
    private = torch.load(made["run_dir"] / PRIVATE_LATENTS / "latents.pt", weights_only=True)
    assert sorted(private["ids"]) == sorted(manifest["splits"]["private"] + manifest["splits"]["holdout"])
    dp_runs = [c for c in made["run_dir"].glob("dit-dp-*/config.json")]
    assert dp_runs
    assert all(PRIVATE_LATENTS in from_record(read_json(c)["shaping"]["latents"]).parts for c in dp_runs)


def test_notebooks_01_to_05_on_an_mnms_release(tmp_path, monkeypatch):
    d = get_profile("smoke").data
    data = write_mnms_release(tmp_path / "MnM", SUBJECTS, seed=4, size=d.phantom_size, spacing=d.phantom_spacing,
                              slices=d.phantom_slices, frames=d.phantom_frames)
    only = ["01", "02", "03", "04", "05"]
    made = _reproduce(tmp_path / "root", data, "mnms", only, monkeypatch)
    _assert_only_the_source_was_read(tmp_path / "root", made, only)
    assert "the mnms cohort" in made["report"]
