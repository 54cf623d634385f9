"""Memory accounting of the high-resolution 3D pipeline (`bench highres`) at smoke size 32x32x16."""
from __future__ import annotations

import pytest

from cardiolab.__main__ import main
from cardiolab.bench.highres import STAGES, HighresBench, format_table, measure, parse_switches

SMOKE = dict(size=(32, 32, 16), unet_channels=(16, 32, 32), device="cpu")   # 3 UNet levels: axes / 16


@pytest.mark.parametrize("stage", STAGES)
def test_measure_every_stage(stage):
    r = measure(HighresBench(stage=stage, **SMOKE))
    assert r["oom"] is False
    assert "error" not in r
    assert r["weights_bytes"] == 4 * r["params"]
    assert r["peak_bytes"] >= 0
    assert r["activations_bytes"] >= 0
    if stage == "sample":
        assert r["output_shape"] == [1, 1, 32, 32, 16]
        assert r["grads_optimizer_bytes"] == 0
    else:
        assert r["grads_optimizer_bytes"] == 12 * r["trainable"]


def test_controlnet_trains_only_the_slim_copy():
    r = measure(HighresBench(stage="controlnet", **SMOKE))
    full = measure(HighresBench(stage="controlnet", switches=(("r", 1.0),), **SMOKE))
    assert r["trainable"] < r["params"] / 2                # the frozen UNet is not trained
    assert r["trainable"] < full["trainable"] / 2


def test_cli_table_in_fresh_process(capsys):
    # every switch of the stage fixed: one row, one child process
    assert main(["bench", "highres", "--size", "32,32,16", "--unet-channels", "16,32,32", "--stage", "vqgan",
                 "--switch", "checkpointing=true", "--switch", "amp=bf16", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "### vqgan at 32x32x16" in out
    assert "| checkpointing=True, amp=bf16 |" in out


@pytest.mark.parametrize("argv, name", [
    (["--size", "100,64,32"], "--size 100,64,32"),
    (["--size", "64,64"], "--size"),
    (["--switch", "checkpointing=maybe", "--stage", "ldm"], "--switch 'checkpointing=maybe'"),
    (["--switch", "turbo=1"], "--switch 'turbo=1'"),
    (["--switch", "amp=fp8", "--stage", "vqgan"], "--switch 'amp=fp8'"),
])
def test_cli_bad_input_one_line_naming_it(capsys, argv, name):
    assert main(["bench", "highres", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert name in err
    assert len(err.splitlines()) == 1


def test_oom_row_names_switches_to_try():
    rows = [{"stage": "ldm", "switches": {}, "oom": True, "size": [512, 512, 256]}]
    text = format_table(rows)
    assert "### ldm at 512x512x256" in text
    assert "out of memory" in text
    assert "checkpointing=True" in text.splitlines()[-1]


def test_parse_switches_types():
    assert parse_switches("controlnet", ["r=1.0", "initial_stride=1", "checkpointing=TRUE"]) == (
        ("r", 1.0), ("initial_stride", 1), ("checkpointing", True))
    assert parse_switches("sample", ["r=1.0", "sliding=true"], only_known=True) == (("sliding", True),)
