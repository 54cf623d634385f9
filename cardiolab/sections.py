"""The sections of a run profile: one frozen dataclass per stage (data, vqgan, dit, dp, mia, baselines, eval,
landmarks, copydetector, highres), each default with the reason or measurement behind it, and each field saying
whether it shapes weights (`runtime` fields never do). `profiles.py` assembles them into the smoke / tiny / full
profiles.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from cardiolab.core import CardiolabError, check_amp

# ---- which settings shape weights: said once, on the field -------------------------------------------------
# Every field of a profile section shapes the weights of the models that read it (a change retrains them), unless
# declared `runtime(default)`: sampling, decoding, evaluation, memory and precision settings, which change how a
# trained model is run, never what it is. Each task's shaping() takes its sections through `shaping_fields`.
#
# amp is runtime everywhere: with amp=auto the engine picks the precision per machine (and per model, by a probe)
# and records what it used in config.json, so "auto" names no one precision that shaping could hold; a user who
# moves a finished run to another machine, or sets amp=off to sample on a CPU without native bf16, expects to keep
# the run, not to retrain it. To retrain in another precision, `train` the model again (only `ensure` keeps runs).
_SHAPES = "shapes"


def runtime(default):
    """A profile field that never shapes weights (see above): changing it retrains nothing."""
    return field(default=default, metadata={_SHAPES: False})


def shapes(section, name: str) -> bool:
    """Does field `name` of a profile section (dataclass or class) shape weights?"""
    return next(f for f in dataclasses.fields(section) if f.name == name).metadata.get(_SHAPES, True)


def shaping_fields(section, names: tuple[str, ...] | None = None) -> dict:
    """{name: value} of the section's fields that shape weights (every field not declared `runtime`); names: only
    these (the fields a model reads, when several models share a section)."""
    values = dataclasses.asdict(section)
    return {f.name: values[f.name] for f in dataclasses.fields(section)
            if f.metadata.get(_SHAPES, True) and (names is None or f.name in names)}


@dataclass(frozen=True)
class DataConfig:
    phantom_subjects: int = 40        # cohort size written by `cardiolab phantom`
    phantom_size: int = 128           # in-plane pixels of the phantom (ACDC-like 1.5 mm)
    phantom_spacing: float = 1.5      # mm in-plane
    phantom_slices: int = 8           # short-axis slices base -> apex
    phantom_frames: int = 20          # frames over one heart beat
    image_size: int = 64              # H = W after prepare
    spacing: float = 3.0              # mm in-plane after prepare (64 px x 3 mm = 192 mm field of view)
    slices: int = 6                   # D after prepare: slices chosen base -> apex
    frames: int = 16                  # T after prepare, aligned at ED
    split: tuple[float, float, float] = (0.5, 0.3, 0.2)  # public / private / holdout fractions


@dataclass(frozen=True)
class VQGANConfig:
    channels: tuple[int, ...] = (32, 64)   # encoder widths; two stride-2 levels -> /4 in H, W, T
    res_blocks: int = 1
    codes: int = 1024                 # codebook size (paper: 16384); restarts keep them in use
    code_dim: int = 8                 # latent channels C_z (paper: 8)
    steps: int = 7000                 # tiny, 2 quiet cores, bf16: ~0.14 s/step, 0.20 with the discriminator: ~17.5
                                      # min, so notebook 02 fits 20; held-out phantom 30.37 dB / SSIM 0.922 (8000
                                      # steps: 30.67 / 0.924; benchmarks/README.md, "The tiny reproduction ...")
    batch: int = 4
    lr: float = 4e-4                  # few steps: a high LR (grad-norm clipped by the engine) converges faster
    disc_start: int = 6000            # LSGAN term ramps in after the autoencoder has warmed up
    disc_weight: float = 0.01         # small: the adversary trades PSNR for sharpness (CardioDiT: 0.005)
    mse_weight: float = 10.0          # MSE beside L1 (images in [-1, 1]: MSE ~0.1 x L1, so 10 makes their gradients
                                      # comparable); L1 keeps edges sharp, MSE is what PSNR measures. Tiny, phantom
                                      # v3: 29.36 -> 29.82 dB holdout PSNR, better on all 8 subjects (benchmarks/)
    amp: str = runtime("auto")        # bf16 where native (~1.3x faster), fp32 elsewhere (emulated bf16: ~50x slower)
    ema_decay: float = 0.99           # codebook EMA decay (CardioDiT: 0.99; MedLoRD: 0.95 for its 16384 codes)
    crop: tuple[int, int, int] = (48, 48, 0)  # train on random (H, W, T) crops of each slice (MedLoRD trains on
                                      # crops); 0 on an axis = its full extent. Fully convolutional: whole cines
                                      # still encode and decode at evaluation. Tiny: 48 x 48 of 64 x 64 is ~0.6x
                                      # the time of full slices, holdout PSNR 0.13 dB lower (benchmarks/); larger
                                      # than a slice = the whole slice (smoke)
    augment: bool = True              # random H / W flips and a cyclic shift in T (one beat is periodic) per slice:
                                      # 29.82 -> 30.65 dB holdout PSNR at tiny (phantom v3), every subject better

    def __post_init__(self):
        check_amp(self.amp, "vqgan.amp")
        if len(self.crop) != 3 or any(c < 0 or c % 4 for c in self.crop):
            raise CardiolabError(f"vqgan.crop: expected three sizes (H, W, T), each 0 (full) or a multiple of 4, "
                                 f"got {self.crop}")


@dataclass(frozen=True)
class DiTConfig:
    # tiny defaults: 6 x 16 x 16 x 4 latents -> 192 tokens with the paper's (1, 4, 4, 2) patch; 4.3 M parameters,
    # ~0.6 s/step on one busy CPU core (1500 steps ~15 min). hidden 128 / depth 4 is 3x faster but ends at
    # loss 0.18 instead of 0.13 on the tiny phantom latents.
    hidden: int = 192                 # paper (DiT-S/B/L): 768
    depth: int = 6                    # paper: 8 / 12 / 16
    heads: int = 6                    # paper: 12
    patch: tuple[int, int, int, int] = (1, 4, 4, 2)   # (D, H, W, T) patch of the latent (paper)
    train_timesteps: int = 300        # CardioDiT: cosine schedule, 300 steps, v-prediction
    sample_steps: int = runtime(50)   # DDIM steps at sampling
    steps: int = 1500
    batch: int = 8
    lr: float = 3e-4                  # small models tolerate a larger LR than DiT's 1e-4
    ema_decay: float = 0.999
    cond_dropout: float = 0.1         # label dropout for classifier-free guidance
    n_samples: int = runtime(16)
    amp: str = runtime("auto")        # bf16 where native (~1.4x faster), fp32 elsewhere (emulated bf16: ~13x slower)

    def __post_init__(self):
        check_amp(self.amp, "dit.amp")


@dataclass(frozen=True)
class DPConfig:
    # DP-SGD fine-tuning of a public DiT on private latents (cardiolab.tasks.dp); sigma follows from
    # (epsilon, delta, q = 1/ceil(N/batch), steps) through the accountant. Sizes are untuned starting points.
    epsilon: float = 10.0             # target epsilon of the whole run (arXiv 2407.16405 reports 10, 5, 1)
    delta: float = 0.0                # 0: min(1e-5, 1/(10 N)); else must be <= 1/(10 N) (delta N <= 0.1; N public)
    max_grad_norm: float = 1.0        # per-subject clip C; noise std = sigma * C
    # tiny: 100 steps of an expected 8 subjects, one physical pass each (1.2 s/step on one loaded thread), so
    # notebook 06's three fine-tunes and its one-run audit fit its 20-minute share of `make reproduce`; the leakage
    # table of benchmarks/README ("Measured leakage of the DP grid") ran 300 steps of 16 on 150 private subjects
    batch: int = 8                    # expected Poisson batch: q = 1/ceil(N/batch)
    physical_batch: int = 8           # samples per forward/backward (per-sample gradients cost memory)
    steps: int = 100
    lr: float = 1e-4                  # fine-tuning from pre-trained weights: DiT's LR
    accountant: str = "prv"           # prv (tight, Gopi et al.) or rdp; both are recorded in privacy.json
    params: str = "all"               # all | attention (qkv/proj, adaLN, attribute embeddings; the rest frozen)
    private_subjects: int = 60        # the private phantom cohort of the experiments (phantom seed 1; notebook 06)
    # Notebook 06's grid and audits (never shape a run): the finite epsilons fine-tuned from the public DiT beside
    # the non-private epsilon = inf, and per run's membership audit its fresh phantom non-members (>= 100 for a TPR
    # at 1 % FPR; each new count is generated once, ~1.5 s a phantom) and its LiRA reference models (0: no LiRA; each
    # trains on its own shadow phantoms, minutes apiece at tiny; `audit mia` itself keeps the mia section's)
    epsilons: tuple[float, ...] = runtime((10.0,))
    audit_fresh: int = runtime(128)      # = mia.fresh and copydetector.fresh at tiny: one shared set
    audit_references: int = runtime(0)
    # False (release): Poisson masks and noise from the OS's secret source, never stored. True: from (seed, step),
    # bit-exact replay for tests and teaching; privacy.json then says release: false and export refuses to call it DP.
    replayable: bool = False


@dataclass(frozen=True)
class MIAConfig:
    """Membership-inference audits (`audit mia`, cardiolab.privacy.membership): audit settings, runtime for every
    registered model; the LiRA reference models name theirs in their folders (runs/<p>/lira/<task>-<init>-n<subjects>
    -s<steps>), so a change trains new ones beside the old."""
    # fresh phantoms (phantom seed 7, never trained on) among the non-members: a TPR at 1 % FPR needs >= 100
    # non-members (tiny: 128, one cached set shared with notebook 06's audits (dp.audit_fresh) and the planted
    # copy cohorts (copydetector.fresh): 1000 took ~25 of notebook 07's minutes on 2 cores), and 1000 bound the
    # FPR of 0 false positives by 0.37 % (Clopper-Pearson 95 %; full)
    fresh: int = runtime(128)
    references: int = runtime(2)          # LiRA OUT reference models: tiny 2 (~75 s each on 2 cores), each
                                          # target's mean from them, one variance pooled over all targets (the
                                          # fixed-variance LiRA of Carlini et al. 2022 for few references); full 4;
                                          # 0 skips LiRA
    reference_subjects: int = runtime(40)  # shadow phantoms per reference (phantom seed 100 + k), as the public cohort
    reference_steps: int = runtime(150)   # each reference's steps (half the 300-step DP fine-tune of the leakage
                                          # benchmark, benchmarks/README), ~2 CPU-min each


@dataclass(frozen=True)
class BaselinesConfig:
    # The slice-wise UNet baselines (ddpm, ldm, flow, mask models). The factorized and channel-merged DiTs
    # use the dit section instead, so they match CardioDiT in size, steps, batch and sampler.
    channels: tuple[int, ...] = (32, 64, 64)  # SliceUNet widths; attention at the last level only
    train_timesteps: int = 300        # as the DiT: cosine schedule, v-prediction (flow: its own ODE time)
    # tiny: 150 steps, not the DiT's 1500, so that notebook 04 fits 20 minutes of a 2-core CPU (its DiT variants,
    # factorized and channel-merged, keep the DiT's steps: the comparison the notebook is about); at 200 steps
    # (0.47-0.54 s each) the ldm, flow and mask-to-image UNets drew no heart either (benchmarks/README.md)
    steps: int = 150
    batch: int = 4                    # subjects per step; each gives its D slices (same voxels per step as the DiT)
    lr: float = 3e-4
    ema_decay: float = 0.999
    family: str = "ldm"               # mask-to-image stage 2: ddpm | ldm | flow
    sample_steps: int = runtime(25)   # DDIM / Euler steps at sampling
    n_samples: int = runtime(16)
    amp: str = runtime("auto")        # engine AMP: bf16 where native
    # Pixel-space UNets (ddpm, mask-generator, mask-to-image with family ddpm) use these instead of channels /
    # batch / steps / sample_steps: a tiny slice is 64 x 64 x 16 pixels, 64x the voxels of its latent. At the
    # latent models' sizes ddpm takes 15.5 s/step in bf16 (45 s in fp32, 2 threads, AVX512), ~6.5 h for 1500
    # steps; at these 1.0 s/step (2.7 in fp32), so the tiny notebook 04 fits a CPU. The full profile sets
    # them equal to the latent models' sizes. Tiny: 50 steps and 5 sampling steps, a pipeline check only (at
    # 100 steps the pixel ddpm scored FD 64.7 against the DiT's 8.9: it learns no cine in a CPU budget either way)
    pixel_channels: tuple[int, ...] = (16, 32, 64)
    pixel_batch: int = 1              # subjects per step (ddpm: their D slices; mask-generator: one study each)
    pixel_steps: int = 50
    pixel_sample_steps: int = runtime(5)


@dataclass(frozen=True)
class EvalConfig:
    seg_channels: tuple[int, ...] = (16, 32, 64, 128)
    # tiny, phantom v3 holdout (8 subjects), 1 thread of a shared AVX512 CPU: randomised (plain share 0.5)
    # 1600 steps -> Dice 0.921, 3200 -> 0.935 (RV 0.928 / MYO 0.912 / LV 0.966) in 389 s CPU; plain 800 -> 0.904
    seg_steps: int = 3200
    seg_batch: int = 16
    # SynthSeg-style domain randomisation (data/randomise.py, batched: ~0.05 s of a 0.15 s step) of the training
    # frames, meant for transfer to real cines; --set eval.seg_randomise=false gives the plain segmenter
    # (gain/offset jitter only, no warp) for comparison
    seg_randomise: bool = True
    seg_plain_share: float = 0.5      # frames kept at the cache's contrast (warped only): the holdout Dice needs them
    feature_steps: int = 600          # training steps of cardiolab's own feature evaluator
    feature_dim: int = 64
    feature_batch: int = 8            # cines per contrastive step (x3 views)
    utility_seeds: int = runtime(1)   # 1: 95 % intervals by bootstrap over test subjects (CPU budget); each
                                      # seed is its own segmenter run


@dataclass(frozen=True)
class CopyDetectorConfig:
    """The copy detector of the privacy audits (cardiolab.tasks.copy_detector): NT-Xent on whole cines."""
    # tiny: 600 steps (~4 min on 2 cores), the steps of the leave-one-family-out detectors that notebook 07's
    # family table reports (benchmarks/README.md), so the notebook's detector is the one that table measured and
    # notebook 07 fits its 20 minutes. An older detector on three `audit plant` cohorts (32 copies + 32 fresh each,
    # tau at p5 on 59 references, 1 thread of a shared AVX512 CPU): 600 steps -> recall 93.8 / 96.9 / 93.8 %, FPR
    # 3.1 / 0.0 / 6.3 %; 1200 -> recall 100 / 96.9 / 96.9 %, FPR 6.3 / 3.1 / 9.4 %. About 2 % of fresh phantoms lie
    # as near a training subject as shifted copies do (distance 0.03-0.05): hence the 90 %-confidence rank
    # (privacy.copies) and enough fresh phantoms to measure an FPR of a few % (below).
    steps: int = 600
    batch: int = 8                    # cines per step (x2 views): 14 negatives per pair
    dim: int = 64                     # embedding size the audit compares in
    # `audit copies` on phantom data: fresh phantoms (seed 8) that join the holdout split to calibrate tau.
    # 8 holdout + 142 = 150 references: tau = the 4th smallest reference DCR, FPR <= 5 % with 90 % confidence
    # (2.6 % on average). 59 references allow only the smallest one (k = 1), whose spread moves tau a lot.
    calibration: int = runtime(142)
    # `audit plant` (default --n-fresh): fresh phantoms beside the copies; 128 measure an FPR of 3 % to +-1.5 %
    # (tiny: the same 128 as the membership audits' mia.fresh and dp.audit_fresh, one cached set made once)
    fresh: int = runtime(128)
    # the canary DiT of notebook 07 (`canaries.ensure_canary_dit`: a DiT trained on latents with planted canaries,
    # audited halfway and at the end); 0 = dit.steps. Tiny: 600, not the DiT's 1500 (~140 s instead of ~350 s on
    # 2 cores): at 1500 steps it copied no canary either (recall 0 %), so the longer run showed nothing more
    canary_steps: int = runtime(600)


@dataclass(frozen=True)
class LandmarksConfig:
    """The RVIP detector (cardiolab.models.landmarks / tasks.landmarks); checked by LandmarkConfig."""
    channels: tuple[int, ...] = (16, 32, 64, 128)
    sigma_mm: float = 4.5             # target sigma (Gaussian) or radius (disc): 1.5 px at the tiny cache's 3 mm
    target: str = "gaussian"          # gaussian | disc
    loss: str = "mse"                 # mse | bce_dice (the seed paper's; on a smoke cache its peaks stayed below
                                      # the threshold after 300 steps, when foreground-weighted MSE found points)
    decoder: str = runtime("argmax")  # argmax | soft_argmax | component: decoding only
    threshold: float = runtime(0.3)   # peak below which a point is "missing": decoding only
    temporal_context: int = 0         # 0: 2D per frame; k: frames t-k..t+k as channels (2D+t)
    augment: bool = True              # rotation, scaling, shift, elastic, intensity (data/landmark_transforms)
    steps: int = 1500
    cv_steps: int = runtime(500)      # each CV fold's steps (0: `steps`); tiny: 500 keep the holdout median < 2 px
                                      # with >= 90 % found at a third of 1500's time (benchmarks/README.md, "Notebooks
                                      # 08 and 09 at tiny"), so the CV compares the variants cheaply while the main
                                      # detector keeps its 1500 (0.87 px against 1.49 at 500)
    batch: int = 16
    lr: float = 5e-3                  # AdamW peak LR; the engine warms up and cosine-decays it
    folds: int = runtime(2)           # group-stratified CV (`rvip.cross_validate`); 0 = none; tiny: 2 still score
                                      # every subject once per variant at half the runs of the seed paper's 4 (full);
                                      # evaluation only: each fold is its own run, so it never retrains the main one

    def __post_init__(self):
        if self.folds == 1 or self.folds < 0:
            raise CardiolabError(f"landmarks.folds must be 0 (no CV) or >= 2, got {self.folds}")
        if self.cv_steps < 0:
            raise CardiolabError(f"landmarks.cv_steps must be >= 0 (0: landmarks.steps), got {self.cv_steps}")


@dataclass(frozen=True)
class HighresConfig:
    """Whole-heart 3D synthesis after MedLoRD (arXiv 2503.13211): volume phantom -> VQ-GAN -> latent UNet ->
    slim ControlNet on six masks, and a 3D segmenter for adherence. tasks.highres_common reads it.

    Memory switches (amp, checkpointing, code_chunk, decode_window, flash_attention) and sampling fields
    (sample_steps, conditioning_scale, n_samples) never shape weights (declared `runtime`).
    """
    size: tuple[int, int, int] = (64, 64, 32)        # volume X, Y, Z (full: MedLoRD's 512 x 512 x 256); tiny:
                                                     # 64 x 64 x 32 (3 x 3 x 5 mm), 30 min on 2 shared CPU cores with
                                                     # 1500 LDM / ControlNet steps (benchmarks/README.md); at
                                                     # 128 x 128 x 64 latent UNet and ControlNet steps cost ~5x and
                                                     # the segmenter sees 8x the voxels: ~100 min (benchmarks/README.md)
    subjects: int = 24                               # phantom volumes written by `phantom --kind volume`
    holdout: float = 0.25                            # last fraction of subjects: never trained on (masks, real side)
    modality: str = "ct"                             # ct | mr (data/phantom3d.py)
    crop: tuple[int, int, int] = (32, 32, 32)        # VQ-GAN random crops (MedLoRD: 128^3)
    vq_channels: tuple[int, int] = (32, 64)          # two stride-2 levels: /4 per axis (MedLoRD: /4 to 8 channels)
    codes: int = 1024                                # MedLoRD: 16384
    code_dim: int = 8
    ema_decay: float = 0.95                          # MedLoRD's codebook EMA decay
    jukebox_weight: float = 1.0                      # spectral (Jukebox) loss weight (MedLoRD: 1.0; 0: off)
    vq_steps: int = 1500
    vq_lr: float = 4e-4
    unet_channels: tuple[int, ...] = (32, 64, 64, 128)   # MedLoRD: 64, 128, 256, 512
    attention_levels: tuple[bool, ...] = (False, False, True, True)   # attention only at the two lowest levels
    res_blocks: int = 1                              # MONAI default: 2
    train_timesteps: int = 300                       # cosine schedule, v-prediction (MedLoRD)
    ldm_steps: int = 1000                            # tiny: 1000, not 1500, to fit notebook 09 in ~15 min on 2 shared
                                                     # cores (benchmarks/README.md, "Notebooks 08 and 09 at tiny")
    ldm_lr: float = 5e-4                             # also the ControlNet's
    r: float = 0.5                                   # ControlNet width ratio (MedLoRD: 0.5)
    initial_stride: int = 2                          # first mask conv's stride (MedLoRD: 2)
    control_dropout: float = 0.1                     # drop a sample's masks in training (MedLoRD: 0.1)
    cn_steps: int = 1000                             # tiny: as ldm_steps; adherence is what the notebook compares, and
                                                     # conditional vs unconditional stays a like-for-like pair
    seg_channels: tuple[int, ...] = (16, 32, 64, 128)    # MONAI 3D UNet widths of the adherence segmenter
    seg_steps: int = 400
    seg_lr: float = 5e-3
    batch: int = 2                                   # volumes (or crops) per step, every stage
    # memory switches: change peak memory, never the weights
    amp: str = runtime("auto")                       # bf16 where native; the quantizer always runs in fp32
    checkpointing: bool = runtime(False)             # VQ-GAN encoder/decoder and UNet per-block recomputation
    code_chunk: int = runtime(0)                     # codebook search this many vectors at a time (MedLoRD: 1024)
    decode_window: tuple[int, int, int] = runtime((0, 0, 0))  # sliding-window decode, latent window (0: whole)
    flash_attention: bool = runtime(True)            # SDPA attention
    # sampling
    sample_steps: int = runtime(50)                  # DDIM steps
    conditioning_scale: float = runtime(1.0)         # ControlNet residual scale at sampling (0: unconditional)
    n_samples: int = runtime(4)                      # volumes sampled by default (one per holdout mask, cycled)

    def __post_init__(self):
        check_amp(self.amp, "highres.amp")
        if len(self.attention_levels) != len(self.unet_channels):
            raise CardiolabError(f"profiles.py: highres.attention_levels {self.attention_levels} needs one entry "
                                 f"per width in highres.unet_channels {self.unet_channels}")
