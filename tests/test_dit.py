"""CardioDiT model: shapes, (un)patchify inverse for odd sizes, adaLN-Zero identity, guidance, overfitting."""
import numpy as np
import pytest
import torch

from cardiolab.core import CardiolabError
from cardiolab.engine import training_curves
from cardiolab.models.dit4d import (DiT4D, DiT4DConfig, DiTBlock, crop_to, get_4d_sincos_pos_embed, pad_to_patch,
                                    patchify, unpatchify)


def tiny_config(**kw) -> DiT4DConfig:
    base = dict(input_size=(3, 9, 7, 5), in_channels=2, patch=(1, 4, 4, 2), hidden=32, depth=2, heads=2)
    base.update(kw)
    return DiT4DConfig(**base)


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Give the zero-initialised layers random weights, so outputs depend on every input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def test_forward_shape_odd_sizes_and_grid():
    cfg = tiny_config()
    assert cfg.grid() == (3, 3, 2, 3)
    assert cfg.num_tokens == 54
    model = DiT4D(cfg)
    x = torch.randn(2, 2, 3, 9, 7, 5)
    out = model(x, torch.tensor([0, 299]))
    assert out.shape == x.shape
    # zero-initialised final layer: the untrained model predicts exactly 0
    assert torch.count_nonzero(out) == 0


def test_patchify_unpatchify_inverse_for_odd_sizes():
    x = torch.randn(2, 3, 5, 9, 7, 3)
    patch = (2, 4, 4, 2)
    padded = pad_to_patch(x, patch)
    assert padded.shape == (2, 3, 6, 12, 8, 4)
    assert torch.equal(crop_to(padded, x.shape[2:]), x)
    assert padded[:, :, 5:].abs().sum() == 0
    assert padded[..., 3:].abs().sum() == 0
    tokens = patchify(padded, patch)
    assert tokens.shape == (2, 3 * 3 * 2 * 2, 3 * 2 * 4 * 4 * 2)
    back = crop_to(unpatchify(tokens, patch, (3, 3, 2, 2), 3), x.shape[2:])
    assert torch.equal(back, x)


def test_token_order_matches_position_embedding_grid():
    # token n of patchify must be grid cell n in (d, h, w, t) C-order, the order the pos embedding assumes
    x = torch.zeros(1, 1, 2, 4, 4, 4)
    x[0, 0, 1, 2, 0, 3] = 1.0  # cell (d=1, h=1, w=0, t=1) for patch (1, 2, 2, 2), grid (2, 2, 2, 2)
    tokens = patchify(x, (1, 2, 2, 2))
    hot = tokens.abs().sum(-1).nonzero()[:, 1].tolist()
    assert hot == [np.ravel_multi_index((1, 1, 0, 1), (2, 2, 2, 2))]


def test_4d_sincos_quarter_channels_per_axis():
    emb = get_4d_sincos_pos_embed(32, (2, 3, 1, 4))
    assert emb.shape == (24, 32)
    grid = np.stack(np.meshgrid(*[np.arange(g) for g in (2, 3, 1, 4)], indexing="ij"), -1).reshape(-1, 4)
    # first channel of each quarter is sin(position * 1) of that axis
    assert np.allclose(emb[:, [0, 8, 16, 24]], np.sin(grid), atol=1e-6)
    assert len({tuple(r) for r in emb.round(5)}) == 24  # every token has its own code


def test_adaln_zero_block_is_identity_at_init():
    model = DiT4D(tiny_config())
    block = model.blocks[0]
    assert isinstance(block, DiTBlock)
    x, c = torch.randn(2, 54, 32), torch.randn(2, 32)
    assert torch.equal(block(x, c), x)
    perturb(block)
    assert not torch.allclose(block(x, c), x)


def test_conditioning_cfg_and_null_class():
    cfg = tiny_config(cond_cardinalities=(5, 2, 4), cond_dropout=0.5)
    model = DiT4D(cfg)
    perturb(model)
    model.eval()
    x, t = torch.randn(2, 2, 3, 9, 7, 5), torch.tensor([10, 200])
    cond = torch.tensor([[0, 1, 3], [4, 0, 2]])
    y_cond = model(x, t, cond)
    y_null = model(x, t, torch.full_like(cond, -1))
    assert not torch.allclose(y_cond, y_null)
    assert torch.allclose(model(x, t, None), y_null)                       # no attributes = null class
    assert torch.allclose(model(x, t, cond, force_drop=torch.tensor([True, True])), y_null)
    assert torch.allclose(model.forward_with_cfg(x, t, cond, 1.0), y_cond)
    s = 3.0
    guided = model.forward_with_cfg(x, t, cond, s)
    assert torch.allclose(guided, y_null + s * (y_cond - y_null), atol=1e-5)


