"""Automatic precision: what amp='auto' resolves to, and what every run records about it."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from cardiolab.core import CardiolabError, machine_info, read_json, resolve_amp
from cardiolab.engine import TrainConfig, Trainer, read_metrics, run_status
from cardiolab.profiles import PROFILES, override


def _cpu_bf16(monkeypatch, avx512_bf16: bool, amx: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)


def test_auto_is_fp32_on_a_cpu_without_native_bf16(monkeypatch):
    _cpu_bf16(monkeypatch, avx512_bf16=False, amx=False)
    assert resolve_amp("auto", "cpu") == "off"
    assert machine_info("cpu")["bf16_native"] is False


@pytest.mark.parametrize("avx512_bf16, amx", [(True, False), (False, True)])
def test_auto_is_bf16_on_a_cpu_with_native_bf16(monkeypatch, avx512_bf16, amx):
    _cpu_bf16(monkeypatch, avx512_bf16, amx)
    assert resolve_amp("auto", torch.device("cpu")) == "bf16"


def test_auto_counts_a_torch_without_the_probes_as_no_bf16(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert resolve_amp("auto", "cpu") == "off"


@pytest.mark.parametrize("supported, expected", [(True, "bf16"), (False, "off")])
def test_auto_on_a_cuda_device_follows_its_bf16_support(monkeypatch, supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    _cpu_bf16(monkeypatch, avx512_bf16=not supported, amx=False)   # the CPU must not decide for the GPU
    assert resolve_amp("auto", torch.device("cuda")) == expected


@pytest.mark.parametrize("amp", ["bf16", "fp16", "off"])
def test_explicit_values_pass_through(monkeypatch, amp):
    _cpu_bf16(monkeypatch, avx512_bf16=False, amx=False)
    assert resolve_amp(amp, "cpu") == amp


def test_unknown_value_names_the_field():
    with pytest.raises(CardiolabError, match="dit.amp='fp32'"):
        resolve_amp("fp32", "cpu", "dit.amp")


def test_profiles_default_to_auto_and_reject_unknown_values():
    for profile in PROFILES.values():
        assert (profile.vqgan.amp, profile.dit.amp) == ("auto", "auto"), profile.name
    assert override(PROFILES["smoke"], ["vqgan.amp=off"]).vqgan.amp == "off"
    with pytest.raises(CardiolabError, match="vqgan.amp"):
        override(PROFILES["smoke"], ["vqgan.amp=bf61"])


def test_engine_uses_what_auto_resolves_to(monkeypatch):
    _cpu_bf16(monkeypatch, avx512_bf16=False, amx=False)
    tr = _trainer("unused", amp="auto")
    assert (tr.precision, tr.amp_dtype) == ("fp32", None)
    _cpu_bf16(monkeypatch, avx512_bf16=True, amx=False)
    tr = _trainer("unused", amp="auto")
    assert (tr.precision, tr.amp_dtype) == ("bf16", torch.bfloat16)
    with pytest.raises(CardiolabError, match="TrainConfig.amp"):
        _trainer("unused", amp="half")


# ---- what a run records -----------------------------------------------------------------------
def _trainer(run_dir, amp: str = "auto", steps: int = 2) -> Trainer:
    torch.manual_seed(0)
    net = nn.Linear(4, 1)
    cfg = TrainConfig(steps=steps, batch_size=4, lr=1e-2, warmup=1, log_every=1, amp=amp, device="cpu")
    return Trainer(run_dir, cfg, {"model": net}, {"model": torch.optim.SGD(net.parameters(), lr=1e-2)},
                   config={"model": {"width": 4}})


def _fit(run_dir, amp: str = "auto") -> Trainer:
    data = TensorDataset(torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.zeros(8, 1))

    def step_fn(batch, step, tr):
        x, y = batch
        with tr.autocast():
            loss = ((tr.modules["model"](x).float() - y) ** 2).mean()
        tr.backward(loss, "model")
        return {"loss": loss.item()}
    return _trainer(run_dir, amp).fit(data, step_fn)


def test_run_records_precision_and_machine(tmp_path, monkeypatch):
    _cpu_bf16(monkeypatch, avx512_bf16=False, amx=False)
    _fit(tmp_path / "run")
    config = read_json(tmp_path / "run" / "config.json")
    assert config["precision"] == "fp32"
    assert config["train"]["amp"] == "auto"
    assert config["machine"] == machine_info("cpu")
    records = read_metrics(tmp_path / "run")
    assert [r["precision"] for r in records] == ["fp32", "fp32"]
    assert [r["machine"] for r in records] == [f"cpu {torch.backends.cpu.get_cpu_capability()}"] * 2
    assert all(r["s_per_step"] > 0 for r in records)


def test_explicit_bf16_is_recorded(tmp_path):
    _fit(tmp_path / "run", amp="bf16")
    assert read_json(tmp_path / "run" / "config.json")["precision"] == "bf16"
    assert read_metrics(tmp_path / "run")[-1]["precision"] == "bf16"


def test_precision_and_machine_do_not_make_a_run_stale(tmp_path, monkeypatch):
    """A run trained with amp='auto' on another machine (other precision, other CPU) is still finished."""
    _cpu_bf16(monkeypatch, avx512_bf16=False, amx=False)
    _fit(tmp_path / "run")
    _cpu_bf16(monkeypatch, avx512_bf16=True, amx=True)     # now a machine where auto means bf16
    again = _trainer(tmp_path / "unused")
    assert again.precision == "bf16"
    match = {"model": {"width": 4}, "train": dataclasses.asdict(again.cfg)}
    assert run_status(tmp_path / "run", 2, match) == "finished"
    state = read_json(tmp_path / "run" / "state.json")["config"]
    assert "precision" not in state
    assert "machine" not in state


# ---- bench dit --precision ---------------------------------------------------------------------
@pytest.mark.parametrize("argv, expected", [([], "auto"), (["--precision", "fp32"], "fp32"),
                                            (["--precision", "bf16"], "bf16"), (["--bf16"], "bf16")])
def test_bench_precision_flags(argv, expected):
    from cardiolab.__main__ import build_parser
    assert build_parser().parse_args(["bench", "dit", *argv]).precision == expected


def test_bench_rejects_an_unknown_precision(capsys):
    from cardiolab.__main__ import build_parser
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "dit", "--precision", "fp8"])
    assert "--precision" in capsys.readouterr().err


@pytest.mark.parametrize("native, expected", [(False, "fp32"), (True, "bf16")])
def test_bench_auto_is_what_training_would_pick(monkeypatch, native, expected):
    from cardiolab.bench import DiTBench
    _cpu_bf16(monkeypatch, avx512_bf16=native, amx=False)
    assert DiTBench(precision="auto", device="cpu").resolved_precision() == expected
    assert DiTBench(precision="fp32", device="cpu").resolved_precision() == "fp32"
    assert DiTBench(precision="bf16", device="cpu").resolved_precision() == "bf16"


def test_bench_json_records_precision_and_machine():
    from cardiolab.bench import DiTBench, bench_dit_sample
    b = DiTBench(input_size=(2, 8, 8, 4), patch=(1, 4, 4, 2), channels=2, hidden=32, depth=1, heads=2,
                 precision="fp32", device="cpu")
    out = bench_dit_sample(b, sample_steps=1)
    assert out["precision"] == "fp32"
    assert out["machine"] == machine_info("cpu")
    assert out["config"]["precision"] == "fp32"
