"""Baseline networks: the slice UNet (MONAI), factorized and channel-merged DiT configs: shapes, parameter
budget against the DiT, loss falls on a fixed batch, seeded sampling."""
import dataclasses

import pytest
import torch

from cardiolab.core import CardiolabError
from cardiolab.diffusion import DiffusionConfig, create_scheduler, diffusion_loss, sample
from cardiolab.models.dit4d import DiT4D, DiT4DConfig, channel_merged_config, factorized_config
from cardiolab.models.unet import SliceUNet, SliceUNetConfig


def small_unet(**kw) -> SliceUNet:
    base = dict(size=(8, 8, 4), in_channels=1, channels=(8, 16), attention=(False, True), head_channels=8,
                norm_groups=4, slices=3)
    base.update(kw)
    torch.manual_seed(0)
    return SliceUNet(SliceUNetConfig(**base))


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Give zero-initialised output layers random weights, so outputs depend on the inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_unet_shapes_odd_sizes_and_slice_label():
    m = small_unet(size=(7, 9, 3))
    perturb(m)
    x, t = torch.randn(2, 1, 7, 9, 3), torch.tensor([0, 299])
    out = m(x, t, {"slice": torch.tensor([0, 2])})
    assert out.shape == x.shape
    assert not torch.allclose(out, m(x, t, {"slice": torch.tensor([1, 2])}))   # the slice label is used
    with pytest.raises(CardiolabError, match="slice"):
        m(x, t, None)
    with pytest.raises(CardiolabError, match="expected"):
        m(torch.randn(2, 1, 8, 8, 4), t, {"slice": torch.tensor([0, 2])})


def test_unet_mask_channels_pooled_to_a_latent():
    m = small_unet(in_channels=4, mask_channels=4, slices=0, size=(4, 4, 2))
    perturb(m)
    x, t = torch.randn(2, 4, 4, 4, 2), torch.tensor([3, 7])
    mask = torch.nn.functional.one_hot(torch.randint(0, 4, (2, 16, 16, 8)), 4).permute(0, 4, 1, 2, 3).float()
    out = m(x, t, {"mask": mask})                          # (B, 4, 16, 16, 8) masks averaged onto the 4x4x2 latent
    assert out.shape == x.shape
    assert not torch.allclose(out, m(x, t, {"mask": mask.flip(0)}))
    with pytest.raises(CardiolabError, match="mask"):
        m(x, t, {})


def test_unet_bf16_matches_fp32_on_a_short_latent():
    """The tiny latent's 4 frames reach 2 at the second level: with frames last, CPU bf16 strided Conv3d
    (oneDNN, torch 2.13) gave inf / garbage there and the ldm and flow runs turned NaN; frames go first now."""
    m = small_unet(size=(16, 16, 4), in_channels=8, channels=(32, 64, 64), attention=(False, False, True),
                   head_channels=32, norm_groups=8, slices=6).eval()
    perturb(m)
    x, t, cond = torch.randn(24, 8, 16, 16, 4), torch.full((24,), 100), {"slice": torch.arange(24) % 6}
    with torch.no_grad():
        ref = m(x, t, cond)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = m(x, t, cond).float()
    assert torch.isfinite(out).all()
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_unet_runs_recorded_before_time_first_keep_their_axis_order():
    from cardiolab.tasks.common import build
    net = dataclasses.asdict(SliceUNetConfig(size=(8, 8, 4), channels=(8, 16), attention=(False, True),
                                             head_channels=8, norm_groups=4))
    assert build({"network": "unet", "net": net}).config.time_first
    del net["time_first"]
    assert not build({"network": "unet", "net": net}).config.time_first


def _dit_for(profile_name: str, latent_shape: tuple[int, ...]) -> DiT4DConfig:
    from cardiolab.profiles import get_profile
    from cardiolab.tasks.dit import model_config

    return model_config(get_profile(profile_name), latent_shape)


@pytest.mark.parametrize("profile_name, latent", [("smoke", (4, 4, 8, 8, 2)), ("tiny", (8, 6, 16, 16, 4))])
def test_factorized_and_channel_merged_match_the_dit_budget(profile_name, latent):
    dit = _dit_for(profile_name, latent)
    fac, cm = factorized_config(dit), channel_merged_config(dit)
    assert (fac.hidden, fac.depth, fac.heads) == (dit.hidden, dit.depth, dit.heads)
    assert (cm.hidden, cm.depth, cm.heads) == (dit.hidden, dit.depth, dit.heads)
    base = n_params(DiT4D(dit))
    for cfg in (fac, cm):
        assert abs(n_params(DiT4D(cfg)) / base - 1) < 0.10, cfg
    C, D, h, w, t = latent
    assert fac.input_size == (1, h, w, t)
    assert fac.cond_cardinalities[-1] == D
    assert cm.input_size == (1, h, w, t)
    assert cm.in_channels == D * C
    # latent voxels per token are the same as the DiT's, so each model sees the same data per step
    assert dit.num_tokens == D * fac.num_tokens


