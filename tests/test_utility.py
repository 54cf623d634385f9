"""Distribution comparison, segmentation scores and CIs, synthetic function, and the utility experiment."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cardiolab.profiles import get_profile
from cardiolab.core import CardiolabError
from cardiolab.metrics.function import compare_distributions
from cardiolab.metrics.segmentation import bootstrap_ci, mean_ci, seg_scores
from cardiolab.evaluation.function import function_table, synthetic_function
from cardiolab.evaluation.utility import PSEUDO, utility, utility_table
from cardiolab.tasks import segmenter as seg
from test_segmenter import make_cache, write_cohort


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny prepared cache of toy hearts and a segmenter trained on its public split."""
    root = tmp_path_factory.mktemp("utility")
    cache = make_cache(root)
    run = seg.train(get_profile("smoke"), out=root / "seg", steps=80, cache_dir=cache)
    return root, cache, seg.load(run)


def test_compare_identical_and_shifted():
    rng = np.random.default_rng(0)
    real = pd.DataFrame({"Group": ["NOR"] * 50 + ["DCM"] * 50, "EF": rng.normal(60, 5, 100),
                         "EDV": rng.normal(150, 20, 100)})
    same = compare_distributions(real, real.copy())
    assert set(same.metric) == {"EF", "EDV"}
    assert (same.w1 == 0).all()
    assert (same.ks == 0).all()
    shifted = real.assign(EF=real.EF + 10)
    out = compare_distributions(real, shifted, by="Group").set_index(["group", "metric"])
    assert out.loc[("all", "EF"), "w1"] == pytest.approx(10.0)        # W1 of a pure shift is the shift
    assert out.loc[("all", "EF"), "ks"] > 0.5
    assert out.loc[("all", "EDV"), "w1"] == 0
    assert out.loc[("DCM", "EF"), "n_real"] == 50
    assert out.loc[("NOR", "EF"), "w1"] == pytest.approx(10.0)
    with pytest.raises(CardiolabError):
        compare_distributions(real, real, metrics=["LV_mass"])


def test_mean_ci_known_answer_and_bootstrap():
    mean, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2
    assert hi - mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)  # t(0.975, 2) * s / sqrt(n)
    assert mean_ci([0.7]) == (0.7, 0.7, 0.7)
    mean, lo, hi = bootstrap_ci(np.linspace(0, 1, 21))
    assert mean == pytest.approx(0.5)
    assert lo < mean < hi
    assert hi - lo < 0.4


def test_seg_scores_known_answers():
    truth = torch.zeros(1, 2, 16, 16, dtype=torch.long)
    truth[0, :, 4:8, 4:8] = 3                                        # LV 2 x 4 x 4
    truth[0, :, 10:14, 10:14] = 2                                    # MYO
    pred = truth.clone()
    pred[0, :, 4:8, 8:12] = 3                                        # LV twice as wide
    pred[pred == 2] = 0                                              # MYO missed
    s = seg_scores(pred, truth, spacing=(10.0, 2.0, 2.0))
    assert s["dice_LV"][0] == pytest.approx(2 * 32 / (32 + 64))
    assert s["dice_MYO"][0] == 0
    assert s["hd95_MYO"][0] == pytest.approx(math.hypot(20, 32, 32))
    assert math.isnan(s["dice_RV"][0])
    assert math.isnan(s["hd95_RV"][0])  # no RV in the truth
    perfect = seg_scores(truth, truth)
    assert perfect["dice_LV"][0] == 1
    assert perfect["hd95_LV"][0] == 0


