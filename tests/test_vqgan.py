"""The spatiotemporal VQ-GAN: shapes per profile, deterministic losses, checkpoints, dead codes, latent round trip."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from cardiolab.profiles import get_profile
from cardiolab.core import CardiolabError
from cardiolab.engine import load_checkpoint
from cardiolab.models.vqgan import (VQGAN, VQConfig, build_discriminator, decode_sliding, discriminator_layers, latent_shape,
                                   perplexity)
from cardiolab.profiles import PROFILES
from cardiolab.tasks import vqgan as task

SECTION = PROFILES["smoke"].vqgan          # the training section
SMOKE = VQConfig.pick(SECTION)           # the network it builds
SIZE = (32, 32, 8)


def cine_slices(n: int, size=SIZE, seed: int = 0) -> list[dict]:
    """Bright disks whose radius beats over time on a dark background: (1, H, W, T) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    H, W, T = size
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    items = []
    for _ in range(n):
        cy, cx = (torch.rand(2, generator=g) * 0.4 + 0.3) * H
        r0 = 0.15 * H + torch.rand((), generator=g) * 0.1 * H
        r = r0 * (1 - 0.3 * torch.sin(torch.linspace(0, torch.pi, T)))               # (T,)
        d = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()[..., None]                       # (H, W, 1)
        img = torch.sigmoid((r - d) * 1.5) * 1.6 - 0.8                                # (H, W, T)
        items.append({"image": img[None].float()})
    return items