def test_variant_forward_shapes():
    dit = DiT4DConfig(input_size=(3, 8, 8, 4), in_channels=2, patch=(1, 4, 4, 2), hidden=32, depth=1, heads=2,
                      cond_cardinalities=(5,))
    fac, cm = DiT4D(factorized_config(dit)), DiT4D(channel_merged_config(dit))
    x = torch.randn(2, 2, 1, 8, 8, 4)
    assert fac(x, torch.tensor([1, 2]), torch.tensor([[0, 2], [4, 0]])).shape == x.shape
    x = torch.randn(2, 6, 1, 8, 8, 4)
    assert cm(x, torch.tensor([1, 2]), torch.tensor([[0], [4]])).shape == x.shape
    # the variants add no module: same state_dict keys as the DiT, plus one attribute table for the slice index
    keys = set(DiT4D(dit).state_dict())
    assert set(cm.state_dict()) == keys
    assert set(fac.state_dict()) - keys == {"y_embedder.tables.1.weight"}


def _fits(model, x0, cond, steps=40, lr=3e-3, sampler="ddpm"):
    """Held-out loss (fixed draws) before and after `steps` Adam steps on one batch."""
    sch = create_scheduler(DiffusionConfig(train_timesteps=100), sampler=sampler)

    def held_out() -> float:  # the same (t, noise) draws before and after
        model.eval()
        with torch.no_grad():
            value = diffusion_loss(model, sch, x0, cond, generator=torch.Generator().manual_seed(123)).item()
        model.train()
        return value

    before = held_out()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for i in range(steps):
        loss = diffusion_loss(model, sch, x0, cond, generator=torch.Generator().manual_seed(i))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, held_out()


@pytest.mark.parametrize("sampler", ["ddpm", "rflow"])
def test_unet_loss_falls_on_a_fixed_batch(sampler):
    m = small_unet()
    x0 = torch.randn(1, 1, 8, 8, 4, generator=torch.Generator().manual_seed(0)).expand(8, -1, -1, -1, -1)
    before, after = _fits(m, x0, {"slice": torch.full((8,), 1)}, sampler=sampler)
    assert after < 0.7 * before, (before, after)


@pytest.mark.parametrize("variant", [factorized_config, channel_merged_config])
def test_dit_variants_loss_falls_on_a_fixed_batch(variant):
    dit = DiT4DConfig(input_size=(2, 8, 8, 4), in_channels=2, patch=(1, 4, 4, 2), hidden=32, depth=1, heads=2,
                      cond_cardinalities=(3,), cond_dropout=0.0)
    cfg = variant(dit)
    torch.manual_seed(0)
    m = DiT4D(cfg)
    x0 = torch.randn(1, cfg.in_channels, *cfg.input_size, generator=torch.Generator().manual_seed(0))
    x0 = x0.expand(8, *x0.shape[1:])
    cond = torch.zeros(8, len(cfg.cond_cardinalities), dtype=torch.long)
    before, after = _fits(m, x0, cond, steps=60)
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("sampler", ["ddim", "rflow"])
def test_seeded_sampling_gives_identical_arrays(sampler):
    m = small_unet()
    perturb(m)
    sch = create_scheduler(DiffusionConfig(train_timesteps=100), sampler=sampler)
    cond = {"slice": torch.tensor([0, 2])}
    run = lambda seed: sample(m, sch, (2, 1, 8, 8, 4), steps=3, cond=cond, generator=torch.Generator().manual_seed(seed))
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    fac = DiT4D(factorized_config(DiT4DConfig(input_size=(2, 8, 8, 4), in_channels=2, patch=(1, 4, 4, 2),
                                              hidden=32, depth=1, heads=2)))
    perturb(fac)
    run = lambda seed: sample(fac, sch, (2, 2, 1, 8, 8, 4), steps=3, cond=torch.tensor([[0], [1]]),
                              generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(4), run(4))


def test_config_is_frozen_and_round_trips():
    cfg = channel_merged_config(DiT4DConfig(input_size=(6, 16, 16, 4), hidden=192, depth=6, heads=6))
    assert DiT4DConfig(**dataclasses.asdict(cfg)) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.hidden = 3
