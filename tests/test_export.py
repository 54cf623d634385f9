"""Release export (cardiolab.privacy.export, `export` verb): nnU-Net v2 raw layout, ACDC layout, gate, bad input."""
from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest

from cardiolab.profiles import get_profile
from cardiolab.__main__ import main
from cardiolab.core import write_json
from cardiolab.io.cohort import INFO_KEYS, Subject, make_affine, samples_record, write_subject
from cardiolab.io.layouts import read_cohort

SHAPE = (8, 8, 2, 4)   # (x, y, slice, frame)


def _subject(sid, seed, labelled=True, nan=False):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=SHAPE).astype(np.float32)
    if nan:
        image[0, 0, 0, 0] = np.nan
    labels = {f: rng.integers(0, 4, SHAPE[:3]).astype(np.uint8) for f in (0, 2)} if labelled else {}
    return Subject(id=sid, image=image, affine=make_affine((1.5, 1.5, 8.0)), frame_ms=30.0, ed=0, es=2,
                   labels=labels, info={"Group": "NOR", "Height": 170, "Weight": 70, "SourceId": "patient042"})


@pytest.fixture
def synthetic(tmp_path):
    root = tmp_path / "synthetic"
    for i, labelled in enumerate([True, True, False]):
        write_subject(root, _subject(f"synth{i + 1:04d}", i, labelled), extra_files={"phantom_truth.json": "{}"})
    write_json(root / "samples.json", {"generator": "dit", "run": "runs/tiny/dit", "steps": 10, "seed": 0})
    return root


IDS = ["synth0001", "synth0002", "synth0003"]
TRAINING = {"cache": "data/cache/tiny-private", "ids": [f"patient{i:03d}" for i in range(1, 51)]}


def _audit(tmp_path, copy_fraction, limit=None, flagged=(), training_cohort=None):
    """An `audit copies` JSON of the synthetic fixture; training_cohort: the id of the set it compared against."""
    audit = {"copy_fraction": copy_fraction, "threshold": 0.1, "percentile": 5, "memorized_fraction": 3.0,
             "embedding": "pixels", "training_cohort": training_cohort,
             "per_synthetic": [{"id": i, "is_copy": i in flagged} for i in IDS]}
    if limit is not None:
        audit["max_copy_fraction"] = limit
    return write_json(tmp_path / "audit.json", audit)


