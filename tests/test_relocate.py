"""Relocatable roots: runs, latents, caches and cohorts name their files relative to the project root
(`core.to_record` / `core.from_record`), so a root copied elsewhere (a GPU machine) samples and evaluates there."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import cardiolab
from cardiolab.__main__ import main
from cardiolab.core import from_record, project_root, read_json, to_record


def test_to_record_is_relative_under_the_root_and_absolute_outside(tmp_path, monkeypatch):
    root = tmp_path / "root"
    monkeypatch.setenv("CARDIOLAB_ROOT", str(root))
    assert to_record(root / "runs" / "smoke" / "vqgan") == "runs/smoke/vqgan"
    assert to_record(root) == "."
    outside = tmp_path / "elsewhere" / "ACDC"
    assert to_record(outside) == str(outside.resolve())
    assert to_record(None) is None
    assert from_record("runs/smoke/vqgan") == root.resolve() / "runs" / "smoke" / "vqgan"
    assert from_record(str(outside)) == outside                     # absolute (old records too): as it is
    assert from_record(None) is None
    assert from_record("") is None


def test_from_record_follows_the_root(tmp_path, monkeypatch):
    monkeypatch.setenv("CARDIOLAB_ROOT", str(tmp_path / "a"))
    text = to_record(tmp_path / "a" / "data" / "cache" / "smoke")
    monkeypatch.setenv("CARDIOLAB_ROOT", str(tmp_path / "b"))
    assert from_record(text) == (tmp_path / "b").resolve() / "data" / "cache" / "smoke"


def _strings(obj):
    """Every string inside a JSON / torch.load structure."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _strings(v)


def _files_naming(root: Path, text: str) -> list[str]:
    """The JSON and .pt files under root that hold `text` in any string."""
    found = []
    for path in sorted(root.rglob("*")):
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        elif path.suffix == ".pt":
            data = torch.load(path, map_location="cpu", weights_only=True)
        else:
            continue
        if any(text in s for s in _strings(data)):
            found.append(str(path.relative_to(root)))
    return found


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory, phantom_root):
    """A smoke root built under CARDIOLAB_ROOT=<tmp>/a: the shared phantom as the profile's phantom, its cache,
    a 4-step VQ-GAN, its latents, a 4-step DiT and a 4-step evaluator."""
    from cardiolab.data.prepare import prepare
    from cardiolab.profiles import get_profile
    from cardiolab.tasks import dit, evaluator, vqgan

    a = tmp_path_factory.mktemp("relocate") / "a"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CARDIOLAB_ROOT", str(a))
        mp.chdir(a.parent)                       # a path resolved against the cwd would show up as foreign
        profile = get_profile("smoke")
        shutil.copytree(phantom_root, profile.phantom_dir)
        prepare(profile.phantom_dir, "acdc", profile, profile.cache_dir)
        run = vqgan.train(profile, steps=4)
        latents = vqgan.encode_cohort(run, profile.cache_dir, profile.run("latents"))
        dit.train(profile, steps=4, latents=latents)
        evaluator.train(profile, steps=4)
    return a


def test_a_copied_root_samples_and_evaluates(smoke_root, tmp_path, monkeypatch):
    from cardiolab.engine import run_status
    from cardiolab.profiles import get_profile
    from cardiolab.tasks import vqgan

    checkout = str(Path(cardiolab.__file__).resolve().parents[1])
    assert _files_naming(smoke_root, str(smoke_root)) == []         # nothing names the root absolutely
    assert _files_naming(smoke_root, checkout) == []                # nor a file of the checkout's own runs
    assert _files_naming(smoke_root, str(smoke_root.parent)) == []  # nor one resolved against the cwd
    b = tmp_path / "b"
    shutil.copytree(smoke_root, b, symlinks=True)
    shutil.rmtree(smoke_root)                                        # the original is gone
    monkeypatch.setenv("CARDIOLAB_ROOT", str(b))
    monkeypatch.chdir(tmp_path)
    assert project_root() == b.resolve()
    profile = get_profile("smoke")
    assert run_status(profile.run("vqgan"), 4, {"shaping": vqgan.shaping(profile, steps=4)}) == "finished"
    out = b / "runs" / "smoke" / "samples" / "dit"
    assert main(["sample", "--profile", "smoke", "--n", "2", "--steps", "2", "--no-gifs", "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["synth0001", "synth0002"]
    assert read_json(out / "samples.json")["run"] == "runs/smoke/dit"
    result = b / "runs" / "smoke" / "eval" / "relocated.json"
    assert main(["evaluate", "--profile", "smoke", "--synthetic", str(out), "--json", str(result),
                 "--evaluator", str(profile.run("evaluator"))]) == 0
    assert read_json(result)["synthetic"]["n"] == 2
    assert not smoke_root.exists()                                  # nothing was written back to the old root


def test_old_absolute_records_still_load(fake_stage1, tmp_path, monkeypatch):
    """fake_stage1's latents.pt names its VQ-GAN by an absolute path (as every record did before): it loads
    from any root and keeps naming the same folder."""
    from cardiolab.tasks.vqgan import load, load_latents

    monkeypatch.setenv("CARDIOLAB_ROOT", str(tmp_path))
    record = load_latents(fake_stage1["latents"])
    assert Path(record["vqgan_run"]) == fake_stage1["vqgan_run"]
    load(from_record(record["vqgan_run"]))
