"""`audit mia` end to end on a 2-step smoke DiT over latents of the smoke cache (untrained VQ-GAN)."""
from __future__ import annotations

import json

import pytest
import torch

from cardiolab.__main__ import main
from cardiolab.privacy.membership import JSON_KEYS, subject_noise
from cardiolab.profiles import get_profile


@pytest.fixture(scope="module")
def dit_run(fake_stage1, smoke_cache, tmp_path_factory):
    from cardiolab.tasks import dit
    from cardiolab.tasks.vqgan import encode_cohort

    root = tmp_path_factory.mktemp("mia")
    latents = encode_cohort(fake_stage1["vqgan_run"], smoke_cache, root / "latents")
    return dit.train(get_profile("smoke"), out=root / "dit", steps=2, latents=latents)


def test_subject_noise_is_fixed_per_subject():
    assert torch.equal(subject_noise("patient001", (2, 3), 0), subject_noise("patient001", (2, 3), 0))


def test_subject_noise_differs_between_subjects():
    assert not torch.equal(subject_noise("patient001", (2, 3), 0), subject_noise("patient002", (2, 3), 0))


@pytest.fixture(scope="module")
def mia_json(dit_run, phantom_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("mia-out") / "mia.json"
    code = main(["audit", "mia", "--profile", "smoke", "--run", str(dit_run), "--reference", str(dit_run),
                 "--synthetic", str(phantom_root), "--n-fresh", "2", "--references", "0", "--json", str(out)])
    assert code == 0
    return json.loads(out.read_text())


def test_audit_mia_json_has_its_documented_keys(mia_json):
    assert set(JSON_KEYS) <= set(mia_json)


def test_audit_mia_runs_every_attack(mia_json):
    assert set(mia_json["attacks"]) == {"loss", "pia", "calibrated", "distance"}


def test_audit_mia_attack_keys(mia_json):
    assert {"auc", "auc_ci95", "tpr_at_fpr", "balanced_accuracy"} <= set(mia_json["attacks"]["loss"])


def test_audit_mia_low_fpr_needs_enough_nonmembers(mia_json):
    assert mia_json["attacks"]["loss"]["tpr_at_fpr"]["1%"] == "n too small"


def test_calibrating_against_itself_is_chance(mia_json):
    assert mia_json["attacks"]["calibrated"]["auc"] == 0.5


def test_audit_mia_counts_holdout_and_fresh_as_nonmembers(mia_json):
    assert mia_json["n_nonmembers"] == mia_json["n_holdout"] + 2


def test_audit_mia_writes_the_roc_figure(mia_json):
    from pathlib import Path

    assert Path(mia_json["figure"]).stat().st_size > 0


def test_audit_mia_on_a_non_dit_run_exits_2_without_json(tmp_path, capsys):
    run = tmp_path / "seg"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"task": "segmenter"}))
    out = tmp_path / "mia.json"
    assert main(["audit", "mia", "--profile", "smoke", "--run", str(run), "--json", str(out)]) == 2
    assert not out.exists()
    assert "not a DiT" in capsys.readouterr().err


def test_a_run_is_attacked_with_its_own_samples(tmp_path, monkeypatch):
    from cardiolab.core import write_json
    from cardiolab.privacy.membership import _own_samples
    from cardiolab.profiles import get_profile

    monkeypatch.setenv("CARDIOLAB_ROOT", str(tmp_path))
    smoke = get_profile("smoke")
    run = smoke.run("dit-dp-eps1-pre-trained")
    other = smoke.run("dit-dp-eps10-pre-trained")
    write_json(smoke.samples("dit-dp") / "samples.json", {"run": str(other)})     # `sample`'s default: another run
    assert _own_samples(run, smoke, "dit-dp") == smoke.samples(run.name)          # not samples/dit-dp
    write_json(smoke.samples("dit-dp") / "samples.json", {"run": str(run)})
    assert _own_samples(run, smoke, "dit-dp") == smoke.samples("dit-dp")
    write_json(smoke.samples(run.name) / "samples.json", {"run": str(run)})
    assert _own_samples(run, smoke, "dit-dp") == smoke.samples(run.name)


def test_fresh_cines_in_chunks_equal_one_cohort_read_as_the_members_are(tmp_path, monkeypatch):
    from cardiolab.data.cines import load_cines
    from cardiolab.data.phantom import generate_cohort
    from cardiolab.privacy import membership
    from cardiolab.privacy.embeddings import embedder
    from cardiolab.profiles import get_profile

    monkeypatch.setenv("CARDIOLAB_ROOT", str(tmp_path))
    monkeypatch.setattr(membership, "FRESH_CHUNK", 2)
    smoke = get_profile("smoke")
    d = smoke.data
    fresh = membership.fresh_cines(smoke, 3, seed=7)
    generate_cohort(tmp_path / "whole", 3, seed=7, size=d.phantom_size, spacing=d.phantom_spacing,
                    slices=d.phantom_slices, frames=d.phantom_frames)
    whole = load_cines(tmp_path / "whole", smoke)
    assert fresh["ids"] == [f"fresh-7-{s}" for s in whole.ids]
    assert torch.equal(fresh["images"], whole.images)
    pixels = embedder("pixels")(load_cines(tmp_path / "whole", smoke, label_free=True).images).float()
    assert torch.equal(fresh["pixels"], pixels)
    assert membership.fresh_cines(smoke, 3, seed=7)["ids"] == fresh["ids"]     # read back from its cache file


def test_audit_mia_with_one_reference_exits_2_naming_it(dit_run, tmp_path, capsys):
    out = tmp_path / "mia.json"
    assert main(["audit", "mia", "--profile", "smoke", "--run", str(dit_run), "--references", "1",
                 "--json", str(out)]) == 2
    assert "--references 1" in capsys.readouterr().err
    assert not out.exists()
