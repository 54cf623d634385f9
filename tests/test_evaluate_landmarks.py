"""`evaluate --landmarks RUN`: septal-angle drift of real and synthetic cines as report columns."""
from __future__ import annotations

import json

import pytest

from cardiolab.profiles import get_profile
from cardiolab.__main__ import main
from cardiolab.evaluation.evaluate import load_evaluations, model_table
from cardiolab.tasks import landmarks as task
from cardiolab.tasks.evaluator import train as train_evaluator


@pytest.fixture(scope="module")
def evaluated(smoke_cache, phantom_root, tmp_path_factory):
    """The phantom cohort evaluated as a stand-in 'synthetic' set against its own smoke cache, with landmarks."""
    tmp = tmp_path_factory.mktemp("evlm")
    ev = train_evaluator(get_profile("smoke"), tmp / "evaluator", cache_dir=smoke_cache, steps=2)
    run = task.train(get_profile("smoke"), out=tmp / "landmarks", steps=2, cache_dir=smoke_cache, evaluate_on=None)
    out = tmp / "runs" / "eval" / "phantom.json"
    code = main(["evaluate", "--synthetic", str(phantom_root), "--real", str(smoke_cache), "--profile", "smoke",
                 "--evaluator", str(ev), "--name", "phantom", "--json", str(out), "--landmarks", str(run)])
    return {"code": code, "json": json.loads(out.read_text()), "runs": tmp / "runs"}


def test_evaluate_landmarks_exits_0(evaluated):
    assert evaluated["code"] == 0


def test_same_cines_have_the_same_drift(evaluated):
    lm = evaluated["json"]["landmarks"]
    assert lm["synthetic"]["slices"] == pytest.approx(lm["real"]["slices"], nan_ok=True)


def test_drift_is_a_report_column(evaluated):
    table = model_table(load_evaluations(evaluated["runs"]))
    assert "septal drift frames synth" in table.columns


def test_command_records_landmarks(evaluated):
    assert "--landmarks" in evaluated["json"]["command"]
