"""The evaluator on small references it never saw: validation on 10-cine phantom cohorts of two seeds that no
training used, and the small-sample numbers beside FD (KID interval, FD floor, precision / recall / density /
coverage)."""
from __future__ import annotations

import pytest
import torch

from cardiolab.core import CardiolabError
from cardiolab.data.cines import load_cines
from cardiolab.data.phantom import generate_cohort
from cardiolab.evaluation.evaluate import evaluator_check
from cardiolab.metrics import features as ft
from cardiolab.models.evaluator import CineEncoder, EvaluatorConfig, image_statistics
from cardiolab.profiles import get_profile, override
from cardiolab.tasks import evaluator

FRAMES = 16   # smoke's 8 frames make temporal-shuffle levels 1 and 2 the same two moved frames
UNSEEN = dict(size=48, spacing=4.0, slices=6, frames=FRAMES)   # the shared phantom's geometry, 16 frames


@pytest.fixture(scope="module")
def profile16():
    return override(get_profile("smoke"), [f"data.frames={FRAMES}"])


@pytest.fixture(scope="module")
def trained(phantom_root, profile16, tmp_path_factory):
    """A smoke evaluator trained 60 steps on the shared phantom (seed 0) at 16 frames."""
    from cardiolab.data.prepare import prepare
    base = tmp_path_factory.mktemp("ev16")
    cache = prepare(phantom_root, "acdc", profile16, base / "cache").parent
    return evaluator.load(evaluator.train(profile16, base / "evaluator", cache_dir=cache, steps=60))


@pytest.mark.parametrize("seed", [101, 202])
def test_validation_on_ten_cines_of_an_unseen_phantom_seed(trained, profile16, seed, tmp_path):
    """Noise and blur: FD and KID rise with every level (the image statistics see them without training);
    frame and slice shuffling: above the clean halves at the strongest level. Every level of the shuffles needs
    the order task trained longer than a unit test can (the tiny evaluator: benchmarks/evaluator_validity.py)."""
    root = tmp_path / f"seed{seed}"
    generate_cohort(root, 10, seed=seed, **UNSEEN)
    check = evaluator_check(trained, load_cines(root, profile16), profile=get_profile("smoke"))
    for kind in ("noise", "blur"):
        assert check["monotonic"][kind], check["fd"][kind]
        assert check["monotonic_kid"][kind], check["kid"][kind]
    for kind in ("temporal shuffle", "slice shuffle"):
        assert check["fd"][kind][-1] > check["fd"][kind][0], check["fd"][kind]
        assert check["kid"][kind][-1] > check["kid"][kind][0], check["kid"][kind]


def test_failed_check_advises_the_command_that_fits_an_evaluator_to_the_reference(smoke_cache, monkeypatch):
    monkeypatch.setattr(ft, "features", lambda model, cines, **kw: torch.randn(len(ft.as_cines(cines)), 3).double())
    check = evaluator_check(None, load_cines(smoke_cache, get_profile("smoke")), profile=get_profile("smoke"))
    assert check["passed"] is False
    assert f"train evaluator --profile smoke --cache {smoke_cache}" in check["advice"]
    assert "--evaluator " in check["advice"]
    assert "runs/smoke/evaluator-smoke" in check["advice"]


def test_image_statistics_move_with_each_degradation():
    torch.manual_seed(0)
    x = torch.rand(2, 4, 24, 24, 8).mul(0.2).add(torch.linspace(-1, 1, 24)[:, None, None])  # (N, D, H, W, T)
    x = x + torch.linspace(0, 0.5, 4)[:, None, None, None]                                  # slices differ
    stats = lambda c: image_statistics(ft.slabs(c, 2)).mean(0)  # noqa: E731  (Laplacian, frames, slices)
    clean = stats(x)
    assert stats(ft.degrade(x, "noise", 2))[0] > clean[0]
    assert stats(ft.degrade(x, "blur", 2))[0] < clean[0]
    smooth = x.cumsum(-1) / 8                                   # frames that change slowly: order shows
    assert stats(ft.degrade(smooth, "temporal shuffle", 4))[1] > stats(smooth)[1]
    assert stats(ft.degrade(x, "slice shuffle", 4))[2] > clean[2]


