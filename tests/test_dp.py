"""DP-SGD through the engine: clipping, noise scale, per-sample gradients of DiT4D, chunking, resume, EMA, refusals."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from cardiolab.core import CardiolabError
from cardiolab.engine import TrainConfig, Trainer, load_checkpoint
from cardiolab.dp.accounting import epsilon
from cardiolab.dp.mechanism import check_delta, make_private, resolve_delta, select_parameters

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # inputs need no grad: Opacus's hooks still fire

C = 1.0


def _data(n: int = 24) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    return TensorDataset(x, x @ torch.randn(5, 1, generator=g) * 5)   # large residuals: every sample is clipped


def _net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))


def _setup(sigma: float = 1.0, batch: int = 8, n: int = 24, accountant: str = "rdp"):
    net = _net()
    return make_private(net, torch.optim.SGD(net.parameters(), lr=0.05), _data(n), batch=batch,
                        noise_multiplier=sigma, max_grad_norm=C, accountant=accountant)


def _step_fn(b, step, tr):
    xb, yb = b
    loss = ((tr.modules["model"](xb) - yb) ** 2).mean()
    tr.backward(loss, "model")
    return {"loss": loss.item()}


def _trainer(run_dir, dp, steps=6, physical_batch=None, ema=(), replayable=True, **kw):
    """replayable: seeded masks and noise, so runs can be compared bit for bit (release mode: replayable=False)."""
    cfg = TrainConfig(steps=steps, batch_size=8, lr=0.05, warmup=1, ckpt_every=3, log_every=1,
                      physical_batch=physical_batch, ema_decay=0.9 if ema else None, dp_replayable=replayable, **kw)
    return Trainer(run_dir, cfg, {"model": dp.module}, {"model": dp.optimizer}, ema=ema, accountant=dp.accountant)


def test_clipped_per_sample_norms_are_at_most_c():
    dp = _setup(sigma=1.0)
    x, y = dp.loader.dataset.tensors
    for i in range(6):                           # one sample per pass: summed_grad is that sample's clipped grad
        dp.optimizer.zero_grad(set_to_none=True)
        ((dp.module(x[i:i + 1]) - y[i:i + 1]) ** 2).mean().backward()
        raw = torch.cat([p.grad_sample.flatten() for p in dp.optimizer.params]).norm()
        dp.optimizer.clip_and_accumulate()
        clipped = torch.cat([p.summed_grad.flatten() for p in dp.optimizer.params]).norm()
        assert raw > C                          # the test data forces clipping
        assert clipped <= C * (1 + 1e-5)
        assert clipped == pytest.approx(C, rel=1e-4)


def test_noise_std_is_sigma_times_c():
    net = nn.Linear(100, 100)
    dp = make_private(net, torch.optim.SGD(net.parameters(), lr=1.0), TensorDataset(torch.zeros(10, 100)), batch=10,
                      noise_multiplier=0.7, max_grad_norm=2.0, accountant="rdp")
    dp.optimizer.generator = torch.Generator().manual_seed(0)
    dp.optimizer.zero_grad(set_to_none=True)
    (0 * dp.module(torch.zeros(4, 100))).sum().backward()    # zero per-sample gradients: the update is pure noise
    dp.optimizer.pre_step()
    noise = torch.cat([p.grad.flatten() for p in dp.optimizer.params]) * dp.optimizer.expected_batch_size
    assert noise.std().item() == pytest.approx(0.7 * 2.0, rel=0.03)   # 10100 draws: ~0.7 % standard error
    assert noise.mean().item() == pytest.approx(0.0, abs=0.05)


def test_dit4d_per_sample_gradients_equal_a_single_sample_loop():
    from cardiolab.models.dit4d import DiT4D, DiT4DConfig

    cfg = DiT4DConfig(input_size=(2, 8, 8, 4), in_channels=2, patch=(1, 4, 4, 2), hidden=16, depth=1, heads=2,
                      cond_cardinalities=(3, 2), cond_dropout=0.0)
    torch.manual_seed(0)
    model = DiT4D(cfg)
    with torch.no_grad():                      # adaLN-Zero starts at 0: give every weight a gradient
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, t = torch.randn(3, 2, 2, 8, 8, 4), torch.tensor([3, 50, 999])
    cond = torch.tensor([[0, 1], [2, 0], [1, 1]])
    dp = make_private(model, torch.optim.SGD(model.parameters(), lr=0.1), TensorDataset(x), batch=3,
                      noise_multiplier=1.0, max_grad_norm=1.0, accountant="rdp")
    dp.optimizer.zero_grad(set_to_none=True)
    (dp.module(x, t, cond) ** 2).flatten(1).mean(1).mean().backward()
    per_sample = {n: p.grad_sample.clone() for n, p in dp.module._module.named_parameters()}
    for i in range(3):
        model.zero_grad(set_to_none=True)
        dp.module.disable_hooks()
        (model(x[i:i + 1], t[i:i + 1], cond[i:i + 1]) ** 2).mean().backward()
        dp.module.enable_hooks()
        for name, p in model.named_parameters():
            torch.testing.assert_close(per_sample[name][i], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_chunked_update_equals_unchunked(tmp_path):
    weights = []
    for name, chunk in (("whole", None), ("chunked", 3)):
        dp = _setup(sigma=1.0)
        _trainer(tmp_path / name, dp, steps=4, physical_batch=chunk).fit(dp.loader, _step_fn)
        weights.append(load_checkpoint(tmp_path / name)["modules"]["model"])
    for k in weights[0]:
        torch.testing.assert_close(weights[1][k], weights[0][k], rtol=1e-5, atol=1e-6)


class _Stop(Exception):
    pass


def test_release_mode_runs_of_one_seed_differ_and_resume(tmp_path):
    weights = []
    for name in ("a", "b"):
        dp = _setup()
        _trainer(tmp_path / name, dp, replayable=False).fit(dp.loader, _step_fn)
        weights.append(load_checkpoint(tmp_path / name)["modules"]["model"]["0.weight"])
    assert not torch.equal(weights[0], weights[1])       # same seed, secret noise and masks
    history = dp.accountant.history

    dp = _setup()
    def dies_at_4(b, step, tr):
        if step == 4:
            raise _Stop()
        return _step_fn(b, step, tr)
    with pytest.raises(_Stop):
        _trainer(tmp_path / "cut", dp, replayable=False).fit(dp.loader, dies_at_4)
    dp = _setup()
    resumed = _trainer(tmp_path / "cut", dp, replayable=False).fit(dp.loader, _step_fn, resume=True)
    assert resumed.step == 6
    assert dp.accountant.history == history              # the accountant resumed: epsilon of all 6 steps


def test_release_mode_draws_the_losses_own_randomness_secretly_too(tmp_path):
    draws = {}
    for name, replayable in (("rel-a", False), ("rel-b", False), ("rep-a", True), ("rep-b", True)):
        dp, seen = _setup(), {}

        def step_fn(b, step, tr, seen=seen):         # a diffusion loss draws t and noise like this
            seen[step] = torch.rand(1).item()
            return _step_fn(b, step, tr)
        _trainer(tmp_path / name, dp, replayable=replayable).fit(dp.loader, step_fn)
        draws[name] = seen

    def same(a, b):
        common = sorted(set(draws[a]) & set(draws[b]))
        assert common
        return [draws[a][k] for k in common] == [draws[b][k] for k in common]
    assert same("rep-a", "rep-b")
    assert not same("rel-a", "rel-b")


def test_secret_poisson_masks_have_rate_q_and_never_repeat():
    from cardiolab.engine import poisson_indices

    a, b = poisson_indices(100_000, 0.1, None, 0), poisson_indices(100_000, 0.1, None, 0)
    assert a != b
    assert len(a) / 100_000 == pytest.approx(0.1, abs=0.005)   # binomial sd 0.001
    assert poisson_indices(50, 0.2, 3, 7) == poisson_indices(50, 0.2, 3, 7)   # replayable: (seed, step)


def test_dp_metrics_hold_no_statistic_of_a_private_batch(tmp_path):
    from cardiolab.engine import read_metrics

    dp = _setup()
    _trainer(tmp_path / "run", dp, replayable=False).fit(dp.loader, _step_fn)
    records = read_metrics(tmp_path / "run")
    assert records
    for r in records:
        assert set(r) <= {"step", "lr", "s_per_step", "precision", "machine"}, r


def test_dp_per_sample_gradients_and_clipping_are_fp32_even_where_bf16_is_native(tmp_path, monkeypatch):
    from cardiolab.models.dit4d import DiT4D, DiT4DConfig

    monkeypatch.setattr("cardiolab.core.cpu_bf16_native", lambda: True)   # a CPU where amp=auto would pick bf16
    cfg = DiT4DConfig(input_size=(2, 8, 8, 4), in_channels=2, patch=(1, 4, 4, 2), hidden=16, depth=1, heads=2,
                      cond_cardinalities=(3,), cond_dropout=0.0)
    torch.manual_seed(0)
    model = DiT4D(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(12, 2, 2, 8, 8, 4, generator=g), torch.randint(0, 3, (12, 1), generator=g))
    clip = 1e-3                                          # far below every per-sample norm: all are clipped
    dp = make_private(model, torch.optim.SGD(model.parameters(), lr=0.1), data, batch=6, noise_multiplier=1.0,
                      max_grad_norm=clip, accountant="rdp")
    seen, real = [], dp.optimizer.clip_and_accumulate

    def spy():                                           # each sample's clipped gradient, in the dtype Opacus clips in
        gs = [p.grad_sample for p in dp.optimizer.params]
        norms = torch.stack([gr.flatten(1).norm(dim=1) for gr in gs], dim=1).norm(dim=1)
        factor = (clip / (norms + 1e-6)).clamp(max=1.0)
        clipped = torch.stack([(gr * factor.view(-1, *[1] * (gr.dim() - 1)).to(gr.dtype)).flatten(1).norm(dim=1)
                               for gr in gs], dim=1).norm(dim=1)
        seen.append(({gr.dtype for gr in gs}, clipped))
        real()

    dp.optimizer.clip_and_accumulate = spy

    def step_fn(b, step, tr):
        x, c = b
        with tr.autocast():
            loss = (tr.modules["model"](x, torch.full((len(x),), 500), c) ** 2).flatten(1).mean(1).mean()
        tr.backward(loss, "model")
        return {}

    tr = Trainer(tmp_path / "run", TrainConfig(steps=3, lr=0.1, warmup=1, ckpt_every=3, physical_batch=3),
                 {"model": dp.module}, {"model": dp.optimizer}, accountant=dp.accountant)
    assert tr.precision == "fp32"                        # amp=auto resolves to fp32 for DP-SGD
    plain = nn.Linear(2, 2)
    assert Trainer(tmp_path / "plain", TrainConfig(steps=1), {"m": plain},
                   {"m": torch.optim.SGD(plain.parameters(), lr=0.1)}).precision == "bf16"   # without DP: bf16
    tr.fit(dp.loader, step_fn)
    assert seen
    for dtypes, clipped in seen:
        assert dtypes == {torch.float32}
        assert (clipped <= clip * (1 + 1e-6)).all(), clipped.max().item() / clip
    with pytest.raises(CardiolabError, match="bf16"):
        Trainer(tmp_path / "b", TrainConfig(steps=1, amp="bf16"), {"model": dp.module}, {"model": dp.optimizer})


def test_resume_keeps_weights_and_epsilon(tmp_path):
    dp = _setup()
    full = _trainer(tmp_path / "full", dp).fit(dp.loader, _step_fn)
    eps_full = dp.accountant.get_epsilon(delta=1e-3)

    dp = _setup()
    def dies_at_4(b, step, tr):
        if step == 4:
            raise _Stop()                        # after the step-3 checkpoint, mid-run
        return _step_fn(b, step, tr)
    with pytest.raises(_Stop):
        _trainer(tmp_path / "cut", dp).fit(dp.loader, dies_at_4)
    dp = _setup()                                # a fresh process: new model, optimizer and accountant
    resumed = _trainer(tmp_path / "cut", dp).fit(dp.loader, _step_fn, resume=True)
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "cut")
    for k in a["modules"]["model"]:
        assert torch.equal(a["modules"]["model"][k], b["modules"]["model"][k]), k
    assert resumed.step == full.step
    assert b["accountant"] == a["accountant"]
    assert dp.accountant.get_epsilon(delta=1e-3) == eps_full
    assert eps_full == epsilon(dp.sample_rate, 1.0, 6, 1e-3, "rdp")


def test_empty_poisson_batch_is_a_noise_only_step(tmp_path):
    dp = _setup(batch=1, n=40)                   # q = 1/40: most steps draw no sample
    before = {k: v.clone() for k, v in dp.module._module.state_dict().items()}
    calls = []
    def counting(b, step, tr):
        calls.append(step)
        return _step_fn(b, step, tr)
    tr = _trainer(tmp_path / "run", dp, steps=6).fit(dp.loader, counting)
    assert len(calls) < 6                        # some steps had an empty batch and never reached step_fn
    assert len(dp.accountant.history) == 1
    assert dp.accountant.history[0][2] == 6      # every step, empty or not, is accounted
    assert tr.step == 6
    assert not torch.equal(before["0.weight"], dp.module._module.state_dict()["0.weight"])


def test_ema_is_built_from_the_unwrapped_model(tmp_path):
    dp = _setup()
    tr = _trainer(tmp_path / "run", dp, steps=2, ema=["model"]).fit(dp.loader, _step_fn)
    dp.optimizer.zero_grad(set_to_none=True)
    ema = tr.ema["model"].train().requires_grad_(True)
    x, _ = dp.loader.dataset.tensors
    ema(x[:4]).sum().backward()
    assert all(not hasattr(p, "grad_sample") for p in ema.parameters())
    assert all(not m._forward_hooks for m in ema.modules())
    assert all(getattr(p, "grad_sample", None) is None for p in dp.module.parameters())   # the live model untouched
    assert all(not getattr(m, "activations", None) for m in dp.module.modules())


def test_refuses_ddp_fp16_and_a_plain_dataset(tmp_path, monkeypatch):
    dp = _setup()
    with pytest.raises(CardiolabError, match="fp16"):
        _trainer(tmp_path / "a", dp, amp="fp16")
    with pytest.raises(CardiolabError, match="make_private"):
        _trainer(tmp_path / "b", dp).fit(dp.loader.dataset, _step_fn)
    monkeypatch.setattr("cardiolab.engine.trainer._distributed", lambda: (0, 2))
    with pytest.raises(CardiolabError, match="DDP"):
        _trainer(tmp_path / "c", dp)


def test_refuses_batchnorm_delta_and_unknown_params():
    net = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    with pytest.raises(CardiolabError, match="BatchNorm1d"):
        make_private(net, torch.optim.SGD(net.parameters(), lr=0.1), _data(), batch=8, noise_multiplier=1.0,
                     max_grad_norm=1.0)
    with pytest.raises(CardiolabError, match="dp.delta"):
        check_delta(0.05, 20)
    with pytest.raises(CardiolabError, match="1/\\(10 N\\)"):
        check_delta(0.006, 20)                              # below 1/N, above 1/(10 N) = 0.005
    check_delta(0.005, 20)
    with pytest.raises(CardiolabError, match="dp.params"):
        select_parameters(_net(), "heads")


def test_default_delta_is_min_of_1e5_and_a_tenth_of_1_over_n():
    assert resolve_delta(0.0, 120) == 1e-5
    assert resolve_delta(0.0, 20_000) == pytest.approx(5e-6)
    assert resolve_delta(1e-4, 120) == 1e-4
    with pytest.raises(CardiolabError, match="dp.delta"):
        resolve_delta(1e-3, 120)                            # delta N = 0.12: the old tiny default


def test_dit_dp_fine_tunes_the_public_dit_unless_told_none():
    """Left out, --init is the profile's public DiT run; only the word 'none' trains from scratch."""
    from cardiolab.profiles import get_profile
    from cardiolab.tasks.dp import _defaults

    profile = get_profile("smoke")
    assert _defaults(profile, None, None)[1] == profile.run_dir / "dit"
    assert _defaults(profile, None, "None")[1] is None
    assert _defaults(profile, None, "elsewhere/dit")[1] == Path("elsewhere/dit")


