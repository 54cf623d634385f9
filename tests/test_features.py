"""FD-/KID-cardiolab, the evaluator encoder, degradations and the validation ordering."""
import numpy as np
import pytest
import torch

from cardiolab.core import CardiolabError
from cardiolab.metrics import features as ft
from cardiolab.models.evaluator import STATISTICS, CineEncoder, EvaluatorConfig
from cardiolab.tasks import evaluator


def toy_cines(n, size=32, slices=4, frames=8, seed=0, noise=0.02):
    """Smooth periodic toy cines (n, D, H, W, T) in [-1, 1]: a bright LV pool in a dark ring that shrinks
    base -> apex and contracts mid-cycle, inside a grey body; size / position / contrast vary per cine."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    out = np.zeros((n, slices, size, size, frames), np.float32)
    sig = lambda z: 1 / (1 + np.exp(-z * size / 1.5))  # noqa: E731
    for i in range(n):
        cx, cy = g.normal(0, 0.03, 2)
        r0, amp, b = g.uniform(0.14, 0.2), g.uniform(0.25, 0.4), g.uniform(0.6, 0.9)
        rad, body = np.hypot(xx - cx, yy - cy), sig(0.42 - np.hypot(xx, yy))
        for d in range(slices):
            for t in range(frames):
                r = r0 * (1 - 0.15 * d) * (1 - amp * (1 - np.cos(2 * np.pi * t / frames)) / 2)
                pool, ring = sig(r - rad), sig(r + 0.05 - rad)
                out[i, d, :, :, t] = -1 + 0.6 * body - 0.3 * body * ring + (b + 0.3) * pool * body
    out += noise * g.standard_normal(out.shape).astype(np.float32)
    return torch.from_numpy(out).clamp(-1, 1)


def _gauss(n, dim=8, shift=0.0, seed=0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


def test_frechet_distance_zero_symmetric_and_known_shift():
    a, b = _gauss(500, seed=0), _gauss(500, shift=1.0, seed=1)
    assert abs(ft.frechet_distance(a, a)) < 1e-6
    assert ft.frechet_distance(a, b) == pytest.approx(ft.frechet_distance(b, a), rel=1e-6)
    # N(0, I) vs N(1, I) in 8 dims: FD = |mu|^2 = 8 (plus a small finite-sample term)
    assert ft.frechet_distance(a, b) == pytest.approx(8.0, rel=0.1)
    with pytest.raises(CardiolabError):
        ft.frechet_distance(a[:1], b)


def test_kid_unbiased_near_zero_for_one_distribution_and_positive_when_shifted():
    a, b, c = _gauss(400, seed=0), _gauss(400, seed=1), _gauss(400, shift=0.5, seed=2)
    same, same_std = ft.kid(a, b)
    shifted, _ = ft.kid(a, c)
    assert abs(same) < 3 * same_std + 1e-3
    assert shifted > 10 * max(abs(same), same_std)
    # the unbiased estimator by brute force on a small set (different set sizes allowed)
    x, y = a[:5], c[:7]
    k = lambda u, v: (u @ v / x.shape[1] + 1) ** 3  # noqa: E731
    want = (sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
            + sum(k(y[i], y[j]) for i in range(7) for j in range(7) if i != j) / 42
            - 2 * sum(k(x[i], y[j]) for i in range(5) for j in range(7)) / 35)
    assert ft.mmd2_unbiased(x, y) == pytest.approx(float(want), rel=1e-9)


def test_slabs_and_features_shapes_deterministic():
    x = toy_cines(3, slices=4)
    s = ft.slabs(x, 2)
    assert s.shape == (9, 2, 32, 32, 8)
    assert torch.equal(s[4], x[1, 1:3])                        # cine 1, slab starting at slice 1
    torch.manual_seed(0)
    model = CineEncoder(EvaluatorConfig(feature_dim=16)).eval()
    f = ft.features(model, x)
    assert f.shape == (9, 16)
    assert torch.equal(f, ft.features(model, x[:, None]))     # (N, 1, D, H, W, T) accepted too
    assert ft.features(model, x, per_cine=True).shape == (3, 16)


def test_degradations_do_what_they_say():
    x = toy_cines(8)
    assert (ft.degrade(x, "noise", 2) - x).std() == pytest.approx(0.1, rel=0.05)
    blurred = ft.degrade(x, "blur", 4)
    assert blurred.diff(dim=2).abs().mean() < x.diff(dim=2).abs().mean()
    t = ft.degrade(x, "temporal shuffle", 4)                  # every frame of every cine moves
    for i in range(len(x)):
        assert all(not torch.equal(t[i, ..., k], x[i, ..., k]) for k in range(8))
        assert torch.equal(t[i].sort(-1).values, x[i].sort(-1).values)
    s = ft.degrade(x, "slice shuffle", 2)                     # half the cines, no slice left in place
    moved = [not torch.equal(s[i], x[i]) for i in range(len(x))]
    assert sum(moved) == 4
    with pytest.raises(CardiolabError):
        ft.degrade(x, "rotate", 1)


def test_motion_channels_are_roll_equivariant_and_grow_with_frame_shuffling():
    """The frame-difference input channels: a temporal roll (SimCLR's augmentation) only rolls them, while
    every level of temporal shuffling adds frame-to-frame jumps, so frame order survives pooling over T."""
    x = ft.slabs(toy_cines(4), 2)                                          # (12, 2, 32, 32, 8)
    model = CineEncoder(EvaluatorConfig(feature_dim=16))
    inp = model.inputs(x)
    assert inp.shape == (12, 4, 32, 32, 8)
    assert torch.equal(inp[:, :2], x)
    assert torch.allclose(model.inputs(x.roll(3, dims=-1)), inp.roll(3, dims=-1))
    assert CineEncoder(EvaluatorConfig(feature_dim=16, motion=False)).inputs(x) is x
    jump = lambda s: s[:, 2:].pow(2).mean()  # noqa: E731  (mean squared frame difference)
    for k in range(1, 5):
        assert jump(model.inputs(ft.slabs(ft.degrade(toy_cines(4), "temporal shuffle", k), 2))) > 1.2 * jump(inp)


def test_validation_ordering_with_random_init_frozen_evaluator():
    """A random-init frozen evaluator with the image statistics (training is too slow for a unit test) orders all
    four degradations: FD and KID both rise strictly with the level of noise, blur, temporal and slice
    shuffling. (Without the statistics, 3 frames moved read closer than 2 here.)"""
    from cardiolab.models.evaluator import image_statistics
    torch.manual_seed(0)
    model = CineEncoder(EvaluatorConfig(feature_dim=16, statistics=True)).eval()
    x = toy_cines(32, seed=1)
    model.statistics_centre.copy_(image_statistics(ft.slabs(x, 2)).mean(0))
    df = ft.validate_features(model, x, splits=1)
    assert set(df.degradation) == set(ft.DEGRADATIONS)
    assert df.level.max() == 4
    assert len(df) == 4 * 5
    assert ft.is_monotonic(df, "FD-cardiolab") == dict.fromkeys(ft.DEGRADATIONS, True)
    assert ft.is_monotonic(df, "KID-cardiolab") == dict.fromkeys(ft.DEGRADATIONS, True)
    clean = df[df.level == 0].iloc[0]
    assert abs(clean["KID-cardiolab"]) < df[df.level == 4]["KID-cardiolab"].min()  # two halves: ~0


def test_validation_ordering_with_briefly_trained_evaluator(phantom_root, tmp_path):
    """After 40 SimCLR + order steps FD rises strictly with all four degradations (with motion=False the
    same run's temporal-shuffle FD falls from level 3 to 4: frame order pooled away)."""
    from cardiolab.data.prepare import prepare
    from cardiolab.profiles import get_profile
    profile = get_profile("smoke")
    cache = prepare(phantom_root, "acdc", profile, tmp_path / "cache").parent
    model = evaluator.load(evaluator.train(profile, tmp_path / "evaluator", cache_dir=cache, steps=40))
    df = ft.validate_features(model, toy_cines(32, seed=1), splits=1)
    assert ft.is_monotonic(df, "FD-cardiolab") == dict.fromkeys(ft.DEGRADATIONS, True)
    kid = df.pivot(index="degradation", columns="level", values="KID-cardiolab")
    assert (kid[4] > kid[0]).all()
    assert abs(kid[0].iloc[0]) < kid[4].min()


def test_fid_from_torchscript_user_weights(tmp_path):
    torch.manual_seed(0)  # the random 4-channel net's FD gap depends on its init
    net = torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()))
    path = tmp_path / "fe.pt"
    net.save(str(path))
    x = toy_cines(4, slices=2, frames=4)
    assert abs(ft.fid_from_torchscript(x, x, path)) < 1e-6
    assert ft.fid_from_torchscript(x, ft.degrade(x, "noise", 4), path) > 1e-3
    (tmp_path / "junk.pt").write_text("nope")
    with pytest.raises(CardiolabError, match="TorchScript"):
        ft.fid_from_torchscript(x, x, tmp_path / "junk.pt")


