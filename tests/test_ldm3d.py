"""Latent 3D UNet with checkpointing, and the slim ControlNet after MedLoRD."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from monai.networks.nets import ControlNet

from cardiolab.core import CardiolabError
from cardiolab.data.phantom3d import make_volume
from cardiolab.models.controlnet_slim import (ControlledUNet, ControlNetConfig, SlimControlNet,
                                              masks_to_channels)
from cardiolab.models.ldm3d import LatentUNet3D, LDM3DConfig

# smoke: 32x32x16 volume -> 8x8x4 latent; 3 levels need latent axes divisible by 4
UNET = LDM3DConfig(in_channels=4, channels=(16, 32, 32), attention_levels=(False, True, True), res_blocks=1,
                   head_channels=8, norm_groups=8)
CTRL = ControlNetConfig(embed_channels=(8, 8))
LATENT = (8, 8, 4)


def _inputs(seed=0, b=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, UNET.in_channels, *LATENT, generator=g)
    t = torch.randint(0, 300, (b,), generator=g)
    mask = torch.from_numpy(make_volume(seed, size=(32, 32, 16)).mask)[None].expand(b, -1, -1, -1)
    return x, t, masks_to_channels(mask)


def _perturb(module, seed=1):
    """Random weights everywhere, zero-initialised projections included."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return module


@pytest.fixture
def unet():
    torch.manual_seed(0)
    return _perturb(LatentUNet3D(UNET)).eval()   # MONAI zero-inits the output conv: perturb so outputs differ


def test_unet_shape_and_flash_attention(unet):
    x, t, _ = _inputs()
    assert unet(x, t).shape == x.shape
    attn = [m for m in unet.modules() if hasattr(m, "use_flash_attention")]
    assert attn
    assert all(m.use_flash_attention for m in attn)


def test_unet_checkpointing_same_output_and_grads(unet):
    x, t, _ = _inputs()
    lean = LatentUNet3D(dataclasses.replace(UNET, checkpointing=True))
    lean.load_state_dict(unet.state_dict())
    assert list(lean.state_dict()) == list(unet.state_dict())
    grads = []
    for m in (unet, lean):
        m.train().zero_grad()
        m(x, t).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    unet.eval()
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("shape", [(2, 4, 8, 8, 6), (2, 3, 8, 8, 4)])
def test_unet_bad_latent(unet, shape):
    with pytest.raises(CardiolabError, match="LatentUNet3D input"):
        unet(torch.zeros(shape), torch.zeros(2, dtype=torch.long))


def test_controlnet_at_init_leaves_unet_unchanged(unet):
    x, t, masks = _inputs()
    model = ControlledUNet(unet, SlimControlNet(UNET, CTRL).eval())
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, masks), unet(x, t), rtol=0, atol=0)


def test_controlnet_scale_zero_leaves_unet_unchanged_scale_one_does_not(unet):
    x, t, masks = _inputs()
    cn = _perturb(SlimControlNet(UNET, CTRL)).eval()
    model = ControlledUNet(unet, cn)
    with torch.no_grad():
        plain = unet(x, t)
        down, mid = cn(x, t, masks, conditioning_scale=0.0)
        torch.testing.assert_close(unet(x, t, down_residuals=down, mid_residual=mid), plain, rtol=0, atol=0)
        model.conditioning_scale = 0.0
        torch.testing.assert_close(model(x, t, masks), plain, rtol=0, atol=0)
        model.conditioning_scale = 1.0
        assert (model(x, t, masks) - plain).abs().max() > 1e-3


def test_controlnet_residual_shapes_match_unet_skips(unet):
    x, t, masks = _inputs()
    down, mid = SlimControlNet(UNET, CTRL)(x, t, masks)
    widths = [16, 16, 16, 32, 32, 32]            # conv_in, level 0 resnet + downsampler, level 1 ..., level 2 resnet
    assert [d.shape[1] for d in down] == widths
    assert [tuple(d.shape[2:]) for d in down] == [LATENT] * 2 + [(4, 4, 2)] * 2 + [(2, 2, 1)] * 2
    assert mid.shape == (2, 32, 2, 2, 1)


def test_slim_has_fewer_parameters_than_full_copy():
    def count(m):
        return sum(p.numel() for p in m.parameters())
    cfg = LDM3DConfig(in_channels=8, channels=(32, 64, 64, 128), res_blocks=1, norm_groups=16, head_channels=16)
    slim = count(SlimControlNet(cfg, ControlNetConfig(r=0.5)))
    full_r = count(SlimControlNet(cfg, ControlNetConfig(r=1.0)))
    monai_full = count(ControlNet(spatial_dims=3, in_channels=8, channels=cfg.channels, num_res_blocks=1,
                                  attention_levels=cfg.attention_levels, norm_num_groups=16, num_head_channels=16,
                                  conditioning_embedding_in_channels=6, conditioning_embedding_num_channels=(16, 32)))
    assert slim < 0.5 * full_r
    assert slim < 0.5 * monai_full


def test_control_dropout_zeroes_masks_in_training_only():
    x, t, masks = _inputs(b=64)
    cn = _perturb(SlimControlNet(UNET, dataclasses.replace(CTRL, control_dropout=0.5)))
    torch.manual_seed(0)
    cn.train()
    mid_train = cn(x, t, masks)[1]
    mid_none = cn(x, t, torch.zeros_like(masks))[1]
    dropped = [torch.allclose(a, b) for a, b in zip(mid_train, mid_none)]
    assert 10 < sum(dropped) < 54
    cn.eval()
    assert not torch.allclose(cn(x, t, masks)[1], cn(x, t, torch.zeros_like(masks))[1])


@pytest.mark.parametrize("kw, name", [(dict(initial_stride=1), "initial_stride"), (dict(r=0.0), "r must"),
                                      (dict(control_dropout=1.0), "control_dropout")])
def test_bad_controlnet_config(kw, name):
    with pytest.raises(CardiolabError, match=name):
        SlimControlNet(UNET, dataclasses.replace(CTRL, **kw))


def test_negative_conditioning_scale(unet):
    with pytest.raises(CardiolabError, match="--conditioning-scale"):
        ControlledUNet(unet, SlimControlNet(UNET, CTRL), conditioning_scale=-1)


def test_masks_to_channels():
    mask = torch.tensor([[[[0, 1, 6]]]])                    # (1, 1, 1, 3)
    ch = masks_to_channels(mask)
    assert ch.shape == (1, 6, 1, 1, 3)
    assert ch[0, :, 0, 0, 0].sum() == 0                     # background: no channel
    assert ch[0, 0, 0, 0, 1] == 1
    assert ch[0, 5, 0, 0, 2] == 1
