"""The model registry, the one staleness rule (shaping), the tensor-to-cohort writer and the models verb."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cardiolab.core import CardiolabError
from cardiolab.engine import ensure_run
from cardiolab.profiles import get_profile, override
from cardiolab.tasks import REGISTRY, describe, generators, get_task, task_of_run

SMOKE = get_profile("smoke")


def finished_run(run, shaping, steps=10**6):
    """A run folder that the engine reads as finished with `shaping` (no weights needed by run_status)."""
    run.mkdir(parents=True, exist_ok=True)
    state = {"finished": True, "step": steps, "steps": steps, "config": {"shaping": json.loads(json.dumps(shaping))}}
    (run / "state.json").write_text(json.dumps(state))
    (run / "checkpoint.pt").write_bytes(b"")
    return run


def test_registry_lists_the_models_with_their_contract():
    assert {"vqgan", "dit", "segmenter", "evaluator"} <= set(REGISTRY)
    for name in REGISTRY:
        task = get_task(name)
        assert task.NAME == name
        for fn in ("shaping", "num_parameters", "train", "ensure", "load"):
            assert callable(getattr(task, fn)), f"{name}.{fn}"
    assert "dit" in generators()
    assert "vqgan" not in generators()
    with pytest.raises(CardiolabError, match="unknown model 'nope'"):
        get_task("nope")


@pytest.mark.parametrize("model,field,value", [("dit", "dit.sample_steps", "7"), ("dit", "dit.n_samples", "3"),
                                               ("dit", "dit.amp", "off"), ("segmenter", "eval.utility_seeds", "5"),
                                               ("segmenter", "eval.feature_steps", "5"),
                                               ("evaluator", "eval.seg_steps", "5"), ("vqgan", "vqgan.amp", "off")])
def test_sampling_and_evaluation_settings_shape_no_weights(model, field, value):
    task = get_task(model)
    assert task.shaping(override(SMOKE, [f"{field}={value}"])) == task.shaping(SMOKE)


def test_vqgan_codes_reshape_the_vqgan_and_everything_downstream():
    changed = override(SMOKE, ["vqgan.codes=32"])
    assert get_task("vqgan").shaping(changed) != get_task("vqgan").shaping(SMOKE)
    assert get_task("dit").shaping(changed) != get_task("dit").shaping(SMOKE)         # via the VQ-GAN's run id
    assert get_task("segmenter").shaping(changed) == get_task("segmenter").shaping(SMOKE)  # images, not latents


def test_ensure_retrains_exactly_when_shaping_changes(tmp_path, monkeypatch):
    """Through each task's ensure: a sampling/evaluation field retrains nothing, vqgan.codes retrains the VQ-GAN
    and the DiT (whose latents are re-encoded)."""
    monkeypatch.setattr("cardiolab.profiles.project_root", lambda: tmp_path)
    from cardiolab.tasks import dit, segmenter, vqgan

    calls = []
    for task in (vqgan, dit, segmenter):
        monkeypatch.setattr(task, "train", lambda p, out=None, resume=False, _n=task.NAME, **kw: calls.append(_n))
    monkeypatch.setattr(vqgan, "ensure_latents", lambda p, run_dir=None, out=None: calls.append("encode"))
    for task in (vqgan, dit, segmenter):
        finished_run(SMOKE.run(task.NAME), task.shaping(SMOKE))
    (SMOKE.run("segmenter") / "scores.json").write_text("{}")

    for field in ("dit.sample_steps=2", "dit.n_samples=1", "eval.utility_seeds=4"):
        p = override(SMOKE, [field])
        vqgan.ensure(p), dit.ensure(p), segmenter.ensure(p)
    assert calls == ["encode"] * 3                         # latents checked, no model retrained

    calls.clear()
    p = override(SMOKE, ["vqgan.codes=32"])
    vqgan.ensure(p), dit.ensure(p), segmenter.ensure(p)
    assert calls == ["vqgan", "encode", "dit"]


def test_ensure_run_resumes_a_partial_run_and_keeps_a_finished_one(tmp_path):
    seen = []
    finished_run(tmp_path / "run", {"a": 1}, steps=5)
    ensure_run(tmp_path / "run", 5, {"a": 1}, seen.append)
    assert seen == []
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    (tmp_path / "run" / "state.json").write_text(json.dumps({**state, "finished": False, "step": 2}))
    ensure_run(tmp_path / "run", 5, {"a": 1}, seen.append)
    assert seen == [True]                                   # resumed
    ensure_run(tmp_path / "run", 5, {"a": 2}, seen.append)
    assert seen == [True, False]                            # other shaping: from scratch


def test_task_of_run_reads_the_recorded_name_and_old_runs(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "config.json").write_text(json.dumps({"task": "dit"}))
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps({"vqgan": {}, "train": {}}))
    assert task_of_run(tmp_path / "new") == "dit"
    assert task_of_run(tmp_path / "old") == "vqgan"
    with pytest.raises(CardiolabError, match="not a run folder"):
        task_of_run(tmp_path / "none")


def test_models_verb_lists_kinds_and_run_state(tmp_path, monkeypatch, capsys):
    from cardiolab.__main__ import main
    monkeypatch.setattr("cardiolab.profiles.project_root", lambda: tmp_path)
    finished_run(SMOKE.run("vqgan"), get_task("vqgan").shaping(SMOKE))
    finished_run(SMOKE.run("segmenter"), {"other": True})
    assert main(["models", "--profile", "smoke", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {n: r["kind"] for n, r in rows.items() if n in ("vqgan", "dit", "segmenter", "evaluator")} == {
        "vqgan": "autoencoder", "dit": "generator", "segmenter": "segmenter", "evaluator": "evaluator"}
    assert [rows[n]["status"] for n in ("vqgan", "segmenter", "dit")] == ["finished", "stale", "missing"]
    assert all(r["parameters"] > 0 for r in rows.values())
    assert describe(get_profile("smoke")) == list(rows.values())


def test_sample_refuses_a_run_that_is_not_a_generator(tmp_path, capsys):
    from cardiolab.__main__ import main
    run = tmp_path / "seg"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"task": "segmenter"}))
    assert main(["sample", "--profile", "smoke", "--run", str(run)]) == 2
    assert "not a generator" in capsys.readouterr().err
    assert main(["sample", "--profile", "smoke", "--run", str(tmp_path / "nope")]) == 2


def test_write_cines_one_intensity_convention(tmp_path):
    from cardiolab.io.acdc import read_acdc
    from cardiolab.io.cohort import from_stored, write_cines
    images = torch.linspace(-1, 1, 2 * 3 * 4 * 5 * 6).reshape(2, 3, 4, 5, 6)
    labels = torch.randint(0, 4, images.shape)
    geometry = {"spacing": (2.0, 2.0, 8.0), "frame_ms": 30.0, "es": 9}
    write_cines(tmp_path / "c", images, geometry, labels=labels, info=[{"Group": "NOR"}, {"Group": "DCM"}])
    subjects = list(read_acdc(tmp_path / "c"))
    assert [s.id for s in subjects] == ["synth0001", "synth0002"]
    back = np.stack([from_stored(s.image).transpose(2, 0, 1, 3) for s in subjects])
    np.testing.assert_allclose(back, images.numpy(), atol=1e-5)
    np.testing.assert_array_equal(subjects[1].label_series.transpose(2, 0, 1, 3), labels[1].numpy())
    assert subjects[0].es == 5                                    # clamped to the last frame
    assert subjects[1].info["Group"] == "DCM"
    with pytest.raises(CardiolabError, match="expects images"):
        write_cines(tmp_path / "bad", images[0], geometry)
    assert not (tmp_path / "bad").exists()


def test_ensure_run_resumes_a_finished_run_missing_a_required_file(tmp_path):
    """A run killed between its last checkpoint and writing scores.json is resumed (redoing only the scoring)."""
    seen = []
    finished_run(tmp_path / "run", {"a": 1}, steps=5)
    ensure_run(tmp_path / "run", 5, {"a": 1}, seen.append, require=("scores.json",))
    assert seen == [True]
    (tmp_path / "run" / "scores.json").write_text("{}")
    ensure_run(tmp_path / "run", 5, {"a": 1}, seen.append, require=("scores.json",))
    assert seen == [True]