def test_embed_appends_centred_statistics_only_when_configured():
    x = ft.slabs(torch.rand(2, 3, 16, 16, 4) * 2 - 1, 2)
    plain = CineEncoder(EvaluatorConfig(feature_dim=8)).eval()
    with_stats = CineEncoder(EvaluatorConfig(feature_dim=8, statistics=True)).eval()
    with_stats.statistics_centre.fill_(1.0)
    assert plain.embed(x).shape == (4, 8)
    f = with_stats.embed(x)
    assert f.shape == (4, 11)
    assert torch.allclose(f[:, 8:], image_statistics(x) - 1.0)


def test_corrupt_is_degrade_at_any_strength_and_zero_changes_nothing():
    x = torch.rand(6, 4, 16, 16, 8)
    for kind, strengths in ft.DEGRADATIONS.items():
        assert torch.equal(ft.corrupt(x, kind, 0.0), x)
        want = ft.corrupt(x, kind, strengths[2], torch.Generator().manual_seed(3))
        assert torch.equal(ft.degrade(x, kind, 3, seed=3), want)
    levels = [ft.degrade(x, "temporal shuffle", k) for k in (1, 2)]     # 8 frames: 12.5 % and 25 % would
    assert not torch.equal(*levels)                                    # both move 2; level k moves >= k + 1


def test_degrade_views_targets_say_what_was_done():
    torch.manual_seed(0)
    x = torch.rand(64, 2, 16, 16, 8) * 2 - 1
    views, target = evaluator.degrade_views(x)
    assert target.shape == (64, 4)
    assert ((target >= 0) & (target <= 1)).all()
    assert ((target > 0).sum(1) <= 1).all()                        # one degradation per slab at most
    clean = (target == 0).all(1)
    assert torch.equal(views[clean], x[clean])
    assert 0 < clean.sum() < 64
    noisy = target[:, 0] > 0.2
    residual = (views[noisy] - x[noisy]).flatten(1).std(1)
    assert torch.allclose(residual, 0.4 * target[noisy, 0], rtol=0.1)


def test_prdc_is_one_for_the_same_set_and_zero_for_a_far_one():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, 4, generator=g), torch.randn(40, 4, generator=g)
    same = ft.prdc(a, a.clone())
    assert (same["precision"], same["recall"], same["coverage"]) == (1.0, 1.0, 1.0)
    assert same["density"] == pytest.approx(1.0, abs=0.2)
    near, far = ft.prdc(a, b), ft.prdc(a, b + 20)
    assert near["precision"] > 0.5
    assert near["coverage"] > 0.5
    assert (far["precision"], far["recall"], far["density"], far["coverage"]) == (0.0, 0.0, 0.0, 0.0)
    assert ft.prdc(a[:3], b[:3])["prdc_k"] == 2                    # k shrinks to fit a few cines


def test_distances_report_the_kid_interval_and_fd_floor_its_bias():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 4, generator=g), torch.randn(50, 4, generator=g)
    d = ft.distances(a, b)
    lo, hi = d["KID-cardiolab_ci95"]
    assert lo < d["KID-cardiolab"] < hi
    assert hi - lo == pytest.approx(2 * 1.96 * d["KID-cardiolab_std"])
    floor = ft.fd_floor(torch.randn(10 * 3, 4, generator=g), n_cines=10)
    assert floor["n_cines_per_half"] == 5
    assert len(floor["values"]) == 3
    assert floor["mean"] > 0.1                  # same distribution, 15 v 15 vectors in 4 dims: biased above 0
    with pytest.raises(CardiolabError):
        ft.fd_floor(torch.randn(6, 4), n_cines=3)