@pytest.mark.parametrize("name", list(PROFILES))
def test_latent_shape_every_profile(name):
    p = PROFILES[name]
    size = (p.data.image_size, p.data.image_size, p.data.frames)
    want = latent_shape(VQConfig.pick(p.vqgan), size)
    assert want == (p.vqgan.code_dim, size[0] // 4, size[1] // 4, size[2] // 4)
    if name == "smoke":
        torch.manual_seed(0)
        model, disc = VQGAN(VQConfig.pick(p.vqgan)), build_discriminator(VQConfig.pick(p.vqgan), size)
        x = torch.rand(2, 1, *size) * 2 - 1
        x_hat, commit, codes, z_e = model(x)
        assert x_hat.shape == x.shape
        assert z_e.shape == (2, *want)
        assert codes.shape == (2, *want[1:])
        assert commit.ndim == 0
        assert commit.item() >= 0
        assert disc(x)[-1].shape[:2] == (2, 1)
    else:  # no compute: shapes on the meta device
        with torch.device("meta"):
            model, disc = VQGAN(VQConfig.pick(p.vqgan)), build_discriminator(VQConfig.pick(p.vqgan), size)
            x = torch.empty(1, 1, *size)
            z = model.encode(x)
            assert tuple(z.shape[1:]) == want
            assert model.decode(z).shape == x.shape
            logits = disc(x)[-1]
        assert min(logits.shape[2:]) >= 2, "PatchGAN must leave several patches per axis"
    # Paper's full shapes: a 256x256x32 slice -> 8x64x64x8, 16384 codes
    assert latent_shape(VQConfig.pick(PROFILES["full"].vqgan), (256, 256, 32)) == (8, 64, 64, 8)
    assert PROFILES["full"].vqgan.codes == 16384


def test_bad_input_raises():
    model = VQGAN(SMOKE)
    with pytest.raises(CardiolabError, match="divisible"):
        model.encode(torch.zeros(1, 1, 30, 32, 8))
    with pytest.raises(CardiolabError, match="channels"):
        VQGAN(dataclasses.replace(SMOKE, channels=(8, 16, 32)))
    assert discriminator_layers((32, 32, 8)) == 1
    assert discriminator_layers((256, 256, 32)) == 3


def test_perplexity_known_answers():
    assert perplexity(torch.tensor([0, 1, 2, 3]), 8).item() == pytest.approx(4.0, rel=1e-5)
    assert perplexity(torch.tensor([5, 5, 5]), 8).item() == pytest.approx(1.0, rel=1e-5)


def test_adversarial_ramp():
    cfg = dataclasses.replace(SECTION, disc_start=10, disc_weight=0.2)
    w = [task.adversarial_weight(cfg, s) for s in (0, 9, 10, 14, 19, 50)]
    assert w[:2] == [0.0, 0.0]
    assert w[2] == pytest.approx(0.02)
    assert w[3] == pytest.approx(0.1)
    assert w[4] == pytest.approx(0.2)
    assert w[5] == pytest.approx(0.2)


def test_idle_counters_track_usage():
    torch.manual_seed(0)
    model = VQGAN(SMOKE).train()
    _, _, codes, _ = model(torch.rand(2, 1, *SIZE) * 2 - 1)
    used = torch.zeros(SMOKE.codes, dtype=torch.bool)
    used[codes.unique()] = True
    start = model.dead_after                                # codes start dead: the first batch initialises them
    assert (model.idle[used] == 0).all()
    assert (model.idle[~used] == start + 1).all()
    model.eval()(torch.rand(1, 1, *SIZE))
    assert (model.idle[~used] == start + 1).all(), "eval forwards must not age codes"
    z_e = torch.randn(2, SMOKE.code_dim, 8, 8, 2)
    assert model.restart_dead_codes(z_e) == int((~used).sum())


def test_dead_code_restart_changes_only_dead_codes():
    torch.manual_seed(0)
    model = VQGAN(SMOKE, dead_after=3)
    q = model.quantizer
    dead = torch.tensor([1, 7, 30])
    model.idle.zero_()
    model.idle[dead] = 3
    model.idle[2] = 2                                     # almost dead: must stay
    before = {k: v.clone() for k, v in model.state_dict().items()}
    z_e = torch.randn(2, SMOKE.code_dim, 8, 8, 2)
    assert model.restart_dead_codes(z_e) == 3
    alive = torch.ones(SMOKE.codes, dtype=torch.bool)
    alive[dead] = False
    for name, t in [("embedding.weight", q.embedding.weight), ("ema_w", q.ema_w), ("ema_cluster_size", q.ema_cluster_size)]:
        old = before[f"vqvae.quantizer.quantizer.{name}"]
        assert torch.equal(t[alive], old[alive]), name
        assert not torch.equal(t[dead], old[dead]), name
    # restarted vectors are encoder outputs of the batch
    flat = z_e.permute(0, 2, 3, 4, 1).reshape(-1, SMOKE.code_dim)
    for k in dead:
        assert (flat == q.embedding.weight[k]).all(dim=1).any()
    assert (model.idle[dead] == 0).all()
    assert model.idle[2] == 2
    assert model.restart_dead_codes(z_e) == 0
    # only buffers of the quantizer moved; encoder/decoder untouched
    for k, v in model.state_dict().items():
        if "quantizer" not in k and k != "idle":
            assert torch.equal(v, before[k]), k


def test_code_round_trip():
    torch.manual_seed(0)
    model = VQGAN(SMOKE).eval()
    codes = torch.randint(SMOKE.codes, (3, 8, 8, 2))
    # the codebook may hold near-duplicates only by chance; random normal init makes them distinct
    assert torch.equal(model.snap(model.embed(codes)), codes)
    # through the 4D latent API: encode a volume, decode the latent, the latent re-snaps to the same codes
    volume = torch.rand(1, 4, *SIZE) * 2 - 1                       # (1, D, H, W, T)
    z, c = task.encode_volume(model, volume)
    assert z.shape == (SMOKE.code_dim, 4, 8, 8, 2)
    assert c.shape == (4, 8, 8, 2)
    z_slices = z.permute(1, 0, 2, 3, 4)                              # (D, C_z, h, w, t)
    assert torch.equal(model.snap(z_slices), c)
    images = task.decode_latents(model, z[None])
    assert images.shape == (1, 1, 4, *SIZE)
    assert images.abs().max() <= 1
    # a small perturbation of the latent decodes exactly like the clean latent (re-snapping)
    noisy = z + 1e-4 * torch.randn_like(z)
    assert torch.equal(task.decode_latents(model, noisy[None]), images)
    # reconstruct decodes the codebook entries it encoded without snapping them a second time: same images
    assert torch.equal(task.reconstruct(model, volume), images[0])
    with pytest.raises(CardiolabError, match="decode_latents"):
        task.decode_latents(model, z)


def _fit(tmp_path, name, steps=6, **kw):
    cfg = dataclasses.replace(SECTION, batch=2, disc_start=2, **kw)
    return task.fit(cine_slices(6), cfg, SIZE, tmp_path / name, steps=steps, seed=3, device="cpu")


def test_training_is_deterministic_and_checkpoint_loads(tmp_path):
    a, b = _fit(tmp_path, "a", mse_weight=0.5), _fit(tmp_path, "b", mse_weight=0.5)
    log_a = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
    log_b = [json.loads(line) for line in (b / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "s_per_step"} for r in rows]  # noqa: E731
    assert len(log_a) == 6
    assert strip(log_a) == strip(log_b)
    assert {"l1", "commit", "g_adv", "d_loss", "perplexity", "dead_fraction"} <= set(log_a[0])
    assert log_a[0]["d_loss"] == 0
    assert log_a[-1]["d_loss"] > 0
    assert log_a[-1]["g_adv"] > 0
    assert all(1.0 <= r["perplexity"] <= SMOKE.codes for r in log_a)
    assert log_a[0]["restarted"] > 0, "first batch initialises the codebook"
    assert log_a[1]["perplexity"] > 10, "first batch initialises the codebook"
    for r in log_a:   # L_G = L1 + w_mse * MSE + commitment + w_adv * G_adv
        want = r["l1"] + 0.5 * r["mse"] + r["commit"] + r["w_adv"] * r["g_adv"]
        assert r["loss"] == pytest.approx(want, rel=1e-5)

    ckpt = load_checkpoint(a)                                   # weights_only=True inside
    assert ckpt["step"] == 6
    assert set(ckpt["modules"]) == {"model", "disc"}
    model = task.load(a)
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["modules"]["model"][k]), k
    x = cine_slices(1, seed=9)[0]["image"][None]
    with torch.no_grad():
        assert torch.equal(model(x)[0], task.load(b)(x)[0])


