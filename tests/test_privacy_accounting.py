"""DP-SGD accounting: epsilon/sigma through Opacus, the `privacy` verb, privacy.json checks, and an independent
accountant (Google's dp-accounting) over the issue's grid."""
from __future__ import annotations

import functools
import json
import os

import pytest

from cardiolab.__main__ import main
from cardiolab.core import CardiolabError
from cardiolab.dp import accounting
from cardiolab.dp.accounting import PRIVACY_KEYS, epsilon, sigma, write_privacy_json

DELTA = 1e-5


@pytest.mark.parametrize("name", ["rdp", "prv"])
def test_epsilon_equals_opacus_accountant_stepped_directly(name):
    from opacus.accountants import PRVAccountant, RDPAccountant

    acc = {"rdp": RDPAccountant, "prv": PRVAccountant}[name]()
    for _ in range(60):                      # what a DPOptimizer's hook logs, one step at a time
        acc.step(noise_multiplier=1.1, sample_rate=0.02)
    kw = {}
    if name == "prv":                        # a relative eps_error instead of Opacus's absolute 0.01
        kw["eps_error"] = max(accounting.PRV_MIN_ERROR, accounting.PRV_REL_ERROR * acc.get_epsilon(delta=DELTA))
    assert epsilon(0.02, 1.1, 60, DELTA, name) == acc.get_epsilon(delta=DELTA, **kw)


@pytest.mark.parametrize("name", ["rdp", "prv"])
def test_sigma_inverts_epsilon(name):
    target = epsilon(0.02, 1.0, 100, DELTA, name)
    s = sigma(target, 0.02, 100, DELTA, name)
    assert s == pytest.approx(1.0, rel=0.02)
    assert epsilon(0.02, s, 100, DELTA, name) <= target      # the returned sigma meets the target


def test_sigma_refuses_an_unreachable_budget():
    with pytest.raises(CardiolabError, match="--epsilon"):
        sigma(1e-9, 1.0, 10_000, DELTA, "rdp")


