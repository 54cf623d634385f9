"""What `make reproduce` leaves: stage timings (timings.json, the plan printed first, the Time section), README figures."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from cardiolab.reporting import reproduce
from cardiolab.__main__ import main
from cardiolab.core import read_json
from cardiolab.profiles import get_profile
from cardiolab.reporting.report import time_section


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A project root with two (empty) notebooks; papermill replaced by a no-op."""
    import papermill

    monkeypatch.setenv("CARDIOLAB_ROOT", str(tmp_path))
    for name in ("01_data.ipynb", "02_vqvae.ipynb"):
        (tmp_path / "notebooks").mkdir(exist_ok=True)
        (tmp_path / "notebooks" / name).write_text("{}")
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: None)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    return tmp_path


def test_run_notebooks_records_each_notebook_and_keeps_earlier_stages(root):
    reproduce.record_stage(get_profile("smoke"), "phantom", 12.34)
    reproduce.run_notebooks("smoke")
    stages = read_json(root / "runs" / "smoke" / "timings.json")["stages"]
    assert [s["stage"] for s in stages] == ["phantom", "01_data.ipynb", "02_vqvae.ipynb"]
    assert stages[0]["seconds"] == 12.3
    assert {s["precision"] for s in stages} == {"fp32"}      # what auto resolves to without native bf16
    assert {s["cpu_capability"] for s in stages} == {torch.backends.cpu.get_cpu_capability()}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory is read from Linux's /proc")
def test_peak_memory_sees_the_largest_child_process():
    hold = "x = bytearray(200 * 2**20); import time; time.sleep(1.5)"     # a child holding 200 MiB
    with reproduce.PeakMemory(every=0.2) as peak:
        subprocess.run(["python3", "-c", hold], check=True)
    assert 0.19 < peak.gib < 1.0


def test_peak_memory_reaches_timings_plan_and_report(root):
    reproduce.record_stage(get_profile("smoke"), "01_data.ipynb", 10.0, peak_rss_gib=3.456)
    assert reproduce.read_timings(root / "runs" / "smoke")[0]["peak_rss_gib"] == 3.46
    assert "peak 3.5 GiB" in reproduce.plan(get_profile("smoke"))
    assert "| 01_data.ipynb | 10 | fp32 |" in "\n".join(time_section(root / "runs" / "smoke"))


def test_a_rerun_replaces_only_its_own_stage(root):
    reproduce.record_stage(get_profile("smoke"), "02_vqvae.ipynb", 5.0)
    reproduce.record_stage(get_profile("smoke"), "phantom", 1.0)
    reproduce.record_stage(get_profile("smoke"), "02_vqvae.ipynb", 7.0)
    stages = reproduce.read_timings(root / "runs" / "smoke")
    assert [(s["stage"], s["seconds"]) for s in stages] == [("phantom", 1.0), ("02_vqvae.ipynb", 7.0)]