def fake_cache(root, n: int = 3, slices: int = 2):
    """A prepared cache in the shared layout (manifest.json + subjects/<id>.pt) from the disk phantom."""
    from cardiolab.core import write_json
    from cardiolab.data.prepare import CACHE_VERSION

    items = cine_slices(n * slices, seed=5)
    splits = {"public": ["s0"], "private": ["s1"], "holdout": [f"s{i}" for i in range(2, n)]}
    split_of = {s: k for k, v in splits.items() for s in v}
    (root / "subjects").mkdir(parents=True)
    subjects = []
    for i in range(n):
        image = torch.cat([items[i * slices + z]["image"] for z in range(slices)])      # (D, H, W, T)
        torch.save({"image": image, "labels": torch.zeros(image.shape, dtype=torch.uint8),
                    "label_mask": torch.zeros(SIZE[2], dtype=torch.bool), "cond": torch.tensor([i % 2, 0, 1, 2, 3])},
                   root / f"subjects/s{i}.pt")
        subjects.append({"id": f"s{i}", "split": split_of[f"s{i}"], "file": f"subjects/s{i}.pt"})
    write_json(root / "manifest.json", {"version": CACHE_VERSION, "slices": slices, "image_size": SIZE[0],
                                        "frames": SIZE[2], "splits": splits, "subjects": subjects})
    return root


def test_encode_cohort_and_metrics(tmp_path):
    run = _fit(tmp_path, "run", steps=2)
    cache = fake_cache(tmp_path / "cache")
    from cardiolab.__main__ import main
    assert main(["encode", "--run", str(run), "--cache", str(cache), "--out", str(tmp_path / "lat")]) == 0
    lat = task.load_latents(tmp_path / "lat")                  # weights_only=True
    N, C, D, h, w, t = lat["latents"].shape
    assert (N, C, D, h, w, t) == (3, SMOKE.code_dim, 2, 8, 8, 2)
    assert lat["shape"] == [C, D, h, w, t]
    assert lat["codes"].shape == (3, 2, 8, 8, 2)
    assert lat["cond"].shape == (3, 5)
    assert lat["ids"] == ["s0", "s1", "s2"]
    assert lat["splits"]["s2"] == "holdout"
    train = lat["latents"][:2]
    assert lat["scale"] == pytest.approx(1 / train.std().item(), rel=1e-5)
    model = task.load(run)
    # stored latents are exactly the code vectors of the stored codes
    codes = lat["codes"][1]                                      # (D, h, w, t)
    assert torch.equal(model.embed(codes).permute(1, 0, 2, 3, 4), lat["latents"][1])
    images = task.decode_latents(model, lat["latents"][:2])
    assert images.shape == (2, 1, 2, *SIZE)
    m = task.reconstruction_metrics(model, cache, split="holdout")
    assert m["n"] == 1
    assert m["subjects"][0]["id"] == "s2"
    assert 0 < m["PSNR"] < 100
    assert -1 <= m["SSIM"] <= 1
    assert task.codebook_usage(model, lat["codes"]).sum() == lat["codes"].numel()


