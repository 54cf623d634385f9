"""report.md from fake metric JSONs, and the evaluate -> report path on a tiny phantom."""
import json

import pandas as pd
import pytest

from cardiolab.__main__ import main
from cardiolab.core import CardiolabError, write_json
from cardiolab.reporting.report import build_report, load_evaluations, markdown_table, model_table


def fake_eval(model, fd, kid, data="phantom"):
    side = lambda ncc: {"n": 4, "slice_ncc": ncc, "slice_ncc_min": ncc - 0.1}  # noqa: E731
    temporal = {"n": 4, "temporal_roughness": 0.7, "periodicity": 1.1}
    return {"kind": "cardiolab-evaluate", "version": 1, "model": model, "profile": "smoke", "data": data,
            "command": f"python -m cardiolab evaluate --synthetic runs/smoke/samples/{model}",
            "real": {"n": 4}, "synthetic": {"n": 6},
            "fidelity": {"FD-cardiolab": fd, "KID-cardiolab": kid, "KID-cardiolab_std": 0.01},
            "consistency": {"real": side(0.9), "synthetic": side(0.8)},
            "temporal": {"real": temporal, "synthetic": temporal}, "function": None, "shape": None}


@pytest.fixture
def runs(tmp_path):
    run = tmp_path / "myruns"
    write_json(run / "eval" / "dit.json", fake_eval("dit", 1.25, 0.0312))
    write_json(run / "eval" / "baseline.json", fake_eval("baseline", 3.5, 0.25))
    write_json(run / "eval" / "utility.json", {"results": {"real": {"dice": {"mean": {"mean": 0.8, "ci_low": 0.7,
                                                                                       "ci_high": 0.9}}}}})
    write_json(run / "eval" / "synthetic_function.json", {"function": []})        # not an evaluate JSON
    write_json(run / "vqgan" / "recon_holdout.json", {"split": "holdout", "n": 4, "PSNR": 31.5, "SSIM": 0.93})
    write_json(run / "dit" / "bench_speed.json", {"machine": "cpu", "timing": {"s_per_step": 0.42}})
    return run


def test_model_table_from_fake_jsons(runs):
    evals = load_evaluations(runs)
    assert [e["model"] for e in evals] == ["baseline", "dit"]                      # skips other JSONs
    table = model_table(evals)
    assert list(table["FD-cardiolab"]) == [3.5, 1.25]
    assert set(table["data"]) == {"phantom"}
    assert "FID (user weights)" not in table.columns                              # absent everywhere: dropped
    md = markdown_table(table)
    assert md.count("\n") == len(table) + 1
    assert "| dit | phantom | 1.25 | 0.0312 |" in md


def test_report_markdown_csv_and_figure(runs):
    out = build_report(runs)
    text = out.read_text()
    assert out == runs / "report.md"
    for needle in ("phantom", "FD-cardiolab", "KID-cardiolab", "| dit |", "| baseline |",
                   "`python -m cardiolab evaluate --synthetic runs/smoke/samples/dit`",
                   "## VQ-GAN reconstruction", "31.5", "## Segmentation utility", "0.8", "s_per_step", "0.42"):
        assert needle in text, needle
    assert "not FID" in text
    csv = pd.read_csv(runs / "report.csv")
    assert list(csv["model"]) == ["baseline", "dit"]
    assert (runs / "figures" / "report_models.png").stat().st_size > 1000


def test_report_cli(runs, tmp_path):
    assert main(["report", "--runs", str(runs), "--out", str(tmp_path / "r.md")]) == 0
    assert "| dit |" in (tmp_path / "r.md").read_text()
    assert main(["report", "--runs", str(tmp_path / "missing")]) == 2
    with pytest.raises(CardiolabError):
        build_report(tmp_path / "missing")