def test_plan_lists_every_stage_with_last_seconds_where_known(root, capsys, monkeypatch):
    monkeypatch.setattr(reproduce, "MEASURED", {})                      # no estimates: only this machine's runs
    assert "? s" in reproduce.plan(get_profile("smoke")).splitlines()[1]            # nothing recorded yet
    reproduce.record_stage(get_profile("smoke"), "phantom", 60.0)
    reproduce.record_stage(get_profile("smoke"), "01_data.ipynb", 120.0)
    assert main(["notebooks", "--profile", "smoke", "--plan"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["phantom", "01_data.ipynb", "02_vqvae.ipynb"]
    assert "60.0 s" in lines[1]
    assert "? s" in lines[3]
    assert "180.0 s" in lines[-1]
    assert not (root / "runs" / "smoke" / "notebooks").exists()        # --plan runs nothing


def test_plan_estimates_a_first_run_from_the_measured_runs(root):
    lines = reproduce.plan(get_profile("tiny")).splitlines()
    vq = reproduce.MEASURED["tiny"]["seconds"]["02"]
    assert [line.split()[0] for line in lines[1:4]] == ["phantom", "01_data.ipynb", "02_vqvae.ipynb"]
    assert lines[3].endswith(f"{vq:8.0f} s  est.")                   # matched by its NN_ prefix
    assert "with estimates" in lines[4]
    assert "5430c36" in lines[5]                                      # the estimates name the run they came from


def test_plan_mixes_this_machines_seconds_with_estimates(root):
    reproduce.record_stage(get_profile("tiny"), "01_data.ipynb", 100.0)
    lines = reproduce.plan(get_profile("tiny")).splitlines()
    assert "100.0 s" in lines[2]
    assert "est." not in lines[2]
    seconds = reproduce.MEASURED["tiny"]["seconds"]
    assert f"{seconds['phantom'] + 100.0 + seconds['02']:8.1f} s" in lines[4]


def test_plan_on_a_real_data_source_has_no_phantom_stage(root, tmp_path, capsys):
    assert reproduce.plan(get_profile("tiny"), data=tmp_path).splitlines()[1].split()[0] == "01_data.ipynb"
    assert main(["notebooks", "--profile", "tiny", "--plan", "--data", str(tmp_path), "--layout", "acdc"]) == 0
    assert "phantom" not in capsys.readouterr().out.split()


def test_plan_says_not_measured_for_a_profile_without_a_run(root):
    lines = reproduce.plan(get_profile("full")).splitlines()
    assert "? s  (not measured)" in lines[1]
    assert not any("total" in line for line in lines)


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
@pytest.mark.parametrize("profile", ["tiny", "smoke"])
def test_make_lab_opens_the_notebooks_in_the_profile_it_is_given(profile):
    repo = Path(__file__).resolve().parents[1]
    dry = subprocess.run(["make", "-n", "-C", str(repo), "lab", f"PROFILE={profile}"], capture_output=True, text=True,
                         check=True).stdout
    lab = [line.split() for line in dry.splitlines() if "jupyter lab" in line]
    assert lab == [[f"CARDIOLAB_PROFILE={profile}", ".venv/bin/python", "-m", "jupyter", "lab", "notebooks/"]]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_lab_passes_the_data_source_make_reproduce_was_given():
    repo = Path(__file__).resolve().parents[1]
    dry = subprocess.run(["make", "-n", "-C", str(repo), "lab", "DATA=/data/ACDC", "LAYOUT=mnms"], capture_output=True,
                         text=True, check=True).stdout
    lab = next(line for line in dry.splitlines() if "jupyter lab" in line)
    assert 'CARDIOLAB_DATA="/data/ACDC"' in lab
    assert "CARDIOLAB_LAYOUT=mnms" in lab


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_passes_the_vendor_holdout_to_the_notebooks_and_the_lab():
    repo = Path(__file__).resolve().parents[1]
    make = ["make", "-n", "-C", str(repo), "DATA=/data/MnM", "LAYOUT=mnms", "HOLDOUT_VENDOR=A,B"]
    dry = subprocess.run(make + ["reproduce"], capture_output=True, text=True, check=True).stdout
    runs = [line for line in dry.splitlines() if "cardiolab notebooks" in line]
    assert len(runs) == 2
    assert all('--holdout-vendor "A,B"' in line for line in runs)
    dry = subprocess.run(make + ["lab"], capture_output=True, text=True, check=True).stdout
    assert 'CARDIOLAB_HOLDOUT_VENDOR="A,B"' in next(line for line in dry.splitlines() if "jupyter lab" in line)


def test_report_time_section(root):
    assert time_section(root / "runs" / "smoke") == []
    reproduce.record_stage(get_profile("smoke"), "phantom", 30.0)
    reproduce.record_stage(get_profile("smoke"), "01_data.ipynb", 12345.6)
    text = "\n".join(time_section(root / "runs" / "smoke"))
    assert "## Time" in text
    assert "| phantom | 30 | fp32 |" in text
    assert "| 01_data.ipynb | 12345.6 | fp32 |" in text
    assert "Total: 12376 s" in text


def test_phantom_verb_records_the_first_stage(root, monkeypatch):
    import cardiolab.data.phantom as phantom
    monkeypatch.setattr(phantom, "ensure_phantom", lambda profile, seed=0, workers=1: root / "data")
    assert main(["phantom", "--profile", "smoke"]) == 0
    assert [s["stage"] for s in reproduce.read_timings(root / "runs" / "smoke")] == ["phantom"]


def _figures(run_dir, sizes: dict[str, int]) -> None:
    (run_dir / "figures").mkdir(parents=True)
    for name, size in sizes.items():
        (run_dir / "figures" / name).write_bytes(b"x" * size)


def test_report_publishes_the_tiny_runs_key_figures_within_the_cap(root, monkeypatch):
    monkeypatch.setattr(reproduce, "MAX_FIGURE_BYTES", 250)
    tiny = root / "runs" / "tiny"
    _figures(tiny, {"vqgan_reconstruction.png": 100, "utility.png": 100, "dit_sample_montage.png": 300,
                    "vqgan_codebook.png": 10})
    assert main(["report", "--runs", str(tiny)]) == 0
    copied = sorted(p.name for p in (root / "docs" / "figures").iterdir())
    assert copied == ["utility.png", "vqgan_reconstruction.png"]   # key figures only; the montage alone passes 250 B


def test_other_profiles_publish_nothing(root):
    smoke = root / "runs" / "smoke"
    _figures(smoke, {"utility.png": 10})
    assert reproduce.publish_figures(smoke) == []
    assert not (root / "docs").exists()