def test_figures(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cardiolab.engine import training_curves
    from cardiolab.plots import training as tf

    run = _fit(tmp_path, "run", steps=2)
    curves = training_curves(run)
    assert list(curves.index) == [1, 2]
    assert "perplexity" in curves
    real = torch.rand(2, *SIZE) * 2 - 1
    figs = [tf.plot_training(curves), tf.plot_reconstruction(real, real.flip(0)),
            tf.plot_xt_profile(real, real), tf.plot_codebook_usage(torch.arange(8).numpy())]
    assert [len(f.axes) for f in figs] == [4, 18, 2, 1]
    assert "perplexity" in figs[3].axes[0].get_title()
    plt.close("all")
    with pytest.raises(CardiolabError, match="metrics.jsonl"):
        training_curves(tmp_path)


# ---- memory switches (high resolution, after MedLoRD) ---------------------------------------------
VOLUME = (32, 32, 16)       # a smoke whole-heart volume (X, Y, Z): the same 3D network as a 2D+t slice


def test_switches_keep_state_dict_and_outputs():
    torch.manual_seed(0)
    plain = VQGAN(SMOKE)
    lean = VQGAN(SMOKE, code_chunk=100, checkpointing=True)
    assert list(lean.state_dict()) == list(plain.state_dict())
    lean.load_state_dict(plain.state_dict())
    x = torch.rand(1, 1, *VOLUME) * 2 - 1
    outs = []
    for m in (plain, lean):
        x_hat, loss, codes, _ = m.train()(x)
        (x_hat.abs().mean() + loss).backward()
        outs.append((x_hat, codes, next(m.vqvae.encoder.parameters()).grad))
    assert outs[0][0].shape == (1, 1, *VOLUME)
    assert torch.equal(outs[0][1], outs[1][1])
    torch.testing.assert_close(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][2], outs[1][2])


def test_ema_decay_from_config():
    assert VQGAN(SMOKE).quantizer.decay == SMOKE.ema_decay == 0.99
    assert VQGAN(dataclasses.replace(SMOKE, ema_decay=0.95)).quantizer.decay == 0.95


@pytest.mark.parametrize("chunk", [1, 7, 100, 4096])
def test_chunked_code_search_equals_unchunked(chunk):
    torch.manual_seed(1)
    m = VQGAN(SMOKE).eval()
    z = torch.randn(2, SMOKE.code_dim, 8, 8, 4)
    full = m.snap(z, chunk=0)
    assert full.shape == (2, 8, 8, 4)
    assert torch.equal(m.snap(z, chunk=chunk), full)


def test_bad_code_chunk():
    with pytest.raises(CardiolabError, match="code_chunk"):
        VQGAN(SMOKE, code_chunk=-1)


def test_sliding_decode_matches_full_decode():
    torch.manual_seed(2)
    m = VQGAN(SMOKE).eval()
    with torch.no_grad():
        z_q = m.embed(m.snap(m.encode(torch.rand(1, 1, 64, 64, 32) * 2 - 1)))     # (1, C_z, 16, 16, 8)
        full = m.decode(z_q)
    whole = decode_sliding(m, z_q, window=(16, 16, 8))
    tiled = decode_sliding(m, z_q, window=(8, 8, 4), overlap=0.5)
    assert tiled.shape == full.shape == (1, 1, 64, 64, 32)
    torch.testing.assert_close(whole, full)                 # one window is the full decode
    # seams: only within the decoder's receptive field of a window edge, blended by the gaussian weights
    assert (tiled - full).abs().mean() < 0.1 * full.abs().mean()
    assert (tiled - full).abs().max() < 0.5 * full.abs().max()


