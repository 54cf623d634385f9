"""Figures of training: loss curves, reconstructions, codebook use, DiT tokens, the noise schedule and guidance.

Each function returns a matplotlib Figure; save it with `cardiolab.plots.save_figure`.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from cardiolab.models.dit4d import DiT4DConfig


LOSS_PANELS = {"reconstruction": ("l1", "commit"), "adversarial": ("g_adv", "d_loss"),
               "codebook": ("perplexity", "dead_fraction")}


def plot_training(curves):
    """Loss curves, adversarial terms and codebook health from `training_curves(run_dir)`."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), layout="constrained")
    for ax, (title, keys) in zip(axes, LOSS_PANELS.items()):
        lines = []
        for i, key in enumerate(k for k in keys if k in curves):
            target = ax.twinx() if i and title == "codebook" else ax     # perplexity and fraction: own y axes
            lines += target.plot(curves.index, curves[key], label=key, color=f"C{i}")
            target.set_ylabel(key if title == "codebook" else "loss")
        ax.set(title=title, xlabel="step")
        if title == "reconstruction":
            ax.set_yscale("log")
        ax.legend(handles=lines, fontsize=8)
    return fig


def plot_reconstruction(real: torch.Tensor, recon: torch.Tensor, slice: int | None = None, frames: int = 6):
    """Real (top) vs reconstructed (middle) frames of one slice, |error| below; real, recon: (D, H, W, T)."""
    z = real.shape[0] // 2 if slice is None else slice
    ts = np.unique(np.linspace(0, real.shape[-1] - 1, frames).round().astype(int))
    fig, axes = plt.subplots(3, len(ts), figsize=(1.6 * len(ts), 5), squeeze=False, layout="constrained")
    rows = {"real": real[z], "recon": recon[z], "|error|": (recon[z] - real[z]).abs()}
    for r, (name, img) in enumerate(rows.items()):
        for c, t in enumerate(ts):
            lim = (0, 0.5) if name == "|error|" else (-1, 1)
            axes[r, c].imshow(img[..., t].numpy(), cmap="gray" if r < 2 else "magma", vmin=lim[0], vmax=lim[1])
            axes[r, c].set(xticks=[], yticks=[], title=f"t={t}" if r == 0 else None)
        axes[r, 0].set_ylabel(name)
    return fig


def plot_xt_profile(real: torch.Tensor, recon: torch.Tensor, slice: int | None = None):
    """M-mode view: intensity along the horizontal line through the image centre (near the LV) over time."""
    z = real.shape[0] // 2 if slice is None else slice
    row = real.shape[1] // 2                                          # prepare centres the crop on the heart
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True, layout="constrained")
    for ax, (name, img) in zip(axes, {"real": real, "recon": recon}.items()):
        ax.imshow(img[z, row].numpy(), cmap="gray", vmin=-1, vmax=1, aspect="auto")     # (W, T)
        ax.set(title=f"{name}: x-t profile, slice {z}", xlabel="frame t", ylabel="position along W (pixels)")
    return fig


def plot_codebook_usage(counts: np.ndarray):
    """Histogram of code use, most used first, with the perplexity and the share of codes never used."""
    p = counts / max(1, counts.sum())
    ppl = float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum()))
    fig, ax = plt.subplots(figsize=(7, 3), layout="constrained")
    ax.bar(np.arange(len(counts)), np.sort(counts)[::-1], width=1.0)
    ax.set(yscale="log", xlabel="code (sorted by use)", ylabel="count",
           title=f"codebook usage: perplexity {ppl:.0f} of {len(counts)} codes, {np.mean(counts == 0):.0%} unused")
    return fig


def plot_token_grid(cfg: DiT4DConfig, slices: int = 2):
    """How a latent (C_z, D, H, W, T) becomes tokens: each panel is one (slice d, frame-block t) plane of the
    latent, coloured by the index of the token each latent voxel falls into (patchify's (d, h, w, t) order)."""
    D, H, W, T = cfg.input_size
    gD, gH, gW, gT = cfg.grid()
    pd, ph, pw, pt = cfg.patch
    token = np.arange(cfg.num_tokens).reshape(gD, gH, gW, gT)
    rows, cols = min(slices, gD), min(gT, 4)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows), squeeze=False, layout="constrained")
    for r in range(rows):
        for c in range(cols):
            plane = np.kron(token[r, :, :, c], np.ones((ph, pw)))[:H, :W]     # (H, W) latent voxels -> token id
            ax = axes[r, c]
            ax.imshow(plane % 20, cmap="tab20", vmin=0, vmax=19, interpolation="nearest")
            if gH * gW <= 64:
                for (i, j), n in np.ndenumerate(token[r, :, :, c]):
                    ax.text(j * pw + (pw - 1) / 2, i * ph + (ph - 1) / 2, str(n), ha="center", va="center", fontsize=6)
            ax.set_xticks(np.arange(-0.5, W, pw), labels=[]), ax.set_yticks(np.arange(-0.5, H, ph), labels=[])
            ax.grid(color="white", linewidth=0.8)
            ax.set_title(f"slice {r * pd}, frames {c * pt}-{min(T, (c + 1) * pt) - 1}", fontsize=8)
    fig.suptitle(f"latent (D, H, W, T) = {cfg.input_size}, patch {cfg.patch}\n-> token grid {cfg.grid()} = "
                 f"{cfg.num_tokens} tokens (numbered), each attending to all", fontsize=8)
    return fig


