"""Group-stratified CV and the variant table of the RVIP detector (cardiolab.evaluation.rvip)."""
from __future__ import annotations

import pytest

from cardiolab.evaluation import rvip
from cardiolab.core import CardiolabError
from cardiolab.profiles import get_profile, override


def test_group_folds_stratify_and_cover():
    ids = [f"s{i}" for i in range(12)]
    groups = ["A", "B", "C"] * 4
    folds = rvip.group_folds(ids, groups, 4)
    assert sorted(s for f in folds for s in f) == sorted(ids)
    assert all(len({groups[ids.index(s)] for s in f}) == 3 for f in folds)


def test_one_fold_is_refused():
    with pytest.raises(CardiolabError, match="landmarks.folds"):
        override(get_profile("smoke"), ["landmarks.folds=1"])


@pytest.fixture(scope="module")
def cv(smoke_cache, tmp_path_factory):
    variants = {k: rvip.VARIANTS[k] for k in ("gaussian / argmax / 2D", "gaussian / soft-argmax / 2D",
                                              "disc / argmax / 2D")}
    return rvip.cross_validate(get_profile("smoke"), variants, folds=2, out_dir=tmp_path_factory.mktemp("cv"),
                               cache_dir=smoke_cache, steps=2)


def test_cv_scores_every_subject_once(cv):
    assert sorted(set(cv["subject"])) == sorted(s for f in cv["folds"] for s in f)


def test_variant_table_ranks_variants_and_second_rater(cv):
    table = rvip.variant_table(cv)
    assert len(table["ranks"]["median_error"]) == 4


def test_second_rater_is_close_to_phantom_truth(cv):
    table = rvip.variant_table(cv, rvip.metrics.Policy(units="px"))
    rater = next(r for r in table["rows"] if r["variant"] == rvip.SECOND_RATER)
    assert rater["median_error"] <= 1.5


def test_cv_summary_has_levels(cv):
    assert set(rvip.cv_summary(cv, rvip.SECOND_RATER)["by_level"]) <= {"basal", "mid", "apical"}


def test_cv_folds_train_cv_steps_when_set(smoke_cache, tmp_path):
    """landmarks.cv_steps sizes each fold's run (tiny: 500 against the main detector's 1500); 0 means steps."""
    import json

    variants = {"gaussian / argmax / 2D": rvip.VARIANTS["gaussian / argmax / 2D"]}
    profile = override(get_profile("smoke"), ["landmarks.cv_steps=3"])
    rvip.cross_validate(profile, variants, folds=2, out_dir=tmp_path, cache_dir=smoke_cache)
    states = [json.loads(p.read_text()) for p in tmp_path.rglob("state.json")]
    assert len(states) == 2 and all(s["steps"] == 3 for s in states), states
    assert get_profile("tiny").landmarks.cv_steps == 500 and get_profile("tiny").landmarks.steps == 1500
    assert get_profile("full").landmarks.cv_steps == 0
