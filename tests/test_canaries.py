"""Canaries, subsets, kept checkpoints and `audit sweep` on smoke-sized fixtures."""
from __future__ import annotations

import json

import pytest
import torch

from cardiolab.profiles import get_profile
from cardiolab.__main__ import main
from cardiolab.privacy.canaries import canary_recall, make_canaries, subset


def record(n=8, holdout=2):
    ids = [f"p{i:02d}" for i in range(n)]
    z = torch.randn(n, 2, 1, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    z[3] += 50                                                  # one clear outlier
    return {"latents": z, "cond": torch.zeros(n, 3, dtype=torch.long), "ids": ids, "scale": 1.0,
            "splits": {s: "holdout" if i >= n - holdout else "public" for i, s in enumerate(ids)}}


def test_canaries_duplicate_k_subjects_m_times():
    out, can = make_canaries(record(), k=2, copies=(3,), n_outliers=1)
    assert len(out["ids"]) == 8 + 2 * 2


def test_canary_duplicates_are_training_records():
    out, _ = make_canaries(record(), k=1, copies=(2,), n_outliers=0)
    assert out["splits"][out["ids"][-1]] == "public"


def test_the_most_isolated_subject_is_the_outlier_canary():
    _, can = make_canaries(record(), k=1, copies=(2,), n_outliers=1)
    assert [c["id"] for c in can["canaries"] if c["kind"] == "outlier"] == ["p03"]


def test_canaries_never_touch_the_holdout():
    _, can = make_canaries(record(), k=2, copies=(2, 3), n_outliers=1)
    assert not {c["id"] for c in can["canaries"]} & {"p06", "p07"}


def test_too_many_canaries_are_refused():
    from cardiolab.core import CardiolabError

    with pytest.raises(CardiolabError, match="exceed"):
        make_canaries(record(), k=4, copies=(2, 3), n_outliers=0)


def test_canary_recall_on_a_fixture():
    canaries = {"canaries": [{"id": "a", "kind": "duplicate", "m": 4}, {"id": "b", "kind": "duplicate", "m": 4},
                             {"id": "c", "kind": "outlier", "m": 1}]}
    copies = {"n_train": 10, "per_synthetic": [
        {"id": "s1", "nearest_train_id": "a", "is_copy": True},
        {"id": "s2", "nearest_train_id": "b", "is_copy": False},
        {"id": "s3", "nearest_train_id": "c", "is_copy": True},
        {"id": "s4", "nearest_train_id": "x", "is_copy": True}]}
    r = canary_recall(copies, canaries)
    assert r["by_copies"] == [{"m": 4, "n": 2, "flagged": 1, "recall": 50.0}]
    assert r["outliers"]["recall"] == 100.0
    assert r["control"] == {"n": 7, "flagged": 1, "recall": 100.0 / 7}


def test_subset_keeps_the_holdout_and_a_fraction_of_training():
    out = subset(record(), 0.5)
    assert sum(v != "holdout" for v in out["splits"].values()) == 3
    assert {"p06", "p07"} <= set(out["ids"])


def test_subset_fraction_out_of_range_exits_2(tmp_path):
    torch.save(record(), tmp_path / "latents.pt")
    assert main(["audit", "subset", "--latents", str(tmp_path / "latents.pt"), "--fraction", "1.5",
                 "--out", str(tmp_path / "s")]) == 2
    assert not (tmp_path / "s").exists()


def test_audit_canaries_writes_latents_and_json(tmp_path):
    torch.save(record(), tmp_path / "latents.pt")
    assert main(["audit", "canaries", "--latents", str(tmp_path / "latents.pt"), "--out", str(tmp_path / "c"),
                 "--k", "1", "--copies", "2,3", "--outliers", "1"]) == 0
    assert len(json.loads((tmp_path / "c" / "canaries.json").read_text())["canaries"]) == 3


@pytest.fixture(scope="module")
def swept(fake_stage1, smoke_cache, tmp_path_factory):
    """A 2-step smoke DiT keeping every checkpoint, swept with `audit sweep` (CARDIOLAB_ROOT holds the cache)."""
    from cardiolab.tasks import dit
    from cardiolab.tasks.vqgan import encode_cohort

    root = tmp_path_factory.mktemp("sweep")
    (root / "data" / "cache").mkdir(parents=True)
    (root / "data" / "cache" / "smoke").symlink_to(smoke_cache)
    mp = pytest.MonkeyPatch()
    mp.setenv("CARDIOLAB_ROOT", str(root))
    latents = encode_cohort(fake_stage1["vqgan_run"], smoke_cache, root / "latents")
    run = dit.train(get_profile("smoke"), out=root / "dit", steps=2, latents=latents, keep_every=1)
    out = root / "sweep"
    code = main(["audit", "sweep", str(run), "--profile", "smoke", "--n", "2", "--steps", "2", "--out", str(out)])
    mp.undo()
    assert code == 0
    return run, json.loads((out / "sweep.json").read_text())


def test_keep_every_keeps_a_checkpoint_per_step(swept):
    run, _ = swept
    assert sorted(p.name for p in run.glob("checkpoint-*.pt")) == ["checkpoint-1.pt", "checkpoint-2.pt"]


def test_sweep_audits_every_kept_checkpoint(swept):
    _, r = swept
    assert [row["step"] for row in r["checkpoints"]] == [1, 2]


def test_sweep_rows_have_their_keys(swept):
    _, r = swept
    assert {"step", "copy_fraction", "memorized_fraction"} <= set(r["checkpoints"][0])