def plot_loss(curves, smooth: int = 5):
    """Training loss (raw and a running mean) against step; curves: `engine.training_curves(run_dir)`."""
    curves = curves.dropna(subset=["loss"])
    steps, loss = curves.index.to_numpy(), curves["loss"].to_numpy()
    fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
    ax.plot(steps, loss, alpha=0.4, label="loss (logged means)")
    if len(loss) >= smooth:
        ax.plot(steps[smooth - 1:], np.convolve(loss, np.ones(smooth) / smooth, mode="valid"), label=f"mean of {smooth}")
    ax.set_xlabel("step"), ax.set_ylabel("v-prediction smooth-L1"), ax.set_yscale("log")
    ax.legend(fontsize=8)
    return fig


def plot_guidance(images: torch.Tensor, scales, slice: int | None = None, frames: int = 6, info: dict | None = None):
    """Rows: guidance scales; columns: frames of one slice."""
    fig = _frame_rows(images, [f"s={s:g}" for s in scales], slice, frames)
    if info:
        fig.suptitle("guidance for " + ", ".join(f"{k}={v}" for k, v in info.items()), fontsize=8)
    return fig


def plot_schedule(alpha_bar, sample_timesteps=None):
    """The noise schedule: abar_t (signal variance kept in x_t) and 1 - abar_t (noise variance) against the training
    step t, and the signal-to-noise ratio abar / (1 - abar) on a log scale; sample_timesteps (DDIM's t) as ticks."""
    abar = np.asarray(alpha_bar, dtype=np.float64)
    t = np.arange(len(abar))
    fig, (ax, ax_snr) = plt.subplots(1, 2, figsize=(9, 3), layout="constrained")
    snr = abar / np.maximum(1 - abar, 1e-12)
    ax.plot(t, abar, label="abar_t (signal)")
    ax.plot(t, 1 - abar, label="1 - abar_t (noise)")
    ax.set(xlabel="t", ylabel="variance share", title=f"cosine schedule, T = {len(abar)}")
    ax_snr.semilogy(t, snr)
    ax_snr.set(xlabel="t", ylabel="abar / (1 - abar)", title="signal-to-noise ratio")
    if sample_timesteps is not None:
        steps = np.asarray(sample_timesteps, dtype=int)
        ax.plot(steps, abar[steps], "k|", markersize=10, label=f"DDIM steps ({len(steps)})")
        ax_snr.plot(steps, snr[steps], "k|", markersize=10)
    ax.legend(fontsize=8)
    return fig


def plot_noised_cines(images: torch.Tensor, timesteps, alpha_bar=None, slice: int | None = None, frames: int = 6):
    """Rows: the decoded x_t of one study at each diffusion step t (`tasks.dit.noised_cines`); columns: frames of
    one slice. images: (S, D, H, W, T) in [-1, 1]; alpha_bar: the schedule, to print abar_t beside each row."""
    labels = [f"t={t}" + ("" if alpha_bar is None else f"\nabar={float(alpha_bar[t]):.2f}") for t in timesteps]
    fig = _frame_rows(images, labels, slice, frames)
    fig.suptitle("x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, decoded by the VQ-GAN", fontsize=8)
    return fig


def _frame_rows(images: torch.Tensor, row_labels, slice: int | None, frames: int):
    """One row per image of (S, D, H, W, T) in [-1, 1], labelled; columns: evenly spaced frames of one slice."""
    S, D, H, W, T = images.shape
    z = D // 2 if slice is None else slice
    cols = np.unique(np.linspace(0, T - 1, min(T, frames)).round().astype(int))
    fig, axes = plt.subplots(S, len(cols), figsize=(1.3 * len(cols), 1.3 * S), squeeze=False, layout="constrained")
    for r in range(S):
        for c, t in enumerate(cols):
            axes[r, c].imshow(images[r, z, :, :, t], cmap="gray", vmin=-1, vmax=1)
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
            axes[0, c].set_title(f"frame {t}", fontsize=8)
        axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
    return fig