def test_random_crop_shape():
    x = torch.randn(3, 1, 16, 16, 8)
    assert task.random_crop(x, (8, 8, 8)).shape == (3, 1, 8, 8, 8)


def test_random_crop_is_a_window_of_its_input():
    x = torch.arange(16 * 16 * 8, dtype=torch.float32).reshape(1, 1, 16, 16, 8)
    c = task.random_crop(x, (8, 4, 4))[0, 0]
    h, w, t = (int(v) for v in ((c[0, 0, 0] // 128), (c[0, 0, 0] % 128) // 8, c[0, 0, 0] % 8))
    assert torch.equal(c, x[0, 0, h:h + 8, w:w + 4, t:t + 4])


def test_random_crop_shows_the_border_often_enough():
    # a 32 crop of 64: uniform starts put the first row in 1 window of 33; clamped overhanging starts in ~1 of 4
    x = torch.arange(64, dtype=torch.float32).reshape(1, 1, 64, 1, 1).expand(4000, 1, 64, 1, 1)
    torch.manual_seed(0)
    first = task.random_crop(x, (32, 1, 1))[:, 0, :, 0, 0]          # (4000, 32) row indices, each a window
    assert torch.equal(first - first[:, :1], torch.arange(32).expand(4000, 32))   # contiguous, inside the slice
    seen = torch.stack([(first == r).any(1).float().mean() for r in (0, 31, 63)])
    assert 0.22 < seen[0] < 0.30
    assert 0.22 < seen[2] < 0.30
    assert 0.70 < seen[1] < 0.78


def test_flip_roll_is_a_flipped_and_rolled_copy_of_each_slice():
    x = torch.arange(4 * 8 * 8 * 6, dtype=torch.float32).reshape(4, 1, 8, 8, 6)
    torch.manual_seed(1)
    y = task.random_flip_roll(x)
    candidates = [x[i].flip(d).roll(s, dims=3) if d else x[i].roll(s, dims=3)
                  for i in range(4) for d in ([], [1], [2], [1, 2]) for s in range(6)]
    for i in range(4):   # each output is one of sample i's 24 flip / roll variants, never another sample's
        assert any(torch.equal(y[i], c) for c in candidates[i * 24:(i + 1) * 24])
    assert not torch.equal(y, x)


def test_augment_is_part_of_shaping_and_trains(tmp_path):
    from cardiolab.profiles import override
    assert task.shaping(override(PROFILES["tiny"], ["vqgan.augment=false"])) != task.shaping(get_profile("tiny"))
    cfg = dataclasses.replace(SECTION, batch=2, disc_start=2, augment=True)
    a = task.fit(cine_slices(4), cfg, SIZE, tmp_path / "a", steps=3, seed=3, device="cpu")
    b = task.fit(cine_slices(4), dataclasses.replace(cfg, augment=False), SIZE, tmp_path / "b", steps=3, seed=3,
                 device="cpu")
    wa, wb = (task.load(r).state_dict() for r in (a, b))
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)   # the flag reaches the step


def test_crop_size_zero_keeps_the_axis():
    from cardiolab.profiles import override
    p = override(PROFILES["tiny"], ["vqgan.crop=32,0,8"])
    assert task.crop_size(p) == (32, 64, 8)


def test_crop_must_be_a_multiple_of_four():
    with pytest.raises(CardiolabError, match="vqgan.crop"):
        dataclasses.replace(SECTION, crop=(6, 0, 0))


def test_crop_is_part_of_shaping():
    from cardiolab.profiles import override
    p = override(PROFILES["tiny"], ["vqgan.crop=32,32,0"])
    assert task.shaping(p) != task.shaping(get_profile("tiny"))


def test_cropped_training_reconstructs_whole_slices(tmp_path):
    cfg = dataclasses.replace(SECTION, batch=2, disc_start=2, crop=(8, 8, 0))
    size = (8, 8, SIZE[2])
    run = task.fit(cine_slices(4), cfg, size, tmp_path / "crop", steps=3, seed=3, device="cpu")
    x = cine_slices(1, seed=9)[0]["image"][None]
    with torch.no_grad():
        assert task.load(run)(x)[0].shape == x.shape