def test_function_of_segmented_cohort_matches_labels(trained, tmp_path):
    root, cache, model = trained
    cohort = write_cohort(tmp_path / "syn", n=2, labels="series", seed=50)
    by_labels = function_table(cohort, source="labels")
    by_seg = function_table(cohort, model, get_profile("smoke"))
    assert list(by_seg.id) == list(by_labels.id) == ["sub050", "sub051"]
    assert (by_labels.EF > 30).all()
    assert (by_labels.EDV > by_labels.ESV).all()
    np.testing.assert_allclose(by_seg.EDV, by_labels.EDV, rtol=0.3)
    np.testing.assert_allclose(by_seg.EF, by_labels.EF, atol=15)
    assert (by_seg.ed != by_seg.es).all()
    result = synthetic_function(get_profile("smoke"), cohort, real_root=root / "cohort", out_dir=tmp_path / "eval",
                                seg_model=model)
    assert result["n_real"] == 8
    assert result["n_synthetic"] == 2
    assert result["by"] == "Group"
    assert {r["metric"] for r in result["function"]} >= {"EDV", "ESV", "EF", "LV_mass"}
    assert {r["group"] for r in result["shape"]} == {"RV", "MYO", "LV"}
    assert all(r["w1"] >= 0 and 0 <= r["ks"] <= 1 for r in result["function"] if r["w1"] is not None)
    assert (tmp_path / "eval" / "synthetic_function.json").exists()
    assert len(pd.read_csv(tmp_path / "eval" / "shape_synthetic.csv")) > 0
    with pytest.raises(CardiolabError):
        function_table(cohort, None, get_profile("smoke"))


def test_utility_pseudo_labels_and_cis(trained, tmp_path):
    root, cache, _ = trained
    synthetic = write_cohort(tmp_path / "syn", n=3, labels=None, seed=70)   # image-only, like CardioDiT samples
    out = tmp_path / "utility.json"
    result = utility(get_profile("smoke"), synthetic, out, seeds=2, steps=15, cache_dir=cache,
                     run_root=tmp_path / "runs")
    assert json.loads(out.read_text())["synthetic_labels"] == result["synthetic_labels"] == PSEUDO
    assert set(result["results"]) == {"real", "synthetic", "real+synthetic"}
    assert result["n_train"] == {"real": 4, "synthetic": 3}
    assert result["n_test"] == 2
    assert result["seeds"] == [0, 1]
    for setting in result["results"].values():
        for name in ("RV", "MYO", "LV", "mean"):
            d = setting["dice"][name]
            assert 0 <= d["mean"] <= 1
            assert len(d["per_seed"]) == 2
            assert d["ci_low"] <= d["mean"] <= d["ci_high"]
            assert setting["hd95"][name]["mean"] >= 0
    assert len(utility_table(result)) == 3 * 2 * 4


def test_utility_with_provided_labels_one_seed(trained, tmp_path):
    root, cache, _ = trained
    synthetic = write_cohort(tmp_path / "syn", n=2, labels="series", seed=80)
    result = utility(get_profile("smoke"), synthetic, tmp_path / "u.json", seeds=[3], steps=10, cache_dir=cache,
                     run_root=tmp_path / "runs")
    assert result["synthetic_labels"] == "provided"
    assert "bootstrap" in result["ci"]
    d = result["results"]["synthetic"]["dice"]["LV"]
    assert 0 <= d["ci_low"] <= d["mean"] <= d["ci_high"] <= 1


def test_utility_fractions_and_a_cross_dataset_test_cohort(trained, tmp_path):
    root, cache, _ = trained
    synthetic = write_cohort(tmp_path / "syn", n=2, labels="series", seed=90)
    other = write_cohort(tmp_path / "other", n=2, labels="series", seed=95, shift=1.0)    # another "site"
    result = utility(get_profile("smoke"), synthetic, tmp_path / "u.json", seeds=[0], steps=5, cache_dir=cache,
                     run_root=tmp_path / "runs", fractions=(0.5, 1.0), test_cohort=other)
    assert set(result["results"]) == {"real", "synthetic", "real+synthetic", "real@0.5", "real+synthetic@0.5"}
    assert result["n_train"]["real@0.5"] == 2
    assert result["cross"]["n_test"] == 2
    assert set(result["cross"]["results"]) == set(result["results"])
    assert 0 <= result["cross"]["results"]["real@0.5"]["dice"]["mean"]["mean"] <= 1
    table = utility_table(result)
    assert set(table.test) == {"holdout", "cross"}


def test_fraction_ids_are_nested_and_seeded():
    from cardiolab.evaluation.utility import fraction_ids

    ids = [f"p{i}" for i in range(8)]
    quarter, half = fraction_ids(ids, 0.25), fraction_ids(ids, 0.5)
    assert len(quarter) == 2
    assert set(quarter) <= set(half)
    assert fraction_ids(ids, 0.01) == quarter[:1]


def test_utility_refuses_fractions_outside_0_1(trained, tmp_path):
    root, cache, _ = trained
    with pytest.raises(CardiolabError, match="fractions"):
        utility(get_profile("smoke"), tmp_path, tmp_path / "u.json", seeds=[0], steps=1, cache_dir=cache,
                fractions=(0.0,))


