"""Diffusion: cosine schedule, v-prediction target (MONAI's definition, by hand), samplers, overfitting;
rectified flow, per-sample loss and the sampling callback."""
import math

import pytest
import torch
from torch import nn

from cardiolab.core import CardiolabError
from cardiolab.diffusion import (DiffusionConfig, RectifiedFlowScheduler, create_scheduler, diffusion_loss,
                                 per_sample_loss, sample, training_target)
from cardiolab.models.dit4d import DiT4D, DiT4DConfig


def test_cosine_schedule_known_values():
    sch = create_scheduler(DiffusionConfig(train_timesteps=300))
    abar = sch.alphas_cumprod
    assert abar.shape == (300,)
    assert torch.all(abar[1:] < abar[:-1])
    # Nichol & Dhariwal: abar(t) = f(t+1) / f(0) with f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2)
    f = lambda t: math.cos((t / 300 + 0.008) / 1.008 * math.pi / 2) ** 2
    for t in (0, 150, 298):
        assert abar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-4)


def test_v_target_matches_hand_computation():
    sch = create_scheduler(DiffusionConfig())
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 2, 2, 4, 4, 2, generator=g), torch.randn(3, 2, 2, 4, 4, 2, generator=g)
    t = torch.tensor([0, 100, 299])
    v = training_target(sch, x0, eps, t)
    for i, ti in enumerate(t.tolist()):
        a = sch.alphas_cumprod[ti].item()
        assert torch.allclose(v[i], math.sqrt(a) * eps[i] - math.sqrt(1 - a) * x0[i], atol=1e-6)
    # and x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, so x0 = sqrt(abar) x_t - sqrt(1 - abar) v
    x_t = sch.add_noise(x0, eps, t)
    a = sch.alphas_cumprod[t].view(-1, 1, 1, 1, 1, 1)
    assert torch.allclose(a.sqrt() * x_t - (1 - a).sqrt() * v, x0, atol=1e-5)


class Oracle(nn.Module):
    """Predicts the exact v for one known x0: DDIM must then land on x0 from any noise."""

    def __init__(self, x0, sch):
        super().__init__()
        self.x0, self.sch = x0, sch

    def forward(self, x_t, t, cond=None):
        a = self.sch.alphas_cumprod[t].view(-1, *[1] * (x_t.ndim - 1))
        eps = (x_t - a.sqrt() * self.x0) / (1 - a).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * self.x0