def test_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    plain = DiT4D(tiny_config())
    perturb(plain)
    ckpt = DiT4D(tiny_config(checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    x, t = torch.randn(2, 2, 3, 9, 7, 5), torch.tensor([3, 7])
    grads = []
    for m in (plain, ckpt):
        m.train()
        m(x, t).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_bad_input_raises_cardiolab_error():
    model = DiT4D(tiny_config())
    with pytest.raises(CardiolabError, match="expected latents"):
        model(torch.randn(1, 2, 3, 8, 8, 4), torch.tensor([0]))
    with pytest.raises(CardiolabError, match="divisible"):
        DiT4D(tiny_config(hidden=40, heads=3))


def test_bf16_autocast_runs_close_to_fp32():
    model = DiT4D(tiny_config())
    perturb(model)
    x, t = torch.randn(1, 2, 3, 9, 7, 5), torch.tensor([5])
    ref = model(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x, t).float()
    assert (low - ref).abs().max() < 0.05 * ref.abs().max()


# ---- training + sampling + export through the engine (tiny fakes of the VQ-GAN run and the cache) -------

def test_train_sample_export_roundtrip(tmp_path, monkeypatch, fake_stage1):
    import dataclasses
    import json

    from cardiolab.io.acdc import read_acdc
    from cardiolab.io.layouts import validate_cohort
    from cardiolab.profiles import get_profile
    from cardiolab.tasks import dit

    monkeypatch.setenv("CARDIOLAB_ROOT", str(fake_stage1["root"]))    # its cache: data/cache/smoke
    latents = fake_stage1["latents"]
    profile = get_profile("smoke")
    run = dit.train(profile, out=tmp_path / "dit", steps=4, latents=latents)
    conf = json.loads((run / "config.json").read_text())
    assert conf["n_train"] == 4
    assert conf["scale"] == 2.0
    assert conf["latent_shape"] == [4, 3, 4, 4, 2]
    curves = training_curves(run)
    assert curves.index[-1] == 4
    assert np.isfinite(curves["loss"]).all()

    out = dit.sample_cohort(run, n=2, steps=3, seed=7, out=tmp_path / "synth", device="cpu")
    subjects = list(read_acdc(out))
    assert [s.id for s in subjects] == ["synth0001", "synth0002"]
    assert validate_cohort(out) == []
    s = subjects[0]
    assert s.image.shape == (16, 16, 3, 8)                        # (X, Y, Z, T) from latents (3, 4, 4, 2) x4
    assert s.spacing == pytest.approx((6.0, 6.0, 11.5))           # in-plane from the cache, slices: train median
    assert s.frame_ms == pytest.approx(40.0)
    assert (s.ed, s.es) == (0, 3)   # median ES of the training subjects
    assert s.image.min() >= 0.0
    assert s.image.max() <= 2000.0
    assert s.image.std() > 0
    assert not (out / "gifs").exists()                             # figures are written by plots, not tasks
    meta = json.loads((out / "samples.json").read_text())
    assert meta["generator"] == "cardiodit"
    assert meta["seed"] == 7
    assert meta["steps"] == 3
    from cardiolab.diffusion import sampling_precision
    assert meta["precision"] == sampling_precision(profile.dit.amp, "cpu", run)   # native, and sound for this run
    # no training-patient identifier anywhere in the synthetic cohort
    for f in out.rglob("*"):
        if f.suffix in (".cfg", ".json"):
            assert "patient" not in f.read_text().lower(), f

    again = dit.sample_cohort(run, n=2, steps=3, seed=7, out=tmp_path / "synth2", device="cpu")
    assert all(np.array_equal(a.image, b.image) for a, b in zip(read_acdc(out), read_acdc(again)))
    other = dit.sample_cohort(run, n=1, steps=3, seed=8, out=tmp_path / "synth3", device="cpu")
    assert not np.array_equal(next(read_acdc(other)).image, s.image)
    # a dataclass profile round trip: the run's model config rebuilds the same network
    model, conf = dit.load(run)
    assert dataclasses.asdict(model.config)["input_size"] == (3, 4, 4, 2)


def test_bench_times_a_training_step_and_cli_rejects_bad_sizes(capsys):
    from cardiolab.__main__ import main
    from cardiolab.bench.speed import DiTBench, build_dit, time_train_steps

    b = DiTBench(input_size=(2, 8, 8, 4), patch=(1, 4, 4, 2), channels=2, hidden=32, depth=1, heads=2, batch=2,
                 steps=2, warmup=1, device="cpu")
    out = time_train_steps(build_dit(b), b)
    assert out["step_s"] > 0
    assert out["samples_per_s"] == pytest.approx(2 / out["step_s"])
    assert out["params"] == sum(p.numel() for p in build_dit(b).parameters())
    assert len(out["step_s_all"]) == 2
    assert main(["bench", "dit", "--input-size", "4,32"]) == 2
    assert "--input-size" in capsys.readouterr().err


def test_train_flops_formula_matches_torch_flop_counter():
    """MFU's numerator: the written-down FLOP formula agrees with torch's own count of one training step."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from cardiolab.bench.speed import dit_train_flops
    from cardiolab.diffusion import DiffusionConfig, create_scheduler, diffusion_loss
    from cardiolab.models.dit4d import DiT4D, DiT4DConfig

    cfg = DiT4DConfig(input_size=(2, 16, 16, 4), in_channels=4, patch=(1, 4, 4, 2), hidden=64, depth=2, heads=4)
    model, sch = DiT4D(cfg), create_scheduler(DiffusionConfig())
    x0 = torch.randn(3, 4, 2, 16, 16, 4)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:   # math SDPA: bmm's it counts
        diffusion_loss(model, sch, x0).backward()
    assert dit_train_flops(cfg, batch=3) == pytest.approx(counter.get_total_flops(), rel=0.05)


# ---- what the DiT sees: q(x_t | x0) decoded (notebook 03) ---------------------------------------------
def test_noised_cines_start_at_the_clean_decode_and_drift_with_t():
    from cardiolab.diffusion import DiffusionConfig, create_scheduler
    from cardiolab.models.vqgan import VQGAN, VQConfig
    from cardiolab.tasks.dit import noised_cines
    from cardiolab.tasks.vqgan import decode_latents

    torch.manual_seed(0)
    vq = VQGAN(VQConfig(channels=(8, 16), codes=16, code_dim=4)).eval()
    codes = torch.randint(0, 16, (2, 4, 4, 2), generator=torch.Generator().manual_seed(1))   # (D, h, w, t)
    z0 = vq.embed(codes).movedim(0, 1).detach()                                              # (C_z, D, h, w, t)
    scale = float(1 / z0.std())
    sch = create_scheduler(DiffusionConfig(train_timesteps=300))
    ts = [0, 30, 100, 200, 299]
    images = noised_cines(vq, z0, scale, sch, ts, seed=3)
    clean = decode_latents(vq, z0[None], snap=False)[0, 0]                                   # (D, H, W, T)
    assert images.shape == (len(ts), 2, 16, 16, 8)
    distance = [(img - clean).abs().mean().item() for img in images]
    assert distance[0] < 0.05 * distance[-1]           # t = 0: abar 0.9998, the clean decode but for a trace
    assert all(a < b for a, b in zip(distance, distance[1:]))     # the one eps weighs more at every larger t
    assert torch.equal(images, noised_cines(vq, z0, scale, sch, ts, seed=3))   # seeded
    with pytest.raises(CardiolabError, match="timesteps"):
        noised_cines(vq, z0, scale, sch, [300])


def test_schedule_and_noised_cine_figures():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cardiolab.diffusion import DiffusionConfig, create_scheduler
    from cardiolab.plots.training import plot_guidance, plot_noised_cines, plot_schedule

    sch = create_scheduler(DiffusionConfig(train_timesteps=300), sampler="ddim")
    sch.set_timesteps(5)
    fig = plot_schedule(sch.alphas_cumprod, sch.timesteps)
    assert len(fig.axes) == 2
    assert "T = 300" in fig.axes[0].get_title()
    images = torch.rand(3, 2, 8, 8, 4) * 2 - 1
    fig = plot_noised_cines(images, [0, 150, 299], sch.alphas_cumprod)
    assert len(fig.axes) == 3 * 4
    assert fig.axes[0].get_ylabel().startswith("t=0")
    assert fig.axes[4].get_ylabel().startswith("t=150")
    assert plot_guidance(images, (1.0, 2.0, 4.0)).axes[4].get_ylabel() == "s=2"
    plt.close("all")