def test_synthetic_function_labels_source_reads_the_cohorts_masks(tmp_path):
    cohort = write_cohort(tmp_path / "syn", n=2, labels="series", seed=60)
    result = synthetic_function(get_profile("smoke"), cohort, real_root=cohort, out_dir=tmp_path / "eval",
                                synthetic_source="labels", real_source="labels")
    assert result["sources"] == {"real": "labels", "synthetic": "labels"}
    assert all(r["w1"] == 0 for r in result["function"] if r["w1"] is not None)
    image_only = write_cohort(tmp_path / "img", n=1, labels=None, seed=61)
    with pytest.raises(CardiolabError, match="label series"):
        synthetic_function(get_profile("smoke"), image_only, real_root=cohort, out_dir=tmp_path / "eval2",
                           synthetic_source="labels", real_source="labels")


def test_utility_trains_real_only_runs_once_across_cohorts(trained, tmp_path, monkeypatch):
    root, cache, _ = trained
    first = write_cohort(tmp_path / "a", n=2, labels="series", seed=100)
    second = write_cohort(tmp_path / "b", n=2, labels="series", seed=110)
    made = []
    train = seg.train
    monkeypatch.setattr(seg, "train", lambda *a, **kw: made.append(Path(kw["out"]).name) or train(*a, **kw))
    kw = dict(seeds=[0], steps=5, cache_dir=cache, fractions=(0.5, 1.0))
    utility(get_profile("smoke"), first, tmp_path / "a.json", run_root=tmp_path / "runs", **kw)
    assert sorted(made) == ["real-seed0", "real@0.5-seed0", "real_synthetic-seed0", "real_synthetic@0.5-seed0",
                            "synthetic-seed0"]
    made.clear()
    result = utility(get_profile("smoke"), second, tmp_path / "b.json", run_root=tmp_path / "runs", **kw)
    assert sorted(made) == ["real_synthetic-seed0", "real_synthetic@0.5-seed0", "synthetic-seed0"]
    assert result["results"]["real"]["dice"]["mean"]["per_seed"] == \
        json.loads((tmp_path / "a.json").read_text())["results"]["real"]["dice"]["mean"]["per_seed"]


def test_utility_keeps_each_cohorts_synthetic_runs_apart(trained, tmp_path):
    root, cache, _ = trained
    kw = dict(seeds=[0], steps=3, cache_dir=cache, run_root=tmp_path / "runs")
    for name in ("a", "b"):
        utility(get_profile("smoke"), write_cohort(tmp_path / name, n=1, labels="series", seed=120),
                tmp_path / f"{name}.json", **kw)
    assert (tmp_path / "runs" / "a" / "synthetic-seed0" / "scores.json").exists()
    assert (tmp_path / "runs" / "b" / "synthetic-seed0" / "scores.json").exists()
    assert (tmp_path / "runs" / "real-seed0" / "scores.json").exists()          # shared by both


@pytest.mark.parametrize("args, flag", [
    (["--synthetic", "{missing}"], "--synthetic"),
    (["--synthetic", "{empty}"], "--synthetic"),
    (["--synthetic", "{cohort}", "--fractions", "0.5,x"], "--fractions"),
    (["--synthetic", "{cohort}", "--fractions", "1.5"], "--fractions"),
    (["--synthetic", "{cohort}", "--steps", "0"], "--steps"),
    (["--synthetic", "{cohort}", "--test-cohort", "{truncated}"], "--test-cohort"),
])
def test_utility_cli_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch, args, flag):
    from cardiolab.__main__ import main

    monkeypatch.setenv("CARDIOLAB_ROOT", str(tmp_path / "root"))
    cohort = write_cohort(tmp_path / "syn", n=1, labels="series", seed=130)
    broken = write_cohort(tmp_path / "broken", n=1, labels="series", seed=131)
    image = next(broken.rglob("*_4d.nii.gz"))
    image.write_bytes(image.read_bytes()[:200])                                  # a truncated download
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "cohort": cohort, "truncated": broken}
    argv = ["utility", "--profile", "smoke", *[a.format(**paths) for a in args]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert flag in err[0]
    assert not (tmp_path / "root" / "runs").exists()