def test_cli_epsilon_json(capsys):
    assert main(["privacy", "epsilon", "--sample-rate", "0.02", "--noise-multiplier", "1.1", "--steps", "60",
                 "--delta", "1e-5", "--accountant", "rdp", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"epsilon": epsilon(0.02, 1.1, 60, DELTA, "rdp"), "accountant": "rdp", "delta": DELTA}


def test_cli_sigma_json(capsys):
    assert main(["privacy", "sigma", "--epsilon", "2", "--sample-rate", "0.02", "--steps", "60", "--delta", "1e-5",
                 "--accountant", "rdp", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["noise_multiplier"] == sigma(2.0, 0.02, 60, DELTA, "rdp")


@pytest.mark.parametrize("flag,value", [("--sample-rate", "1.5"), ("--sample-rate", "0"), ("--noise-multiplier", "0"),
                                        ("--noise-multiplier", "-1"), ("--steps", "0"), ("--delta", "0"),
                                        ("--delta", "1")])
def test_cli_bad_input_exits_2_naming_the_parameter(capsys, flag, value):
    args = {"--sample-rate": "0.01", "--noise-multiplier": "1.0", "--steps": "10", "--delta": "1e-5", flag: value}
    assert main(["privacy", "epsilon", *[x for kv in args.items() for x in kv]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"{flag} {value}" in err[0]


def _record(tmp_path, **kw):
    params = dict(max_grad_norm=1.0, noise_multiplier=1.1, sample_rate=0.02, steps=60, delta=DELTA,
                  accountant="rdp", trained_parameters=["blocks.0.attn.qkv.weight"], n_subjects=50,
                  init_run="runs/smoke/dit", vqgan_run="runs/smoke/vqgan", release=True, training_cohort="abc")
    return write_privacy_json(tmp_path, **{**params, **kw})


def test_privacy_json_holds_the_schema_and_both_accountants(tmp_path):
    record = json.loads(_record(tmp_path).read_text())
    assert tuple(sorted(record)) == tuple(sorted(PRIVACY_KEYS))     # release mode: no seed recorded
    replayable = json.loads(_record(tmp_path / "r", release=False, noise_seed=3).read_text())
    assert (replayable["release"], replayable["noise_seed"]) == (False, 3)
    with pytest.raises(CardiolabError, match="noise seed"):
        _record(tmp_path / "x", release=False)
    assert record["epsilon"] == {"rdp": epsilon(0.02, 1.1, 60, DELTA, "rdp"), "prv": epsilon(0.02, 1.1, 60, DELTA, "prv")}


def test_check_passes_a_correct_record_and_fails_an_understated_one(tmp_path, capsys):
    path = _record(tmp_path)
    assert main(["privacy", "check", str(tmp_path)]) == 0
    record = json.loads(path.read_text())
    record["epsilon"]["rdp"] *= 0.9
    path.write_text(json.dumps(record))
    assert main(["privacy", "check", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("FAILED")
    assert len(lines) == 2


@pytest.mark.parametrize("content", [None, "{not json", '{"steps": 3}', '[1, 2]'])
def test_check_exits_2_on_a_missing_or_garbled_record(tmp_path, capsys, content):
    if content is not None:
        (tmp_path / "privacy.json").write_text(content)
    assert main(["privacy", "check", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "privacy.json" in err[0]


# ---- independent accountant: Google's dp-accounting (RDP and PLD) over the grid -----------------------
# PLD discretisation: value_discretization_interval=1e-4 (1e-3 overstates small epsilons by up to 29 %:
# q=0.001, sigma=2, 10000 steps gives 0.2235 at 1e-3, 0.1739 at 1e-4, 0.1733 at 1e-5).
GRID = [(q, s, n) for q in (0.001, 0.01, 0.1) for s in (0.6, 1.0, 2.0) for n in (100, 10_000)]
# PRV (+ PLD) seconds per point (shared 2-core CPU, relative eps_error): the fast suite keeps the points under ~2 s; the
# rest run with CARDIOLAB_SLOW_TESTS=1. (0.1, 1.0, 10000) and (0.1, 0.6, 10000) take minutes (epsilon 128 and 461).
SLOW = {(0.001, 0.6, 100): 2.0, (0.001, 0.6, 10_000): 5.7, (0.001, 1.0, 100): 3.6, (0.001, 1.0, 10_000): 18,
        (0.001, 2.0, 100): 4.5, (0.001, 2.0, 10_000): 40, (0.01, 0.6, 10_000): 10, (0.01, 1.0, 10_000): 4.8,
        (0.01, 2.0, 10_000): 6.0, (0.1, 0.6, 100): 6.8, (0.1, 2.0, 10_000): 8.5, (0.1, 1.0, 10_000): 37, (0.1, 0.6, 10_000): 158}
# With Opacus's absolute eps_error = 0.01 seven points were > 1 % above PLD (e.g. q=0.001, sigma=2, 100 steps:
# 0.0248 vs 0.0147). With accounting.PRV_REL_ERROR all agree (measured: largest gap +0.43 % at that point,
# 0.01473 vs 0.01467; typically +0.1 %).
PRV_OVER_1PCT: dict = {}
# The PLD reference at interval 1e-4 itself overstates small epsilons (q=0.001, sigma=2, 10000 steps: 0.1738 vs
# 0.1733 at 1e-5, and PRV gives 0.1735): "PRV never below PLD" allows that much.
PLD_DISCRETISATION = 3e-3
# Opacus RDP vs dp-accounting RDP: dp-accounting drops the orders 1.1..1.6 where its series does not converge,
# so it is looser at these two points (Opacus 487.42 vs 933.60, 134.50 vs 170.11); both stay above PLD.
RDP_OVER_1PCT = {(0.1, 0.6, 10_000): "487.42 vs 933.60", (0.1, 1.0, 10_000): "134.50 vs 170.11"}


def _grid(marks_for: dict, prv: bool = True) -> list:
    params = []
    for point in GRID:
        marks = []
        if point in marks_for:
            marks.append(pytest.mark.xfail(strict=True, reason=f"measured {marks_for[point]} (> 1 %)"))
        if prv and point in SLOW:
            marks.append(pytest.mark.skipif(not os.environ.get("CARDIOLAB_SLOW_TESTS"),
                                            reason=f"{SLOW[point]} s of PRV (CARDIOLAB_SLOW_TESTS=1)"))
        params.append(pytest.param(*point, marks=marks, id=f"q{point[0]}-s{point[1]}-n{point[2]}"))
    return params


def _event(q: float, s: float, n: int):
    dp_accounting = pytest.importorskip("dp_accounting")
    return dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(s)), n)


@functools.lru_cache(maxsize=None)
def _pld(q: float, s: float, n: int) -> float:
    from dp_accounting import pld
    acc = pld.PLDAccountant(value_discretization_interval=1e-4)
    acc.compose(_event(q, s, n))
    return acc.get_epsilon(DELTA)


@functools.lru_cache(maxsize=None)
def _prv(q: float, s: float, n: int) -> float:
    return epsilon(q, s, n, DELTA, "prv")


@pytest.mark.parametrize("q,s,n", _grid(RDP_OVER_1PCT, prv=False))
def test_rdp_agrees_with_dp_accounting_rdp(q, s, n):
    from dp_accounting import rdp
    acc = rdp.RdpAccountant()
    acc.compose(_event(q, s, n))
    assert epsilon(q, s, n, DELTA, "rdp") == pytest.approx(acc.get_epsilon(DELTA), rel=0.01)


@pytest.mark.parametrize("q,s,n", _grid(PRV_OVER_1PCT))
def test_prv_agrees_with_dp_accounting_pld(q, s, n):
    pytest.importorskip("dp_accounting")
    assert _prv(q, s, n) == pytest.approx(_pld(q, s, n), rel=0.01)


@pytest.mark.parametrize("q,s,n", _grid({}))
def test_prv_is_never_below_pld(q, s, n):
    """The claim that matters for a guarantee: Opacus's epsilon does not understate the tight PLD value."""
    pytest.importorskip("dp_accounting")
    assert _prv(q, s, n) >= _pld(q, s, n) * (1 - PLD_DISCRETISATION)
