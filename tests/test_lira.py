"""LiRA (offline, OUT reference models on shadow phantoms): the statistic, and `audit mia` finding a planted
overfit member set on smoke."""
from __future__ import annotations

import numpy as np
import pytest

from cardiolab.core import CardiolabError
from cardiolab.metrics import privacy as mia


def _difficult_world(seed: int = 0, n: int = 400, k: int = 4):
    """Subjects whose difficulty (log loss level) varies far more than membership moves it: members' losses are
    0.3 (in log) below their own OUT level, which the raw loss cannot see through the spread of levels."""
    rng = np.random.default_rng(seed)
    level = rng.normal(0.0, 1.0, n)                       # per-subject log loss under OUT models
    members = rng.random(n) < 0.5
    refs = np.exp(level + rng.normal(0.0, 0.1, (k, n)))
    target = np.exp(level + rng.normal(0.0, 0.1, n) - 0.3 * members)
    return target, refs, members


def test_lira_sees_membership_that_the_raw_loss_hides():
    target, refs, members = _difficult_world()
    assert mia.auc(mia.lira_offline(target, refs), members) > 0.9
    assert mia.auc(-target, members) < 0.7


def test_lira_is_chance_without_membership_signal():
    target, refs, members = _difficult_world()
    rng = np.random.default_rng(1)
    assert abs(mia.auc(mia.lira_offline(target, refs), rng.random(len(members)) < 0.5) - 0.5) < 0.1


def test_lira_scores_grow_as_the_loss_falls_below_the_references():
    refs = np.array([[1.0, 1.0], [2.0, 2.0]])
    low, high = mia.lira_offline(np.array([0.5, 3.0]), refs)
    assert low > high


@pytest.mark.parametrize("refs", [np.ones((1, 3)), np.ones((2, 4)), -np.ones((2, 3))])
def test_lira_rejects_bad_reference_losses(refs):
    with pytest.raises(CardiolabError, match="LiRA"):
        mia.lira_offline(np.ones(3), refs)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A smoke DiT overfit on 4 members (1000 steps at LR 3e-3 on 4 subjects; the VQ-GAN of a 20-step smoke run,
    which tells subjects apart), 8 held-out phantoms of the same generator and 8 fresh ones as non-members; the
    audit with 4 references trained the same way on shadow phantoms."""
    from cardiolab.data.phantom import generate_cohort
    from cardiolab.data.prepare import prepare
    from cardiolab.privacy.canaries import write_latents
    from cardiolab.privacy.membership import audit_mia
    from cardiolab.profiles import get_profile, override
    from cardiolab.tasks import dit, vqgan
    from cardiolab.tasks.vqgan import encode_cohort, load_latents

    root = tmp_path_factory.mktemp("lira")
    steps = 1000
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CARDIOLAB_ROOT", str(root))
        profile = override(get_profile("smoke"), [f"mia.reference_steps={steps}", "dit.lr=3e-3", "dit.ema_decay=0.9"])
        d = profile.data
        generate_cohort(root / "world", 12, seed=3, size=d.phantom_size, spacing=d.phantom_spacing,
                        slices=d.phantom_slices, frames=d.phantom_frames)
        prepare(root / "world", "acdc", profile, root / "cache")
        record = load_latents(encode_cohort(vqgan.train(profile), root / "cache", root / "enc"))
        members = record["ids"][:4]
        record["splits"] = {s: "public" if s in members else "holdout" for s in record["ids"]}
        latents = write_latents(record, root / "planted")
        run = dit.train(profile, out=root / "target", steps=steps, latents=latents)
        yield audit_mia(run, profile, out_json=root / "mia.json", n_boot=50)


def test_audit_mia_runs_lira_with_its_references(planted):
    assert len(planted["lira_references"]) == 4


def test_lira_finds_the_planted_overfit_members(planted):
    assert planted["attacks"]["lira"]["auc"] > 0.9


def test_lira_counts_the_planted_members(planted):
    assert (planted["n_members"], planted["n_nonmembers"]) == (4, 8 + 8)