def test_attention_params_freeze_the_rest_of_dit4d():
    from cardiolab.models.dit4d import DiT4D, DiT4DConfig

    model = DiT4D(DiT4DConfig(input_size=(2, 8, 8, 4), in_channels=2, hidden=16, depth=1, heads=2,
                              cond_cardinalities=(3,)))
    names = select_parameters(model, "attention")
    assert {n.rsplit(".", 1)[0] for n in names} == {"y_embedder.tables.0", "blocks.0.attn.qkv", "blocks.0.attn.proj",
                                                    "blocks.0.adaLN_modulation.1", "final_layer.adaLN_modulation.1"}
    assert all(p.requires_grad == (n in names) for n, p in model.named_parameters())


# ---- the dit-dp task: a fake public VQ-GAN run, public and private latents, a 2-step public DiT ----------------
def _latents(path, n, cache_dir, vqgan_run, shape=(2, 4, 8, 8, 4), seed=0):
    from cardiolab.core import atomic_path
    from cardiolab.data import attributes

    ids = [f"patient{i + 1:03d}" for i in range(n)]
    record = {"latents": torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed)),
              "ids": ids, "splits": {sid: "holdout" if i < 2 else "private" for i, sid in enumerate(ids)},
              "cond": torch.zeros(n, len(attributes.cardinalities()), dtype=torch.long), "scale": 1.0,
              "vqgan_run": str(vqgan_run), "cache_dir": str(cache_dir)}
    with atomic_path(path / "latents.pt") as tmp:
        torch.save(record, tmp)
    return path


