"""Evaluation of two-stage baselines (mask adherence, shapes of generated masks), the phantom's --snr range,
and the report's one row per trained model."""
import json

import numpy as np
import pytest
import torch

from cardiolab.core import CardiolabError
from cardiolab.profiles import get_profile


def _discs(n, radius, size=24, slices=2, frames=3):
    """n label series (D, H, W, T): an LV disc of `radius` px in a MYO ring 2 px wide, centred."""
    yy, xx = np.mgrid[:size, :size] - size / 2
    r = np.hypot(yy, xx)
    lab = np.where(r < radius, 3, np.where(r < radius + 2, 2, 0))
    return np.stack([np.broadcast_to(lab[None, :, :, None], (slices, size, size, frames))] * n).astype(np.int64)


def test_compare_mask_shapes_same_and_bigger():
    from cardiolab.metrics.shape import compare_mask_shapes

    same = compare_mask_shapes(_discs(2, 5), _discs(2, 5), spacing=(2.0, 2.0))
    assert set(same.group) == {"MYO", "LV"}
    assert (same.ks == 0).all()
    bigger = compare_mask_shapes(_discs(2, 5), _discs(2, 7), spacing=(2.0, 2.0)).set_index(["group", "metric"])
    assert bigger.loc[("LV", "area"), "w1"] > 0
    with pytest.raises(CardiolabError, match="real"):
        compare_mask_shapes(np.zeros((1, 2, 8, 8, 2), dtype=np.int64), _discs(1, 3))


def test_mask_metrics_score_images_against_their_own_masks():
    from cardiolab.data.cines import Cines
    from cardiolab.evaluation.evaluate import carries_masks, mask_metrics
    from cardiolab.models.segmenter import Segmenter
    from cardiolab.profiles import get_profile
    from cardiolab.tasks.segmenter import model_config

    torch.manual_seed(0)
    masks = torch.from_numpy(_discs(2, 5, size=32, slices=4, frames=8))
    images = masks.float() / 3 * 2 - 1
    real = Cines(ids=["a", "b"], images=images, labels=masks, label_mask=torch.ones(2, 8, dtype=torch.bool))
    synth = Cines(ids=["s1", "s2"], images=images, labels=masks, label_mask=torch.ones(2, 8, dtype=torch.bool))
    assert carries_masks(synth)
    assert not carries_masks(Cines(ids=["x"], images=images[:1]))
    out = mask_metrics(real, synth, Segmenter(model_config(get_profile("smoke"))).eval(), spacing=(2.0, 2.0, 8.0), es=3)
    assert out["mask_adherence"]["n"] == 2
    assert 0 <= out["mask_adherence"]["dice"]["mean"] <= 1
    assert out["mask_shape"]["frames"] == [0, 3]
    assert out["mask_shape"]["ks_mean"] == 0


def test_phantom_snr_range_draws_each_subject_within_it(tmp_path):
    from cardiolab.data.phantom import generate_cohort

    generate_cohort(tmp_path / "site2", 2, seed=1, size=32, spacing=6.0, slices=3, frames=4, snr=(6.0, 8.0))
    snrs = [json.loads((tmp_path / "site2" / f"patient00{i}" / "phantom_truth.json").read_text())["snr"]
            for i in (1, 2)]
    assert all(6.0 <= s <= 8.0 for s in snrs)
    assert json.loads((tmp_path / "site2" / "cohort.json").read_text())["snr_range"] == [6.0, 8.0]
    with pytest.raises(CardiolabError, match="snr"):
        generate_cohort(tmp_path / "bad", 1, size=32, slices=3, frames=4, snr=(8.0, 6.0))


def test_phantom_verb_refuses_a_malformed_snr(tmp_path, capsys):
    from cardiolab.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["phantom", "--out", str(tmp_path / "x"), "--snr", "6"])
    assert e.value.code == 2
    assert "--snr" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_report_has_a_row_per_trained_model(tmp_path):
    from cardiolab.reporting.report import build_report, training_table

    run_dir = tmp_path / "runs" / "smoke"
    models = ["factorized", "channel-merged", "ddpm", "ldm", "flow", "mask-generator", "mask-to-image"]
    for k, name in enumerate(models):
        run = run_dir / name
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"task": name}))
        (run / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "loss": 1.0, "s_per_step": 0.5})
                                                     for s in (2, 4)) + "\n")
        samples = run_dir / "samples" / name
        samples.mkdir(parents=True)
        (samples / "samples.json").write_text(json.dumps({"s_per_sample": 0.1 * (k + 1)}))
    table = training_table(run_dir)
    assert list(table.model) == models
    assert (table["training s"] == 2.0).all()
    assert (table["parameters"] > 0).all()
    text = build_report(run_dir).read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and line.split("|")[1].strip() in models]
    assert sorted(r.split("|")[1].strip() for r in rows) == sorted(models)


def test_trajectory_decodes_every_x0_prediction(tmp_path, smoke_cache):
    from cardiolab.tasks import common, ddpm

    run = ddpm.train(get_profile("smoke"), out=tmp_path / "ddpm", steps=1, cache_dir=smoke_cache)
    steps = common.trajectory(run, steps=3, seed=0, every=1)
    assert [i for i, _ in steps] == [0, 1, 2]
    assert tuple(steps[-1][1].shape) == (4, 32, 32, 8)


def test_evaluate_all_leaves_dp_cohorts_to_the_dp_experiment(tmp_path, monkeypatch):
    from cardiolab.evaluation import evaluate as ev
    from cardiolab.core import write_json

    cohorts = {"dit": tmp_path / "dit", "dit-dp-eps10": tmp_path / "dit-dp-eps10"}
    write_json(cohorts["dit"] / "samples.json", {"task": "dit"})
    write_json(cohorts["dit-dp-eps10"] / "samples.json", {"task": "dit-dp"})   # private: scored on its holdout
    seen = []
    monkeypatch.setattr(ev, "synthetic_cohorts", lambda profile: cohorts)
    monkeypatch.setattr(ev, "evaluate_vqgan", lambda profile, labels: None)
    monkeypatch.setattr(ev, "evaluate", lambda root, **kw: seen.append(kw["name"]))
    monkeypatch.setattr(ev, "load_evaluations", lambda run_dir: [])
    ev.evaluate_all(get_profile("smoke"))
    assert seen == ["dit"]