def _dp_sample(synthetic, tmp_path, monkeypatch, release=True, group_size=1):
    """samples.json of a DP cohort as `sample` writes it: the run's privacy.json (written by the training code)
    copied by tasks.dp.sample_cohort into samples.json["privacy"]. Only the decoding is skipped."""
    from cardiolab.dp.accounting import training_cohort_id, write_privacy_json
    from cardiolab.tasks import dit
    from cardiolab.tasks import dp as task

    run = tmp_path / "runs" / "tiny" / "dit-dp"
    write_json(run / "config.json", {"task": "dit-dp"})
    training = training_cohort_id(tmp_path / TRAINING["cache"], TRAINING["ids"])
    write_privacy_json(run, max_grad_norm=1.0, noise_multiplier=0.9, sample_rate=0.25, steps=40, delta=1e-5,
                       accountant="prv", trained_parameters=10, n_subjects=50, init_run=None, vqgan_run=None,
                       release=release, noise_seed=None if release else 0, training_cohort=training,
                       group_size=group_size)
    record = samples_record(synthetic)
    monkeypatch.setattr(dit, "sample_cohort", lambda run_dir, *a, meta=None, **kw: write_json(
        synthetic / "samples.json", {**record, "run": str(run_dir), **meta}))
    task.sample_cohort(run, 3, 10, 0, synthetic)
    return training


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_nnunet_layout_follows_nnunet_v2_dataset_format(synthetic, tmp_path):
    out = tmp_path / "Dataset501_Synth"
    assert main(["export", "--synthetic", str(synthetic), "--format", "nnunet", "--out", str(out), "--no-gate"]) == 0
    dataset = json.loads((out / "dataset.json").read_text())
    assert {"channel_names", "labels", "numTraining", "file_ending"} <= set(dataset)
    assert dataset["labels"] == {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
    assert dataset["channel_names"] == {"0": "MRI"}
    assert dataset["file_ending"] == ".nii.gz"
    images = sorted((out / "imagesTr").iterdir())
    labels = sorted((out / "labelsTr").iterdir())
    assert dataset["numTraining"] == len(labels) == len(images) == 4        # 2 labelled subjects x (ED, ES)
    case = re.compile(r"(case\d{4}_frame\d{2})_0000\.nii\.gz")
    assert all(case.fullmatch(p.name) for p in images)
    assert [case.fullmatch(p.name).group(1) + ".nii.gz" for p in images] == [p.name for p in labels]
    assert len(list((out / "imagesTs").iterdir())) == 2                     # the unlabelled subject's ED, ES
    img, lab = nib.load(images[0]), nib.load(labels[0])
    assert img.shape == lab.shape == SHAPE[:3]
    np.testing.assert_allclose(img.affine, lab.affine)


def test_export_strips_headers_ids_and_side_files(synthetic, tmp_path):
    out = tmp_path / "acdc"
    assert main(["export", "--synthetic", str(synthetic), "--format", "acdc", "--out", str(out), "--no-gate"]) == 0
    files = _files(out)
    assert not any("synth" in f or "phantom_truth" in f or "samples.json" in f for f in files)
    subjects = list(read_cohort(out))
    assert [s.id for s in subjects] == ["case0001", "case0002", "case0003"]
    assert set(subjects[0].info) <= set(INFO_KEYS)
    assert "patient042" not in (out / "case0001" / "Info.cfg").read_text()
    header = nib.load(out / "case0001" / "case0001_4d.nii.gz").header
    for key in ("descrip", "intent_name", "aux_file", "db_name"):
        assert header[key].item() in (b"", "")
    card = (out / "DATA_CARD.md").read_text()
    assert "profile: tiny" in card
    assert "not audited: exported with --no-gate" in card
    assert "differential privacy: no" in card


def test_export_without_a_gate_refuses(synthetic, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", "--synthetic", str(synthetic), "--format", "acdc", "--out", str(out)]) == 2
    assert "--no-gate" in capsys.readouterr().err
    assert not out.exists()


def test_data_card_of_a_dp_cohort_states_its_guarantee_and_drops_flagged_cases(synthetic, tmp_path, monkeypatch):
    from cardiolab.dp.accounting import epsilon

    training = _dp_sample(synthetic, tmp_path, monkeypatch)
    assert not (synthetic / "privacy.json").exists()              # the record lives in samples.json only
    gate = _audit(tmp_path, copy_fraction=33.3, limit=40.0, flagged=["synth0002"], training_cohort=training)
    out = tmp_path / "acdc"
    assert main(["export", "--synthetic", str(synthetic), "--format", "acdc", "--out", str(out),
                 "--gate", str(gate)]) == 0
    card = (out / "DATA_CARD.md").read_text()
    eps = epsilon(0.25, 0.9, 40, 1e-5, "prv")
    assert f"differential privacy: yes: (epsilon = {eps:.4g}, delta = 1e-05)" in card
    assert "N = 50 private subjects" in card
    assert "unit of privacy: one subject" in card
    assert "delta x N = 0.0005" in card
    assert "release mode: yes" in card
    assert "runs of an epsilon grid compose" in card
    assert "(matches the generator's)" in card
    assert "flagged cases dropped from this copy: 1 (synth0002;" in card
    assert [s.id for s in read_cohort(out)] == ["case0001", "case0002"]


def test_dp_cohort_without_a_gate_refuses_unless_no_gate_is_explicit(synthetic, tmp_path, monkeypatch):
    _dp_sample(synthetic, tmp_path, monkeypatch)
    args = ["export", "--synthetic", str(synthetic), "--format", "acdc", "--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert not (tmp_path / "out").exists()
    assert main(args + ["--no-gate"]) == 0
    card = (tmp_path / "out" / "DATA_CARD.md").read_text()
    assert "not audited: exported with --no-gate" in card
    assert "differential privacy: yes" in card


@pytest.mark.parametrize("training_cohort", ["0123456789ab", None])
def test_gate_from_an_audit_of_another_training_set_is_refused(synthetic, tmp_path, monkeypatch, capsys,
                                                               training_cohort):
    _dp_sample(synthetic, tmp_path, monkeypatch)
    gate = _audit(tmp_path, copy_fraction=0.0, limit=5.0, training_cohort=training_cohort)
    out = tmp_path / "out"
    assert main(["export", "--synthetic", str(synthetic), "--format", "acdc", "--out", str(out),
                 "--gate", str(gate)]) == 2
    assert "own training set" in capsys.readouterr().err
    assert not out.exists()


def test_data_card_states_group_privacy_where_a_subject_held_several_records(synthetic, tmp_path, monkeypatch):
    from cardiolab.dp.accounting import epsilon

    training = _dp_sample(synthetic, tmp_path, monkeypatch, group_size=3)
    gate = _audit(tmp_path, copy_fraction=0.0, limit=5.0, training_cohort=training)
    out = tmp_path / "acdc"
    assert main(["export", "--synthetic", str(synthetic), "--format", "acdc", "--out", str(out),
                 "--gate", str(gate)]) == 0
    eps = epsilon(0.25, 0.9, 40, 1e-5, "prv")
    assert f"up to 3 training records; such a subject's guarantee is (epsilon = {3 * eps:.4g}" in \
        (out / "DATA_CARD.md").read_text()


def test_a_replayable_dp_cohort_is_not_called_dp(synthetic, tmp_path, monkeypatch):
    training = _dp_sample(synthetic, tmp_path, monkeypatch, release=False)
    gate = _audit(tmp_path, copy_fraction=0.0, limit=5.0, training_cohort=training)
    out = tmp_path / "acdc"
    assert main(["export", "--synthetic", str(synthetic), "--format", "acdc", "--out", str(out),
                 "--gate", str(gate)]) == 0
    card = (out / "DATA_CARD.md").read_text()
    assert "differential privacy: no. The generator was trained with DP-SGD in replayable mode" in card
    assert "epsilon =" not in card


def test_gate_refuses_above_its_limit(synthetic, tmp_path, capsys):
    out = tmp_path / "out"
    gate = _audit(tmp_path, copy_fraction=30.0, limit=10.0)
    code = main(["export", "--synthetic", str(synthetic), "--format", "nnunet", "--out", str(out), "--gate", str(gate)])
    assert code == 1
    assert not out.exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_gate_command_line_limit_overrides_and_is_recorded(synthetic, tmp_path):
    out = tmp_path / "out"
    gate = _audit(tmp_path, copy_fraction=30.0, limit=10.0)
    code = main(["export", "--synthetic", str(synthetic), "--format", "acdc", "--out", str(out),
                 "--gate", str(gate), "--max-copy-fraction", "50"])
    assert code == 0
    card = (out / "DATA_CARD.md").read_text()
    assert "30.00 %" in card
    assert "50.00 %" in card


def test_gate_of_another_cohort_is_bad_input(synthetic, tmp_path, capsys):
    gate = write_json(tmp_path / "audit.json", {"copy_fraction": 0.0, "max_copy_fraction": 5.0,
                                                "per_synthetic": [{"id": "synth9999", "is_copy": False}]})
    out = tmp_path / "out"
    assert main(["export", "--synthetic", str(synthetic), "--format", "acdc", "--out", str(out),
                 "--gate", str(gate)]) == 2
    assert not out.exists()
    assert "audits other subjects" in capsys.readouterr().err


def test_gate_without_any_limit_is_bad_input(synthetic, tmp_path):
    gate = _audit(tmp_path, copy_fraction=0.0)
    out = tmp_path / "out"
    assert main(["export", "--synthetic", str(synthetic), "--format", "acdc", "--out", str(out),
                 "--gate", str(gate)]) == 2
    assert not out.exists()


@pytest.mark.parametrize("case", ["empty", "nan", "out-not-empty"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, case):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    if case == "nan":
        write_subject(src, _subject("synth0001", 0, nan=True))
    if case == "out-not-empty":
        write_subject(src, _subject("synth0001", 0))
        out.mkdir()
        (out / "keep.txt").write_text("x")
    before = _files(out) if out.exists() else None
    assert main(["export", "--synthetic", str(src), "--format", "nnunet", "--out", str(out), "--no-gate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert (_files(out) if out.exists() else None) == before


def test_copy_audit_records_the_training_set_a_dp_run_on_the_same_cache_records(phantom_root, smoke_cache,
                                                                                fake_stage1, tmp_path):
    from cardiolab.dp.accounting import training_cohort_id
    from cardiolab.privacy.audit import audit_copies
    from cardiolab.tasks import dp as task
    from cardiolab.tasks.vqgan import encode_cohort, load_latents

    r = audit_copies(phantom_root, get_profile("smoke"), smoke_cache, smoke_cache, embedding="pixels",
                     out_json=tmp_path / "c.json")
    latents = load_latents(encode_cohort(fake_stage1["vqgan_run"], smoke_cache, tmp_path / "lat"))
    assert r["training_cohort"] == task._training_cohort(latents)       # what a dit-dp run on it records
    manifest = json.loads((smoke_cache / "manifest.json").read_text())
    public = [s["id"] for s in manifest["subjects"] if s["split"] == "public"]
    assert r["training_cohort"] != training_cohort_id(smoke_cache, public)   # another set of subjects