def test_train_evaluator_through_engine_and_reload(phantom_root, tmp_path):
    from cardiolab.data.prepare import prepare
    from cardiolab.profiles import get_profile
    profile = get_profile("smoke")
    cache = prepare(phantom_root, "acdc", profile, tmp_path / "cache").parent
    run = evaluator.train(profile, tmp_path / "evaluator", cache_dir=cache, steps=3)
    assert (run / "checkpoint.pt").exists()
    model = evaluator.load(run)
    assert not any(p.requires_grad for p in model.parameters())
    x = toy_cines(2)
    assert ft.features(model, x).shape == (6, profile.eval.feature_dim + STATISTICS)   # + the image statistics
    run2 = evaluator.train(profile, tmp_path / "again", cache_dir=cache, steps=3)
    assert torch.equal(ft.features(evaluator.load(run2), x), ft.features(model, x))   # seeded: repeatable


def test_ensure_evaluator_retrains_when_the_checkpoint_config_is_stale(tmp_path, monkeypatch):
    """Staleness is read from state.json, written with each checkpoint: a retrain killed before its first
    checkpoint leaves a new config.json beside the old weights, and those must still be retrained."""
    import json

    from cardiolab.profiles import get_profile
    monkeypatch.setattr("cardiolab.profiles.project_root", lambda: tmp_path)
    profile = get_profile("smoke")
    calls = []
    monkeypatch.setattr(evaluator, "train", lambda p, out, resume: calls.append(resume))
    run = profile.run_dir / evaluator.RUN_NAME
    run.mkdir(parents=True)
    new = json.loads(json.dumps(evaluator.shaping(profile)))
    old = {**new, "evaluator": {k: v for k, v in new["evaluator"].items() if k != "motion"}}  # before frame diffs
    state = lambda cfg: json.dumps({"finished": True, "step": 20, "steps": 20, "config": {"shaping": cfg}})  # noqa: E731
    (run / "config.json").write_text(json.dumps({"evaluator": new}))
    torch.save({"config": {"evaluator": old}}, run / "checkpoint.pt")
    (run / "state.json").write_text(state(old))
    assert evaluator.ensure(profile) == run
    assert calls == [False]        # retrained from scratch
    (run / "state.json").write_text(state(new))
    evaluator.ensure(profile)
    assert calls == [False]                                                 # up to date: loaded as is


def test_evaluator_trains_in_fp32_on_every_machine(phantom_root, tmp_path):
    """The instrument behind FD-cardiolab must not depend on bf16 support (bf16 NT-Xent went NaN at step 2)."""
    import json

    from cardiolab.data.prepare import prepare
    from cardiolab.profiles import get_profile
    profile = get_profile("smoke")
    cache = tmp_path / "cache"
    prepare(phantom_root, "acdc", profile, cache)
    run = evaluator.train(profile, tmp_path / "evaluator", cache_dir=cache, steps=3)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["precision"] for r in records} == {"fp32"}
    assert all(np.isfinite(r["loss"]) for r in records)


def test_frechet_distance_with_fewer_vectors_than_features():
    from cardiolab.metrics.features import _frechet_psd, frechet_distance

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 64, generator=g), torch.randn(2, 64, generator=g) + 1
    assert np.isfinite(frechet_distance(a, b))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-3)   # traces ~128: float noise
    big_a, big_b = torch.randn(200, 3, generator=g).double(), torch.randn(200, 3, generator=g).double() + 0.5
    assert _frechet_psd(big_a, big_b) == pytest.approx(frechet_distance(big_a, big_b), rel=1e-6)