def test_ddim_with_exact_v_recovers_x0():
    sch = create_scheduler(DiffusionConfig(), sampler="ddim")
    x0 = 2.5 * torch.randn(2, 2, 2, 4, 4, 2, generator=torch.Generator().manual_seed(1))  # beyond [-1, 1]: no clipping
    out = sample(Oracle(x0, sch), sch, tuple(x0.shape), steps=10, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(out, x0, atol=1e-3)


def test_sampling_builds_no_autograd_graph():
    """`sample` runs under no_grad itself (callers such as bench and highres_controlnet do not add it)."""
    sch = create_scheduler(DiffusionConfig(), sampler="ddim")
    seen = []

    class Probe(nn.Module):
        def forward(self, x, t, cond=None):
            seen.append(torch.is_grad_enabled())
            return torch.zeros_like(x)

    sample(Probe(), sch, (1, 2, 2, 4, 4, 2), steps=2, generator=torch.Generator().manual_seed(0))
    assert seen == [False, False]


def small_model(cond=()):
    torch.manual_seed(0)
    m = DiT4D(DiT4DConfig(input_size=(2, 8, 8, 4), in_channels=2, patch=(1, 2, 2, 2), hidden=32, depth=1,
                          heads=2, cond_cardinalities=cond))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_sampling_is_deterministic_for_a_seed(eta):
    m, sch = small_model(), create_scheduler(DiffusionConfig(), sampler="ddim")
    run = lambda seed: sample(m, sch, (2, 2, 2, 8, 8, 4), steps=4, eta=eta, generator=torch.Generator().manual_seed(seed))
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert torch.isfinite(a).all()


def test_guided_sampling_uses_condition():
    m, sch = small_model(cond=(3, 2)), create_scheduler(DiffusionConfig(), sampler="ddim")
    cond = torch.tensor([[0, 1], [2, 0]])
    run = lambda s: sample(m, sch, (2, 2, 2, 8, 8, 4), steps=3, cond=cond, guidance=s,
                           generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(run(1.0), run(4.0))


def test_sampler_errors_are_clear():
    m = small_model()
    with pytest.raises(CardiolabError, match="DDPM"):
        sample(m, create_scheduler(sampler="ddpm"), (1, 2, 2, 8, 8, 4), steps=10)
    with pytest.raises(CardiolabError, match="steps"):
        sample(m, create_scheduler(sampler="ddim"), (1, 2, 2, 8, 8, 4), steps=0)
    with pytest.raises(CardiolabError, match="sampler"):
        create_scheduler(sampler="euler")


def test_tiny_model_overfits_one_latent():
    torch.manual_seed(0)
    m = DiT4D(DiT4DConfig(input_size=(2, 8, 8, 4), in_channels=2, patch=(1, 2, 2, 2), hidden=64, depth=2, heads=4))
    sch = create_scheduler(DiffusionConfig())
    x0 = torch.randn(1, 2, 2, 8, 8, 4).expand(16, -1, -1, -1, -1, -1)

    def held_out_loss():  # the same 256 (t, noise) draws before and after
        with torch.no_grad():
            return diffusion_loss(m, sch, x0[:1].expand(256, -1, -1, -1, -1, -1),
                                  generator=torch.Generator().manual_seed(123)).item()

    before, steps = held_out_loss(), 300
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    for _ in range(steps):
        loss = diffusion_loss(m, sch, x0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    after = held_out_loss()
    assert before > 0.3                      # zero prediction of a unit-variance v
    assert after < before / 10, (before, after)


@pytest.mark.parametrize("steps", [1, 3, 5, 50, 300])
def test_ddim_timesteps_match_its_step_stride(steps):
    # each DDIM step jumps t -> t - T // n; the next model call must be at exactly that t
    sch = create_scheduler(DiffusionConfig(), sampler="ddim")
    sch.set_timesteps(steps)
    ts = sch.timesteps.tolist()
    assert len(ts) == steps
    assert ts[-1] == 0
    assert ts[0] <= 299
    assert all(a - b == 300 // steps for a, b in zip(ts, ts[1:]))


# ---- rectified flow, per-sample loss, callback ----------------------------------------------------------

class FlowOracle(nn.Module):
    """The exact velocity towards one known x0: v = x0 - eps = (x0 - x_t) / s on the straight path."""

    def __init__(self, x0, T):
        super().__init__()
        self.x0, self.T = x0, T

    def forward(self, x_t, t, cond=None):
        s = (t.float() / self.T).view(-1, *[1] * (x_t.ndim - 1))
        return (self.x0 - x_t) / s


class ConstantVelocity(nn.Module):
    """Returns x0 - eps for the eps that sample() draws first from the same seed: a constant velocity field."""

    def __init__(self, x0, seed):
        super().__init__()
        self.v = x0 - torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))

    def forward(self, x_t, t, cond=None):
        return self.v


@pytest.mark.parametrize("shape", [(2, 3, 8, 8, 4), (2, 2, 3, 8, 8, 4)], ids=["5d", "6d"])
@pytest.mark.parametrize("steps", [1, 7])
def test_rflow_integrates_a_linear_flow_exactly(shape, steps):
    sch = create_scheduler(DiffusionConfig(train_timesteps=300), sampler="rflow")
    x0 = 2.5 * torch.randn(shape, generator=torch.Generator().manual_seed(1))
    for model in (ConstantVelocity(x0, seed=5), FlowOracle(x0, 300)):
        out = sample(model, sch, shape, steps=steps, generator=torch.Generator().manual_seed(5))
        assert out.shape == shape
        assert torch.allclose(out, x0, atol=1e-4)


def test_rflow_add_noise_and_target_follow_monai_convention():
    sch = create_scheduler(DiffusionConfig(train_timesteps=100), sampler="rflow")
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 2, 2, 4, 4, 2, generator=g), torch.randn(3, 2, 2, 4, 4, 2, generator=g)
    t = torch.tensor([0, 40, 100])
    x_t = sch.add_noise(x0, eps, t)
    assert torch.equal(x_t[0], x0[0])                  # t = 0: data
    assert torch.equal(x_t[2], eps[2])                 # t = T: pure noise
    assert torch.allclose(x_t[1], 0.6 * x0[1] + 0.4 * eps[1])
    assert torch.equal(training_target(sch, x0, eps, t), x0 - eps)
    monai = pytest.importorskip("monai.networks.schedulers")
    if not hasattr(monai, "RFlowScheduler"):
        pytest.skip("MONAI < 1.5 has no RFlowScheduler")
    ref = monai.RFlowScheduler(num_train_timesteps=100)
    five = (x0[:, 0], eps[:, 0])                      # MONAI's add_noise accepts 5D at most
    assert torch.allclose(sch.add_noise(*five, t), ref.add_noise(*five, t), atol=1e-6)


def test_rflow_grid_and_training_draws():
    sch = RectifiedFlowScheduler(300)
    sch.set_timesteps(7)
    ts = sch.timesteps.tolist()
    assert ts[0] == 300
    assert len(set(ts)) == 7
    assert min(ts) > 0
    t = sch.draw_timesteps(4000, torch.Generator().manual_seed(0))
    assert int(t.min()) == 1
    assert int(t.max()) == 300
    with pytest.raises(CardiolabError, match="steps"):
        sch.set_timesteps(301)
    with pytest.raises(CardiolabError, match="grid"):
        sch.step(torch.zeros(1), 5, torch.zeros(1))


@pytest.mark.parametrize("sampler", ["ddpm", "rflow"])
def test_per_sample_loss_matches_the_batch_loss(sampler):
    m, sch = small_model(), create_scheduler(DiffusionConfig(), sampler=sampler)
    m.eval()
    x0 = torch.randn(3, 2, 2, 8, 8, 4, generator=torch.Generator().manual_seed(2))
    x0[1] *= 4                                          # one outlier: its loss must stand out
    g = torch.Generator().manual_seed(9)
    t = sch.draw_timesteps(3, g) if sampler == "rflow" else torch.randint(0, 300, (3,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    per = per_sample_loss(m, sch, x0, t, noise)
    assert per.shape == (3,)
    batch = diffusion_loss(m, sch, x0, generator=torch.Generator().manual_seed(9))
    assert per.mean().item() == pytest.approx(batch.item(), rel=1e-5)
    assert int(per.argmax()) == 1


@pytest.mark.parametrize("sampler", ["ddim", "rflow"])
def test_callback_gets_the_x0_trajectory(sampler):
    sch = create_scheduler(DiffusionConfig(), sampler=sampler)
    x0 = torch.randn(1, 2, 2, 4, 4, 2, generator=torch.Generator().manual_seed(1))
    model = Oracle(x0, sch) if sampler == "ddim" else FlowOracle(x0, 300)
    seen = []
    sample(model, sch, tuple(x0.shape), steps=7, generator=torch.Generator().manual_seed(0),
           callback=lambda i, x: seen.append((i, x.clone())), callback_every=3)
    assert [i for i, _ in seen] == [2, 5, 6]
    assert seen[-1][1].shape == x0.shape
    assert torch.allclose(seen[0][1], x0, atol=1e-3)   # an exact model predicts x0 at every step
    with pytest.raises(CardiolabError, match="callback_every"):
        sample(model, sch, tuple(x0.shape), steps=2, callback=print, callback_every=0)


def test_one_ddim_step_as_notebook_03_writes_it():
    """x0_hat = sqrt(abar_t) x_t - sqrt(1 - abar_t) v, eps_hat = sqrt(abar_t) v + sqrt(1 - abar_t) x_t, then
    x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev) eps_hat (eta = 0): what the scheduler's step does."""
    sch = create_scheduler(DiffusionConfig(), sampler="ddim")
    sch.set_timesteps(5)
    g = torch.Generator().manual_seed(2)
    x_t, v = torch.randn(2, 2, 2, 4, 4, 2, generator=g), torch.randn(2, 2, 2, 4, 4, 2, generator=g)
    for t, prev in zip(sch.timesteps.tolist(), sch.timesteps.tolist()[1:] + [None]):
        a = sch.alphas_cumprod[t]
        a_prev = sch.alphas_cumprod[prev] if prev is not None else torch.tensor(1.0)   # last step lands on x0_hat
        x0_hat = a.sqrt() * x_t - (1 - a).sqrt() * v
        eps_hat = a.sqrt() * v + (1 - a).sqrt() * x_t
        x_prev, x0_pred = sch.step(v, t, x_t)
        assert torch.allclose(x0_pred, x0_hat, atol=1e-6)
        assert torch.allclose(x_prev, a_prev.sqrt() * x0_hat + (1 - a_prev).sqrt() * eps_hat, atol=1e-6)