@pytest.fixture(scope="module")
def dp_world(tmp_path_factory):
    import dataclasses

    from cardiolab.core import write_json
    from cardiolab.profiles import get_profile
    from cardiolab.tasks import dit

    root = tmp_path_factory.mktemp("dpworld")
    vq = root / "vqgan"
    write_json(vq / "config.json", {"cache_dir": str(root / "public-cache"), "train_ids": ["patient001", "patient002"]})
    profile = get_profile("smoke")
    profile = dataclasses.replace(profile, dit=dataclasses.replace(profile.dit, amp="off"),
                                  dp=dataclasses.replace(profile.dp, steps=3, delta=0.0))   # auto: 1e-5
    public = _latents(root / "public", 8, root / "public-cache", vq)
    dit.train(profile, out=root / "dit", steps=2, latents=public)
    private = _latents(root / "private", 14, root / "private-cache", vq, seed=1)
    return root, profile, private


def test_dit_dp_trains_and_writes_a_checkable_privacy_json(dp_world, tmp_path):
    from cardiolab.__main__ import main
    from cardiolab.core import read_json
    from cardiolab.tasks import dp as task

    root, profile, private = dp_world
    out = task.train(profile, out=tmp_path / "run", latents=private, init=root / "dit")
    record = read_json(out / "privacy.json")
    assert record["n_subjects"] == 12                      # the 12 non-holdout private subjects
    assert record["steps"] == 3
    assert record["delta"] == 1e-5                         # min(1e-5, 1/(10 N))
    assert record["release"] is True
    assert record["unit_of_privacy"] == "subject"
    assert record["group_size"] == 1
    assert "group_privacy" not in record
    assert "noise_seed" not in record
    assert read_json(out / "config.json")["precision"] == "fp32"
    assert all(set(r) <= {"step", "lr", "s_per_step", "precision", "machine"}
               for r in (json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()))
    assert main(["privacy", "check", str(out)]) == 0
    assert task.checkpoint_epsilon(out, record["delta"]) == pytest.approx(record["epsilon"]["prv"], rel=1e-9)
    conf = read_json(out / "config.json")
    public_conf = read_json(root / "dit" / "config.json")
    assert conf["scale"] == public_conf["scale"]           # the public init's scale, not the private latents'
    assert conf["train_cond"] == public_conf["train_cond"]
    assert conf["cache_dir"] == public_conf["cache_dir"]


