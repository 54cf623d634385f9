"""Fidelity metrics (PSNR / SSIM / MS-SSIM via MONAI) on known answers."""
import math

import pytest
import torch

from cardiolab.core import CardiolabError
from cardiolab.metrics.fidelity import ms_ssim, ms_ssim_settings, psnr, reconstruction_metrics, ssim


def _cines(n=2, d=2, size=32, t=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    # smooth-ish content inside [-0.8, 0.8] so a small offset never clips
    x = torch.rand((n, d, size // 4, size // 4, t), generator=g)
    x = torch.nn.functional.interpolate(x.flatten(0, 1).permute(0, 3, 1, 2), size=(size, size), mode="bilinear")
    return (x.permute(0, 2, 3, 1).reshape(n, d, size, size, t) * 1.6 - 0.8).contiguous()


def test_psnr_constant_offset_closed_form():
    x = _cines()
    c = 0.05                                     # offset in [0, 1] units = 0.1 in cardiolab's [-1, 1]
    got = psnr(x, x + 2 * c)
    assert got.shape == (2,)
    assert torch.allclose(got, torch.full((2,), -20 * math.log10(c)), atol=1e-3)  # MSE = c^2 -> 26.02 dB


def test_ssim_and_ms_ssim_identity_is_one_and_noise_lowers_them():
    x = _cines(size=64)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    assert torch.allclose(ms_ssim(x, x), torch.ones(2), atol=1e-5)
    g = torch.Generator().manual_seed(1)
    noisy = [x + s * torch.randn(x.shape, generator=g) for s in (0.05, 0.2)]
    s1, s2 = (ssim(x, n).mean() for n in noisy)
    m1, m2 = (ms_ssim(x, n).mean() for n in noisy)
    assert 1 > s1 > s2
    assert 1 > m1 > m2


def test_ms_ssim_settings_fit_small_frames():
    assert ms_ssim_settings(256) == (5, 11)
    assert ms_ssim_settings(64) == (4, 7)
    assert ms_ssim_settings(32) == (3, 7)
    assert ms_ssim_settings(16)[0] >= 2
    with pytest.raises(CardiolabError):
        ms_ssim_settings(4)


def test_reconstruction_metrics_summary_and_bad_shapes():
    x = _cines()
    out = reconstruction_metrics(x, x + 0.1)
    assert out["n"] == 2
    assert out["ms_ssim"] == {"scales": 3, "window": 7}
    assert out["PSNR"] == pytest.approx(-20 * math.log10(0.05), abs=1e-3)
    assert 0 < out["SSIM"] < 1
    assert 0 < out["MS-SSIM"] <= 1
    with pytest.raises(CardiolabError, match="differs"):
        psnr(x, x[:, :1])
    with pytest.raises(CardiolabError, match="expected cines"):
        ssim(torch.zeros(3, 3), torch.zeros(3, 3))