def test_evaluate_then_report_on_tiny_phantom(phantom_root, tmp_path):
    """End to end at smoke geometry: a 3-step evaluator, the phantom cohort as a stand-in 'synthetic' set."""
    from cardiolab.data.prepare import prepare
    from cardiolab.evaluation.evaluate import evaluate
    from cardiolab.tasks.evaluator import train as train_evaluator
    from cardiolab.profiles import get_profile
    profile = get_profile("smoke")
    cache = prepare(phantom_root, "acdc", profile, tmp_path / "cache").parent
    ev = train_evaluator(profile, tmp_path / "evaluator", cache_dir=cache, steps=3)
    out = tmp_path / "runs" / "eval" / "phantom.json"
    res = evaluate(phantom_root, real=cache, profile=profile, name="phantom", out_json=out, evaluator=ev)
    saved = json.loads(out.read_text())
    assert saved["data"] == "phantom"
    assert saved["real"]["n"] == 6
    assert saved["synthetic"]["n"] == 6
    assert saved["fidelity"]["n_real"] == 6 * (profile.data.slices - 1)
    # the cohort and its own prepared cache are the same cines: FD = 0 and identical consistency scores
    assert abs(res["fidelity"]["FD-cardiolab"]) < 1e-6
    assert res["function"] is None
    assert 0 < saved["consistency"]["synthetic"]["slice_ncc"] <= 1
    assert saved["consistency"]["synthetic"]["slice_ncc"] == pytest.approx(saved["consistency"]["real"]["slice_ncc"])
    assert saved["temporal"]["real"]["temporal_tv"] > 0
    cli_json = tmp_path / "runs" / "eval" / "cli.json"
    assert main(["evaluate", "--synthetic", str(phantom_root), "--real", str(cache), "--profile", "smoke",
                 "--evaluator", str(ev), "--name", "cli", "--json", str(cli_json)]) == 0
    cli = json.loads(cli_json.read_text())
    assert cli["command"].startswith("python -m cardiolab evaluate --synthetic")
    assert cli["fidelity"]["FD-cardiolab"] == pytest.approx(saved["fidelity"]["FD-cardiolab"], abs=1e-9)
    assert main(["evaluate", "--synthetic", str(tmp_path / "nowhere"), "--real", str(cache), "--profile", "smoke",
                 "--evaluator", str(ev)]) == 2
    report = build_report(tmp_path / "runs").read_text()
    assert "| phantom | phantom |" in report
    assert "| cli | phantom |" in report


def _privacy_record(eps_prv=9.99, eps_rdp=12.1):
    return {"max_grad_norm": 1.0, "noise_multiplier": 0.6, "sample_rate": 0.25, "steps": 10, "delta": 1e-3,
            "epsilon": {"prv": eps_prv, "rdp": eps_rdp}, "accountant": "prv", "trained_parameters": 35,
            "n_subjects": 16, "init_run": "/x/runs/smoke/dit", "vqgan_run": "/x/runs/smoke/vqgan"}


def test_report_shows_epsilon_of_dp_sample_cohorts(runs):
    write_json(runs / "samples" / "dit-dp" / "samples.json", {"generator": "cardiodit", "privacy": _privacy_record()})
    write_json(runs / "samples" / "dit" / "samples.json", {"generator": "cardiodit"})      # not DP: no row
    text = build_report(runs).read_text()
    assert "## Differential privacy" in text
    assert "| dit-dp | 12.1 | 9.99 |" in text
    assert "| dit | 12.1" not in text
    assert "| no (replayable: not DP as released) |" in text     # a record without release: true
    write_json(runs / "samples" / "dit-dp" / "samples.json",
               {"generator": "cardiodit", "privacy": {**_privacy_record(), "release": True}})
    assert "| yes |" in build_report(runs).read_text()


def test_report_without_dp_cohorts_has_no_privacy_section(runs):
    assert "## Differential privacy" not in build_report(runs).read_text()


def test_evaluate_copies_the_privacy_record_of_a_dp_cohort(phantom_root, tmp_path, monkeypatch):
    import shutil

    import torch

    import cardiolab.metrics.features as features
    from cardiolab.data.prepare import prepare
    from cardiolab.evaluation.evaluate import evaluate
    from cardiolab.profiles import get_profile
    from cardiolab.tasks import evaluator as evaluator_task

    profile = get_profile("smoke")
    cache = prepare(phantom_root, "acdc", profile, tmp_path / "cache").parent
    cohort = shutil.copytree(phantom_root, tmp_path / "dp-cohort")
    write_json(cohort / "samples.json", {"generator": "cardiodit", "privacy": _privacy_record()})
    monkeypatch.setattr(evaluator_task, "load", lambda run: None)                 # no evaluator: constant features
    g = torch.Generator().manual_seed(0)
    monkeypatch.setattr(features, "features", lambda model, images: torch.randn(len(images) * 3, 8, generator=g))
    res = evaluate(cohort, real=cache, profile=profile, name="dp", out_json=tmp_path / "eval" / "dp.json",
                   evaluator=tmp_path / "no-evaluator")
    assert res["privacy"] == _privacy_record()
    assert json.loads((tmp_path / "eval" / "dp.json").read_text())["privacy"]["epsilon"]["rdp"] == 12.1
    plain = evaluate(phantom_root, real=cache, profile=profile, name="plain", out_json=tmp_path / "eval" / "p.json",
                     evaluator=tmp_path / "no-evaluator")
    assert "privacy" not in plain