def test_privacy_check_refuses_a_replayable_run_relabelled_a_release(dp_world, tmp_path, capsys):
    from cardiolab.__main__ import main
    from cardiolab.tasks import dp as task

    root, profile, private = dp_world
    run = task.train(profile, out=tmp_path / "run", steps=1, latents=private, init=root / "dit", replayable=True)
    record = json.loads((run / "privacy.json").read_text())
    assert main(["privacy", "check", str(run)]) == 0
    (run / "privacy.json").write_text(json.dumps({**record, "release": True}))
    assert main(["privacy", "check", str(run)]) == 1
    assert "release: True but config.json trained with dp_replayable = True" in capsys.readouterr().out


def test_dit_dp_release_runs_differ_and_replayable_runs_replay(dp_world, tmp_path):
    from cardiolab.__main__ import main
    from cardiolab.core import read_json
    from cardiolab.tasks import dp as task

    root, profile, private = dp_world
    weights = {}
    for name, replayable in (("rel-a", False), ("rel-b", False), ("rep-a", True)):
        task.train(profile, out=tmp_path / name, latents=private, init=root / "dit", seed=5, replayable=replayable)
        weights[name] = load_checkpoint(tmp_path / name)["modules"]["model"]
    assert main(["train", "dit-dp", "--profile", "smoke", "--out", str(tmp_path / "rep-b"), "--latents", str(private),
                 "--init", str(root / "dit"), "--seed", "5", "--replayable", "--set", "dit.amp=off",
                 "--set", "dp.steps=3", "--set", "dp.delta=0"]) == 0
    weights["rep-b"] = load_checkpoint(tmp_path / "rep-b")["modules"]["model"]
    trained = [k for k in weights["rel-a"] if not torch.equal(weights["rel-a"][k], weights["rep-a"][k])]
    assert trained
    assert any(not torch.equal(weights["rel-a"][k], weights["rel-b"][k]) for k in trained)
    for k in weights["rep-a"]:
        assert torch.equal(weights["rep-a"][k], weights["rep-b"][k]), k
    for name, release in (("rel-a", True), ("rel-b", True), ("rep-a", False), ("rep-b", False)):
        record = read_json(tmp_path / name / "privacy.json")
        assert record["release"] is release, name
        assert ("noise_seed" in record) is not release, name
    assert read_json(tmp_path / "rep-b" / "privacy.json")["noise_seed"] == 5


