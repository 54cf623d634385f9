"""The evaluator on real data: `train evaluator --root/--cache`, and `evaluate --real` checking that the evaluator
ranks degraded copies of the reference further away (fails honestly where the ordering breaks)."""
from __future__ import annotations

import json

import pytest
import torch

from cardiolab.profiles import get_profile
from cardiolab.__main__ import main
from cardiolab.data.cines import load_cines
from cardiolab.evaluation.evaluate import evaluate, evaluator_check
from cardiolab.metrics import features as feat
from cardiolab.tasks import evaluator as evaluator_task


def quality_features(model, cines, batch_size=64, per_cine=False):
    """Hand-made features that see what the degradations change: edge energy, and the change between each pair of
    neighbouring frames and slices (noise, blur, temporal and slice shuffling all move them)."""
    x = feat.as_cines(cines).float()                                        # (N, D, H, W, T)
    lap = (4 * x[:, :, 1:-1, 1:-1] - x[:, :, :-2, 1:-1] - x[:, :, 2:, 1:-1] - x[:, :, 1:-1, :-2]
           - x[:, :, 1:-1, 2:]).abs().mean(dim=(1, 2, 3, 4))
    dt = (x[..., 1:] - x[..., :-1]).abs().mean(dim=(1, 2, 3))             # (N, T - 1): each pair of frames
    dz = (x[:, 1:] - x[:, :-1]).abs().mean(dim=(2, 3, 4))                  # (N, D - 1): each pair of slices
    return torch.cat([lap[:, None], 10 * dt, 10 * dz], 1).double()


def blind_features(model, cines, batch_size=64, per_cine=False):
    """Features that ignore the image (an evaluator that has learnt nothing about it)."""
    blind_features.calls += 1
    g = torch.Generator().manual_seed(blind_features.calls)
    return torch.randn(len(feat.as_cines(cines)), 3, generator=g, dtype=torch.float64)


@pytest.fixture(scope="module")
def evaluator_run(smoke_cache, tmp_path_factory):
    return evaluator_task.train(get_profile("smoke"), out=tmp_path_factory.mktemp("ev") / "evaluator", steps=2,
                                cache_dir=smoke_cache)


def test_check_passes_where_the_ordering_holds(smoke_cache, monkeypatch):
    # noise and blur: these hand-made features order them strictly (shuffles saturate them at high levels)
    monkeypatch.setattr(feat, "features", quality_features)
    monkeypatch.setattr(feat, "DEGRADATIONS", {k: feat.DEGRADATIONS[k] for k in ("noise", "blur")})
    check = evaluator_check(None, load_cines(smoke_cache, get_profile("smoke")), profile=get_profile("smoke"))
    assert check["monotonic"] == {"noise": True, "blur": True}
    assert check["passed"] is True


def test_check_fails_honestly_where_it_breaks(smoke_cache, monkeypatch):
    blind_features.calls = 0
    monkeypatch.setattr(feat, "features", blind_features)
    check = evaluator_check(None, load_cines(smoke_cache, get_profile("smoke")), profile=get_profile("smoke"))
    assert check["passed"] is False
    assert not all(check["monotonic"].values())


def test_evaluate_real_writes_the_verdict_and_the_cli_says_so(phantom_root, smoke_cache, evaluator_run, tmp_path,
                                                               monkeypatch, capsys):
    monkeypatch.setattr(feat, "features", blind_features)
    blind_features.calls = 0
    out = tmp_path / "e.json"
    assert main(["evaluate", "--synthetic", str(phantom_root), "--real", str(smoke_cache), "--profile", "smoke",
                 "--evaluator", str(evaluator_run), "--json", str(out)]) == 0
    verdict = json.loads(out.read_text())["evaluator_validation"]
    assert verdict["passed"] is False
    lines = [line for line in capsys.readouterr().out.splitlines() if "evaluator validation FAILED" in line]
    assert len(lines) == 1
    default = evaluate(phantom_root, None, profile=get_profile("smoke"), evaluator=evaluator_run,
                       out_json=tmp_path / "d.json")
    assert "evaluator_validation" not in default                # the profile's own reference: not checked


def test_train_evaluator_on_a_cohort_folder(phantom_root, tmp_path):
    out = tmp_path / "ev"
    assert main(["train", "evaluator", "--profile", "smoke", "--root", str(phantom_root), "--steps", "2",
                 "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["cache"] == str(tmp_path / "ev-cache")
    assert "cache" in config["shaping"]                         # not the profile's run: never passes for it


def test_train_forwards_root_and_cache_only_where_accepted(phantom_root, smoke_cache, tmp_path):
    vqgan = ["train", "vqgan", "--profile", "smoke", "--root", str(phantom_root), "--out", str(tmp_path / "v")]
    assert main(vqgan) == 2
    assert main(["train", "evaluator", "--profile", "smoke", "--cache", str(smoke_cache), "--steps", "1",
                 "--out", str(tmp_path / "e")]) == 0