def test_a_subject_with_several_records_gets_group_privacy(dp_world, tmp_path):
    from cardiolab.core import read_json
    from cardiolab.dp.accounting import group_privacy
    from cardiolab.tasks import dp as task

    root, profile, private = dp_world
    record = torch.load(private / "latents.pt", weights_only=True)
    record["ids"][5] = record["ids"][4] + "~dup1"               # a canary duplicate of a training subject
    record["splits"][record["ids"][5]] = "private"
    (tmp_path / "lat").mkdir()
    torch.save(record, tmp_path / "lat" / "latents.pt")
    out = task.train(profile, out=tmp_path / "run", steps=1, latents=tmp_path / "lat", init=root / "dit")
    privacy = read_json(out / "privacy.json")
    assert privacy["group_size"] == 2
    eps = privacy["epsilon"]["prv"]
    assert privacy["group_privacy"] == group_privacy(eps, privacy["delta"], 2)
    assert privacy["group_privacy"]["epsilon"] == pytest.approx(2 * eps)
    assert privacy["group_privacy"]["delta"] == pytest.approx(min(1.0, 2 * math.exp(eps) * privacy["delta"]))


@pytest.fixture(scope="module")
def dp_run(dp_world):
    from cardiolab.tasks import dp as task

    root, profile, private = dp_world
    return task.train(profile, out=root / "checked", latents=private, init=root / "dit")


@pytest.mark.parametrize("field, value", [("steps", 2), ("sample_rate", 0.2), ("noise_multiplier", 9.0),
                                          ("n_subjects", 13), ("delta", 2e-5), ("release", False)])
def test_privacy_check_exits_1_naming_a_field_edited_in_privacy_json(dp_run, tmp_path, capsys, field, value):
    import shutil

    from cardiolab.__main__ import main

    run = shutil.copytree(dp_run, tmp_path / "run")
    assert main(["privacy", "check", str(run)]) == 0
    record = json.loads((run / "privacy.json").read_text())
    record[field] = value            # epsilon stays recorded at or above its recomputation: only the run disagrees
    if field == "release":
        record["noise_seed"] = 0     # a well-formed replayable record that the run does not back
    (run / "privacy.json").write_text(json.dumps(record))
    assert main(["privacy", "check", str(run)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("FAILED")
    assert f"{field}: " in out[-1], out[-1]


@pytest.mark.parametrize("case", ["delta", "shape", "vqgan", "ids"])
def test_dit_dp_refusals_leave_no_run_folder(dp_world, tmp_path, case):
    import dataclasses

    from cardiolab.tasks import dp as task

    root, profile, private = dp_world
    match = {"delta": "dp.delta", "shape": "--init", "vqgan": "private subject", "ids": "unit of privacy"}[case]
    if case == "delta":
        profile = dataclasses.replace(profile, dp=dataclasses.replace(profile.dp, delta=0.01))  # 1/(10 N) = 1/120
    if case == "shape":
        private = _latents(tmp_path / "lat", 14, root / "private-cache", root / "vqgan", shape=(2, 4, 8, 8, 2))
    if case == "vqgan":     # the private latents come from the cache the VQ-GAN trained on
        private = _latents(tmp_path / "lat", 14, root / "public-cache", root / "vqgan")
    if case == "ids":       # one patient's two studies as two records
        record = torch.load(private / "latents.pt", weights_only=True)
        record["ids"][5] = record["ids"][4]
        (tmp_path / "lat").mkdir()
        torch.save(record, tmp_path / "lat" / "latents.pt")
        private = tmp_path / "lat"
    with pytest.raises(CardiolabError, match=match):
        task.train(profile, out=tmp_path / "run", latents=private, init=root / "dit")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("case", ["delta", "shape", "vqgan"])
def test_cli_dit_dp_refusals_exit_2_with_one_line(dp_world, tmp_path, capsys, case):
    from cardiolab.__main__ import main

    root, _, private = dp_world
    sets = ["dit.amp=off", "dp.steps=3", "dp.delta=0.001"]
    if case == "delta":
        sets[-1] = "dp.delta=0.01"                                    # 1/(10 N) = 1/120
    if case == "shape":
        private = _latents(tmp_path / "lat", 14, root / "private-cache", root / "vqgan", shape=(2, 4, 8, 8, 2))
    if case == "vqgan":
        private = _latents(tmp_path / "lat", 14, root / "public-cache", root / "vqgan")
    args = ["train", "dit-dp", "--profile", "smoke", "--out", str(tmp_path / "run"), "--latents", str(private),
            "--init", str(root / "dit")] + [x for s in sets for x in ("--set", s)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert {"delta": "dp.delta", "shape": "--init", "vqgan": "private subject"}[case] in err[0]
    assert not (tmp_path / "run").exists()


def test_dit_dp_trains_on_private_latents_times_the_public_scale(dp_world, tmp_path, monkeypatch):
    from cardiolab.tasks import dit
    from cardiolab.tasks import dp as task

    root, profile, private = dp_world
    seen = []
    real = dit.training_set
    monkeypatch.setattr(dit, "training_set", lambda record, path: seen.append(record["scale"]) or real(record, path))
    torch.save({**torch.load(private / "latents.pt", weights_only=True), "scale": 123.0}, tmp_path / "latents.pt")
    task.train(profile, out=tmp_path / "run", steps=1, latents=tmp_path, init=root / "dit")
    public_scale = json.loads((root / "dit" / "config.json").read_text())["scale"]
    assert seen == [public_scale]                                    # not the private file's 123.0


def test_encode_scale_from_records_the_public_scale(tmp_path, smoke_cache, fake_stage1):
    from cardiolab.__main__ import main
    from cardiolab.core import write_json
    from cardiolab.tasks.vqgan import encode_cohort, load_latents

    own = load_latents(encode_cohort(fake_stage1["vqgan_run"], smoke_cache, tmp_path / "own"))
    write_json(tmp_path / "public-dit" / "config.json", {"scale": 3.5})
    assert main(["encode", "--profile", "smoke", "--run", str(fake_stage1["vqgan_run"]), "--cache", str(smoke_cache),
                 "--out", str(tmp_path / "priv"), "--scale-from", str(tmp_path / "public-dit")]) == 0
    priv = load_latents(tmp_path / "priv")
    assert priv["scale"] == 3.5
    assert own["scale"] != 3.5
    assert load_latents(encode_cohort(fake_stage1["vqgan_run"], smoke_cache, tmp_path / "l",
                                      scale_from=fake_stage1["latents"]))["scale"] == 2.0


def test_encode_scale_from_refuses_a_run_without_scale(tmp_path, smoke_cache, fake_stage1):
    from cardiolab.tasks.vqgan import encode_cohort

    with pytest.raises(CardiolabError, match="scale"):
        encode_cohort(fake_stage1["vqgan_run"], smoke_cache, tmp_path / "x", scale_from=fake_stage1["vqgan_run"])
    assert not (tmp_path / "x").exists()


def test_dit_dp_at_infinite_epsilon_is_the_non_private_reference(dp_world, tmp_path, monkeypatch):
    import dataclasses

    from cardiolab.core import read_json
    from cardiolab.tasks import dit
    from cardiolab.tasks import dp as task

    root, profile, private = dp_world
    profile = dataclasses.replace(profile, dp=dataclasses.replace(profile.dp, epsilon=float("inf")))
    out = task.train(profile, out=tmp_path / "run", steps=2, latents=private, init=root / "dit")
    assert read_json(out / "config.json")["private"] is False
    assert read_json(out / "config.json")["init_run"] == str((root / "dit").resolve())   # the MIA's reference
    assert not (out / "privacy.json").exists()
    monkeypatch.setattr(dit, "sample_cohort", lambda *a, meta=None, **kw: meta)   # the fake VQ-GAN cannot decode
    assert task.sample_cohort(out, 1, 2, 0, tmp_path / "synth")["privacy"] is None


def test_per_sample_grad_norms_equal_a_single_sample_loop_and_clip_to_c():
    from cardiolab.dp.mechanism import per_sample_grad_norms

    net = _net()
    x, y = _data(8).tensors
    loss = lambda m, b: ((m(b[0]) - b[1]) ** 2).mean()                 # noqa: E731
    norms = per_sample_grad_norms(net, loss, [(x[:5], y[:5]), (x[5:], y[5:])], max_grad_norm=C)
    loop = []
    for i in range(8):
        net.zero_grad()
        loss(net, (x[i:i + 1], y[i:i + 1])).backward()
        loop.append(torch.cat([p.grad.flatten() for p in net.parameters()]).norm().item())
    assert norms["before"] == pytest.approx(loop, rel=1e-4)
    assert (norms["after"] <= C * (1 + 1e-6)).all()
    assert not any(m._forward_hooks for m in net.modules())           # the model is left without Opacus hooks


def test_dit_dp_gradient_norms_of_a_run(dp_world):
    from cardiolab.tasks import dp as task

    root, _, private = dp_world
    norms = task.gradient_norms(root / "dit", private, max_grad_norm=0.5, batch=4, n=6)
    assert norms["before"].shape == (6,)
    assert norms["C"] == 0.5
    assert (norms["after"] <= 0.5 * (1 + 1e-6)).all()


@pytest.mark.skipif(not os.environ.get("CARDIOLAB_SLOW_TESTS"), reason="~2-3 min (CARDIOLAB_SLOW_TESTS=1)")
def test_dp_grid_smoke_pipeline(tmp_path, monkeypatch):
    """The issue's 'done when' pipeline from a fresh CARDIOLAB_ROOT: public DiT, private phantom, DP fine-tuning,
    privacy check, sampling with the privacy record in samples.json."""
    from cardiolab.__main__ import main

    monkeypatch.setenv("CARDIOLAB_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    P, D, C = ["--profile", "smoke"], "data/phantom/smoke-private", "data/cache/smoke-private"
    for args in (["train", "dit", *P], ["phantom", *P, "--seed", "1", "--subjects", "20", "--out", D],
                 ["prepare", *P, "--root", D, "--out", C],
                 ["encode", *P, "--cache", C, "--out", "runs/smoke/lat-priv"],
                 ["train", "dit-dp", *P, "--latents", "runs/smoke/lat-priv", "--init", "runs/smoke/dit",
                  "--set", "dp.epsilon=10"],
                 ["privacy", "check", "runs/smoke/dit-dp"], ["sample", *P, "--run", "runs/smoke/dit-dp", "--n", "2"]):
        assert main(args) == 0, " ".join(args)
    record = json.loads((tmp_path / "runs/smoke/samples/dit-dp/samples.json").read_text())["privacy"]
    assert record == json.loads((tmp_path / "runs/smoke/dit-dp/privacy.json").read_text())
    assert record["epsilon"]["prv"] <= 10.0


def test_private_cohort_is_remade_when_its_size_or_seed_changes(tmp_path, monkeypatch):
    from cardiolab.core import write_json
    from cardiolab.data.phantom import cohort_params
    from cardiolab.privacy import experiments
    from cardiolab.profiles import get_profile
    from cardiolab.tasks import dit, vqgan

    monkeypatch.setenv("CARDIOLAB_ROOT", str(tmp_path))
    made = []

    def generate(root, n, seed, **kw):
        made.append((n, seed))
        write_json(root / "cohort.json", cohort_params(n, seed, **kw))

    monkeypatch.setattr("cardiolab.data.phantom.generate_cohort", generate)
    prepared = []
    monkeypatch.setattr("cardiolab.data.prepare.prepare",
                        lambda root, layout, p, cache: prepared.append(1) or write_json(cache / "manifest.json", {}))
    monkeypatch.setattr(dit, "ensure", lambda p: tmp_path / "dit")
    monkeypatch.setattr(vqgan, "ensure", lambda p: tmp_path / "vqgan")
    monkeypatch.setattr(vqgan, "encode_cohort", lambda *a, **kw: None)
    monkeypatch.setattr(vqgan, "load_latents", lambda path: {"scale_from": str((tmp_path / "dit").resolve())})
    smoke = get_profile("smoke")
    experiments.private_cohort(smoke)
    experiments.private_cohort(smoke)                    # same size and seed: kept
    assert made == [(smoke.dp.private_subjects, 1)]
    experiments.private_cohort(smoke, subjects=5)
    assert made[-1] == (5, 1)
    assert len(prepared) == 2      # remade, and its cache with it
    experiments.private_cohort(smoke, subjects=5, seed=2)
    assert made[-1] == (5, 2)


def test_split_canaries_keeps_each_with_probability_one_half():
    from cardiolab.privacy.one_run import split_canaries

    record = {"latents": torch.arange(40.0).reshape(40, 1), "cond": torch.zeros(40, 1, dtype=torch.long),
              "ids": [f"p{i:02d}" for i in range(40)], "splits": {f"p{i:02d}": "holdout" if i < 4 else "private"
                                                                 for i in range(40)}}
    kept, canaries = split_canaries(record, 30, seed=1)
    assert len(canaries["ids"]) == 30
    assert all(record["splits"][s] != "holdout" for s in canaries["ids"])
    assert 8 <= canaries["included"].sum() <= 22                     # Binomial(30, 1/2): 99.9 % inside
    for sid, inc in zip(canaries["ids"], canaries["included"]):
        assert (sid in kept["ids"]) == inc
    assert len(kept["ids"]) == 40 - (~canaries["included"]).sum()
    assert kept["latents"][:, 0].tolist() == [float(s[1:]) for s in kept["ids"]]   # rows follow their ids
    with pytest.raises(CardiolabError, match="--canaries"):
        split_canaries(record, 37, seed=1)                              # only 36 training subjects


def test_one_run_audit_of_a_dp_fine_tune(dp_world, tmp_path):
    from cardiolab.core import read_json
    from cardiolab.privacy.one_run import ONE_RUN_JSON, audit_one_run

    root, profile, private = dp_world
    r = audit_one_run(profile, private, root / "dit", tmp_path / "audit", m=8, k=2, seed=0)
    assert r == read_json(tmp_path / "audit" / ONE_RUN_JSON)
    assert (r["m"], r["guesses"]) == (8, 4)
    assert 0 <= r["correct"] <= 4
    assert 0.0 <= r["epsilon_lower_bound"] <= r["epsilon"]              # 4 guesses prove little, never more
    privacy = read_json(tmp_path / "audit" / "run" / "privacy.json")
    assert privacy["release"] is True
    assert privacy["n_subjects"] == 12 - sum(not c["included"] for c in r["canaries"])


def test_leakage_figure_draws_intervals_and_survives_missing_tpr():
    import math

    import pandas as pd

    from cardiolab.plots.privacy import plot_leakage_vs_epsilon

    rows = [{"setting": f"s{e}", "epsilon": e, "init": "pre-trained", "attack": "loss", "AUC": 0.5 + 0.01 * i,
             "AUC lo": 0.4, "AUC hi": 0.6, "TPR@1%": float("nan"), "TPR@1% lo": float("nan"),
             "TPR@1% hi": float("nan"), "eps lower bound": 0.0} for i, e in enumerate((1.0, 10.0, math.inf))]
    fig = plot_leakage_vs_epsilon(pd.DataFrame(rows))
    auc, tpr, eps = fig.axes
    assert auc.get_xscale() == "log"
    assert len(auc.lines) >= 2                       # the AUC line and the chance level
    assert eps.get_ylim()[0] == 0


def test_notebook_06_grid_and_audits_come_from_the_profile(monkeypatch):
    """run_grid's default grid is epsilon = inf plus dp.epsilons (and 10 from scratch); leakage_table audits with
    dp.audit_fresh fresh phantoms and dp.audit_references LiRA models on the phantom, audit_mia's own rule (None) on a
    real source, and an explicit count wins."""
    import dataclasses

    import pandas as pd

    from cardiolab.privacy import experiments
    from cardiolab.profiles import get_profile, override

    asked = []
    monkeypatch.setattr(experiments, "audit_mia", lambda run, profile, n_fresh, references: asked.append(
        (n_fresh, references)) or {"attacks": {}, "dp": None, "n_members": 1, "n_nonmembers": 1})
    table = pd.DataFrame([{"run": "r", "setting": "s", "epsilon": 10.0, "init": "pre-trained"}])
    tiny = override(get_profile("tiny"), ["dp.audit_fresh=7", "dp.audit_references=2"])
    experiments.leakage_table(tiny, table)
    experiments.leakage_table(tiny, table, n_fresh=3, references=0)
    experiments.leakage_table(dataclasses.replace(tiny, data_source="cohort"), table)
    assert asked == [(7, 2), (3, 0), (None, None)]
    grid = [s.name for s in experiments.settings_from((math.inf, *get_profile("tiny").dp.epsilons))]
    assert grid == ["dit-dp-epsinf-pre-trained", "dit-dp-eps10-pre-trained", "dit-dp-eps10-scratch"]
