"""The three run profiles (smoke / tiny / full): the only place sizes, steps and cohort sizes live.

smoke: seconds per notebook on 2 CPU cores, for CI and nbval. Numbers it prints mean nothing.
tiny:  the CPU default for `make reproduce`; minutes per model on 2 cores, real (small) results.
full:  the paper's shapes (CardioDiT: 6 slices of 256x256x32 cines -> 8x64x64x8 latents), for a GPU.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from cardiolab.core import (RUN_CONFIG, CardiolabError, check_amp, fingerprint, from_record, project_root, read_json,
                            to_record)

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
    steps: int = 8000                 # 48 x 48 crops, 1 core beside another job, native bf16: 31 min (full slices: 52)
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
    batch: int = 16                   # expected Poisson batch: q = 1/ceil(N/batch)
    physical_batch: int = 8           # samples per forward/backward (per-sample gradients cost memory)
    steps: int = 300
    lr: float = 1e-4                  # fine-tuning from pre-trained weights: DiT's LR
    accountant: str = "prv"           # prv (tight, Gopi et al.) or rdp; both are recorded in privacy.json
    params: str = "all"               # all | attention (qkv/proj, adaLN, attribute embeddings; the rest frozen)
    private_subjects: int = 150       # the private phantom cohort of the experiments (phantom seed 1; notebook 06)
    # False (release): Poisson masks and noise from the OS's secret source, never stored. True: from (seed, step),
    # bit-exact replay for tests and teaching; privacy.json then says release: false and export refuses to call it DP.
    replayable: bool = False


@dataclass(frozen=True)
class MIAConfig:
    """Membership-inference audits (`audit mia`, cardiolab.privacy.membership): audit settings, runtime for every
    registered model; the LiRA reference models name theirs in their folders (runs/<p>/lira/<task>-<init>-n<subjects>
    -s<steps>), so a change trains new ones beside the old."""
    # fresh phantoms (phantom seed 7, never trained on) among the non-members: a TPR at 1 % FPR needs >= 100
    # non-members, and 1000 bound the FPR of 0 false positives by 0.37 % (Clopper-Pearson 95 %)
    fresh: int = runtime(1000)
    references: int = runtime(4)          # LiRA OUT reference models (>= 4: Carlini et al. 2022); 0 skips LiRA
    reference_subjects: int = runtime(40)  # shadow phantoms per reference (phantom seed 100 + k), as the public cohort
    reference_steps: int = runtime(150)   # each reference's steps: half the tiny DP fine-tune, ~2 CPU-min each


@dataclass(frozen=True)
class BaselinesConfig:
    # The slice-wise UNet baselines (ddpm, ldm, flow, mask models). The factorized and channel-merged DiTs
    # use the dit section instead, so they match CardioDiT in size, steps, batch and sampler.
    channels: tuple[int, ...] = (32, 64, 64)  # SliceUNet widths; attention at the last level only
    train_timesteps: int = 300        # as the DiT: cosine schedule, v-prediction (flow: its own ODE time)
    steps: int = 1500                 # as the DiT's tiny run
    batch: int = 4                    # subjects per step; each gives its D slices (same voxels per step as the DiT)
    lr: float = 3e-4
    ema_decay: float = 0.999
    family: str = "ldm"               # mask-to-image stage 2: ddpm | ldm | flow
    sample_steps: int = runtime(50)   # DDIM / Euler steps at sampling
    n_samples: int = runtime(16)
    amp: str = runtime("auto")        # engine AMP: bf16 where native
    # Pixel-space UNets (ddpm, mask-generator, mask-to-image with family ddpm) use these instead of channels /
    # batch / steps / sample_steps: a tiny slice is 64 x 64 x 16 pixels, 64x the voxels of its latent. At the
    # latent models' sizes ddpm takes 15.5 s/step in bf16 (45 s in fp32, 2 threads, AVX512), ~6.5 h for 1500
    # steps; at these 1.0 s/step (2.7 in fp32), so the tiny notebook 04 fits a CPU. The full profile sets
    # them equal to the latent models' sizes.
    pixel_channels: tuple[int, ...] = (16, 32, 64)
    pixel_batch: int = 1              # subjects per step (ddpm: their D slices; mask-generator: one study each)
    pixel_steps: int = 600
    pixel_sample_steps: int = runtime(25)


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
    # tiny, three `audit plant` cohorts (32 copies + 32 fresh phantoms each; plant seeds 0, 1, 2, fresh seeds 7, 9,
    # 10), tau at p5 on 59 references (average rank), one detector each, 1 thread of a shared AVX512 CPU (/tmp run,
    # wave 2 stop 20): 600 steps -> recall 93.8 / 96.9 / 93.8 %, FPR 3.1 / 0.0 / 6.3 % (AUC 0.984-0.998);
    # 1200 -> recall 100 / 96.9 / 96.9 %, FPR 6.3 / 3.1 / 9.4 % (AUC 0.992-0.998). ~10 CPU-min. About 2 % of fresh
    # phantoms lie as near a training subject as shifted copies do (distance 0.03-0.05): hence the 90 %-confidence
    # rank (privacy.copies) and enough fresh phantoms to measure an FPR of a few % (below). With both (stop 21,
    # 150 references, 128 fresh per cohort, the same 1200-step detector): recall 100 / 96.9 / 96.9 %, FPR 3.1 /
    # 1.6 / 4.7 %.
    steps: int = 1200
    batch: int = 8                    # cines per step (x2 views): 14 negatives per pair
    dim: int = 64                     # embedding size the audit compares in
    # `audit copies` on phantom data: fresh phantoms (seed 8) that join the holdout split to calibrate tau.
    # 8 holdout + 142 = 150 references: tau = the 4th smallest reference DCR, FPR <= 5 % with 90 % confidence
    # (2.6 % on average). 59 references allow only the smallest one (k = 1), whose spread moves tau a lot.
    calibration: int = runtime(142)
    # `audit plant` (default --n-fresh): fresh phantoms beside the copies; 128 measure an FPR of 3 % to +-1.5 %
    fresh: int = runtime(128)


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
    batch: int = 16
    lr: float = 5e-3                  # AdamW peak LR; the engine warms up and cosine-decays it
    folds: int = runtime(4)           # group-stratified CV (`rvip.cross_validate`), as the seed paper; 0 = none;
                                      # evaluation only: each fold is its own run, so it never retrains the main one

    def __post_init__(self):
        if self.folds == 1 or self.folds < 0:
            raise CardiolabError(f"landmarks.folds must be 0 (no CV) or >= 2, got {self.folds}")


@dataclass(frozen=True)
class HighresConfig:
    """Whole-heart 3D synthesis after MedLoRD (arXiv 2503.13211): volume phantom -> VQ-GAN -> latent UNet ->
    slim ControlNet on six masks, and a 3D segmenter for adherence. tasks.highres_common reads it.

    Memory switches (amp, checkpointing, code_chunk, decode_window, flash_attention) and sampling fields
    (sample_steps, conditioning_scale, n_samples) never shape weights (declared `runtime`).
    """
    size: tuple[int, int, int] = (64, 64, 32)        # volume X, Y, Z (full: MedLoRD's 512 x 512 x 256); tiny:
                                                     # 64 x 64 x 32 (3 x 3 x 5 mm), 30 min on 2 shared CPU cores; at
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
    ldm_steps: int = 1500
    ldm_lr: float = 5e-4                             # also the ControlNet's
    r: float = 0.5                                   # ControlNet width ratio (MedLoRD: 0.5)
    initial_stride: int = 2                          # first mask conv's stride (MedLoRD: 2)
    control_dropout: float = 0.1                     # drop a sample's masks in training (MedLoRD: 0.1)
    cn_steps: int = 1500
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


AUDIT_DIR = "audit"               # the audits' folder in a profile's runs (`Profile.audit_dir`)


@dataclass(frozen=True)
class Profile:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    vqgan: VQGANConfig = field(default_factory=VQGANConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    dp: DPConfig = field(default_factory=DPConfig)
    mia: MIAConfig = field(default_factory=MIAConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    landmarks: LandmarksConfig = field(default_factory=LandmarksConfig)
    copydetector: CopyDetectorConfig = field(default_factory=CopyDetectorConfig)
    highres: HighresConfig = field(default_factory=HighresConfig)
    device: str = runtime("auto")
    num_workers: int = runtime(0)
    # The root's data source (`with_data`): a cohort folder as records name it (`core.to_record`); None = the
    # embedded phantom. A source shapes every model trained on it (`data_shaping`) and has its own cache.
    data_source: str | None = None
    data_layout: str = "acdc"         # the source's layout: acdc | mnms (the phantom is written as acdc)

    # Where this profile's files live (all git-ignored).
    @property
    def phantom_dir(self) -> Path:
        return project_root() / "data" / "phantom" / self.name

    @property
    def volume_dir(self) -> Path:
        """The whole-heart 3D phantom cohort (volume layout): data/phantom/<profile>-volume."""
        return project_root() / "data" / "phantom" / f"{self.name}-volume"

    @property
    def cache_dir(self) -> Path:
        """The prepared cache of the profile's data source: data/cache/<profile> for the phantom,
        data/cache/<profile>-<folder name>-<id> for another source (`source_key`), so one never overwrites the other."""
        base = project_root() / "data" / "cache"
        if self.data_source is None:
            return base / self.name
        return base / f"{self.name}-{source_key(self.data_source, self.data_layout)}"

    @property
    def data_root(self) -> Path:
        """The cohort folder the profile's data comes from: the data source, else the phantom (data/phantom/<profile>)."""
        return from_record(self.data_source) if self.data_source is not None else self.phantom_dir

    def describe_data(self) -> str:
        """One line naming the data source and its cache, for logs, notebooks and reports."""
        source = (f"{self.data_layout} cohort {self.data_root}" if self.data_source is not None
                  else f"the embedded phantom ({self.phantom_dir})")
        return f"data: {source} -> cache {self.cache_dir}"

    @property
    def run_dir(self) -> Path:
        return project_root() / "runs" / self.name

    def run(self, name: str) -> Path:
        """The run folder of a model (runs/<profile>/<name>)."""
        return self.run_dir / name

    @property
    def samples_dir(self) -> Path:
        return self.run_dir / "samples"

    def samples(self, name: str) -> Path:
        """The synthetic cohort a generator writes (runs/<profile>/samples/<name>)."""
        return self.samples_dir / name

    @property
    def eval_dir(self) -> Path:
        return self.run_dir / "eval"

    @property
    def figures_dir(self) -> Path:
        return self.run_dir / "figures"

    @property
    def audit_dir(self) -> Path:
        """The privacy audits and their card (runs/<profile>/audit)."""
        return self.run_dir / AUDIT_DIR

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        data=DataConfig(phantom_subjects=10, phantom_size=64, phantom_spacing=3.0, phantom_slices=6,
                        phantom_frames=12, image_size=32, spacing=6.0, slices=4, frames=8),
        vqgan=VQGANConfig(channels=(8, 16), codes=64, code_dim=4, steps=20, batch=4, disc_start=10),
        dit=DiTConfig(hidden=32, depth=2, heads=2, patch=(1, 2, 2, 2), steps=40, batch=4, lr=1e-3,
                      sample_steps=5, n_samples=4),
        dp=DPConfig(batch=4, physical_batch=2, steps=10, lr=1e-3, private_subjects=20),
        mia=MIAConfig(fresh=8, references=4, reference_subjects=6, reference_steps=10),
        baselines=BaselinesConfig(channels=(8, 16), steps=4, batch=2, lr=1e-3, sample_steps=3, n_samples=2,
                                  pixel_channels=(8, 16), pixel_batch=2, pixel_steps=4, pixel_sample_steps=3),
        # smoke: no domain randomisation: 20 steps only check that things run, and plain frames learn faster
        eval=EvalConfig(seg_channels=(8, 16, 32), seg_steps=20, seg_batch=8, seg_randomise=False, feature_steps=20,
                        feature_dim=16, utility_seeds=2),
        landmarks=LandmarksConfig(channels=(8, 16, 32), sigma_mm=9.0, steps=20, batch=8, lr=1e-2, folds=2),
        copydetector=CopyDetectorConfig(steps=6, batch=4, dim=16, calibration=44, fresh=4),
        highres=HighresConfig(size=(32, 32, 16), subjects=6, holdout=0.34, crop=(32, 32, 16), vq_channels=(8, 16),
                              codes=64, code_dim=4, vq_steps=10, vq_lr=1e-3, unet_channels=(16, 32, 32),
                              attention_levels=(False, True, True), ldm_steps=6, ldm_lr=1e-3, cn_steps=6,
                              seg_channels=(8, 16, 32), seg_steps=10, seg_lr=1e-2, batch=2, sample_steps=3,
                              n_samples=2),
    ),
    "tiny": Profile(name="tiny"),
    "full": Profile(
        name="full",
        data=DataConfig(phantom_subjects=200, phantom_size=256, phantom_spacing=1.25, phantom_slices=10,
                        phantom_frames=30, image_size=256, spacing=1.25, slices=6, frames=32),
        # CardioDiT's stage-1 config: widths (128, 256), 2 residual layers, 16384 x 8 codes, LR 5e-5,
        # adversarial weight 0.005 (its 0.002 x LPIPS-squeeze perceptual term needs downloaded weights: none here);
        # its losses and whole slices: no MSE term, no augmentation, no crops (tiny gains, unmeasured at this size)
        vqgan=VQGANConfig(channels=(128, 256), res_blocks=2, codes=16384, code_dim=8, steps=50_000,
                          batch=8, lr=5e-5, disc_start=10_000, disc_weight=0.005, mse_weight=0.0, augment=False,
                          crop=(0, 0, 0)),
        dit=DiTConfig(hidden=768, depth=8, heads=12, patch=(1, 4, 4, 2), steps=200_000, batch=4, lr=1e-4,
                      n_samples=64),
        dp=DPConfig(delta=1e-5, batch=64, physical_batch=16, steps=5000, private_subjects=1000),
        baselines=BaselinesConfig(channels=(64, 128, 256), steps=200_000, batch=4, lr=1e-4, n_samples=64,
                                  pixel_channels=(64, 128, 256), pixel_batch=4, pixel_steps=200_000,
                                  pixel_sample_steps=50),
        eval=EvalConfig(seg_steps=20_000, seg_batch=32, feature_steps=10_000, feature_dim=128, utility_seeds=5),
        landmarks=LandmarksConfig(sigma_mm=3.0, steps=20_000, batch=32, lr=1e-3),
        copydetector=CopyDetectorConfig(steps=5000, batch=32, dim=128, calibration=142),
        # MedLoRD's shapes on one GPU: 512x512x256 CT, 128^3 crops, 16384 x 8 codes, widths 64..512
        highres=HighresConfig(size=(512, 512, 256), subjects=100, holdout=0.2, crop=(128, 128, 128),
                              vq_channels=(64, 128), codes=16384, code_dim=8, vq_steps=100_000, vq_lr=1e-4,
                              unet_channels=(64, 128, 256, 512), res_blocks=2, ldm_steps=200_000, ldm_lr=1e-4,
                              cn_steps=50_000, seg_channels=(32, 64, 128, 256), seg_steps=20_000, batch=1,
                              checkpointing=True, code_chunk=1024, decode_window=(64, 64, 32), n_samples=16),
    ),
}


DATA_ENV, LAYOUT_ENV = "CARDIOLAB_DATA", "CARDIOLAB_LAYOUT"   # the root's data source when no --data is given
LAYOUTS = ("acdc", "mnms")


def source_key(source: str, layout: str) -> str:
    """The cache-folder suffix of a data source: its folder name (letters, digits, - and _) and a short id of the
    recorded path and layout, e.g. "ACDC-3f2a9c1b": two folders of one name never share a cache."""
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(source).name).strip("-") or "data"
    return f"{name}-{fingerprint({'source': source, 'layout': layout})[:8]}"


def with_data(profile: Profile, data: str | os.PathLike | None = None, layout: str | None = None) -> Profile:
    """`profile` reading the cohort folder `data` in `layout` (acdc | mnms) instead of the phantom.

    data None: $CARDIOLAB_DATA (and $CARDIOLAB_LAYOUT), else the profile as it is (the phantom by default).
    layout None: $CARDIOLAB_LAYOUT, else acdc. The folder is recorded relative to the root when under it.
    """
    if data is None or str(data) == "":
        data = os.environ.get(DATA_ENV) or None
        layout = layout or os.environ.get(LAYOUT_ENV) or None
    if data is None:
        return profile
    layout = layout or "acdc"
    if layout not in LAYOUTS:
        raise CardiolabError(f"--layout {layout!r} (or ${LAYOUT_ENV}): choose one of {', '.join(LAYOUTS)}")
    path = Path(data).expanduser()
    if not path.is_dir():
        raise CardiolabError(f"{path}: no such data folder (--data / ${DATA_ENV})")
    return dataclasses.replace(profile, data_source=to_record(path), data_layout=layout)


def data_shaping(profile: Profile, cache: str | os.PathLike | None = None) -> dict:
    """The part of a run's shaping that names its training data: the profile's data settings, its data source
    when not the phantom, plus the cache folder when it is not the profile's own (a run on another cohort never
    passes for the profile's run)."""
    out = {"data": shaping_fields(profile.data)}
    if profile.data_source is not None:
        out["source"] = {"root": profile.data_source, "layout": profile.data_layout}
    if cache is not None and Path(cache).resolve() != profile.cache_dir.resolve():
        out["cache"] = to_record(cache)       # relative to the root: a copied root keeps its runs current
    return out


def get_profile(name: Profile | str | None = None) -> Profile:
    """Look a profile up by name; None reads $CARDIOLAB_PROFILE (default 'tiny'); a Profile is returned as is.

    A profile looked up by name reads the root's data source from $CARDIOLAB_DATA when set (`with_data`)."""
    if isinstance(name, Profile):
        return name
    name = name or os.environ.get("CARDIOLAB_PROFILE", "tiny")
    try:
        return with_data(PROFILES[name])
    except KeyError:
        raise CardiolabError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}") from None


# ---- a run's profile: resolved once (CLI, notebook parameters), recorded with the run -------------------------
PROFILE_KEY = "resolved_profile"   # a run's config entry: the whole profile it was trained with (`--set` included)


def profile_record(profile: Profile) -> dict:
    """What a run records of its profile: the name and the resolved settings (`run_profile` reads them back)."""
    return {"profile": profile.name, PROFILE_KEY: profile.to_dict()}


def run_profile(run: str | os.PathLike | dict) -> Profile:
    """The profile a run was trained with, as resolved then (`--set`, data source): from its config (a dict or the
    run folder's config.json). A run recorded before runs kept their profile is looked up by its profile's name."""
    conf = run if isinstance(run, dict) else read_json(Path(run) / RUN_CONFIG)
    if isinstance(conf.get(PROFILE_KEY), dict):
        return profile_from_dict(conf[PROFILE_KEY])
    return get_profile(conf.get("profile"))


def profile_from_dict(d: dict) -> Profile:
    """The Profile of `Profile.to_dict()` (JSON lists back to tuples); a field this version does not know is
    ignored and one the record lacks keeps its default, so older records still load."""
    base = PROFILES.get(d.get("name"), PROFILES["tiny"])
    values = {}
    for f in dataclasses.fields(Profile):
        if f.name not in d:
            continue
        default = getattr(base, f.name)
        if dataclasses.is_dataclass(default):
            known = {g.name: getattr(default, g.name) for g in dataclasses.fields(default)}
            values[f.name] = dataclasses.replace(default, **{k: tuple(v) if isinstance(known[k], tuple) else v
                                                             for k, v in d[f.name].items() if k in known})
        else:
            values[f.name] = d[f.name]
    return dataclasses.replace(base, **values)


def override(profile: Profile, assignments: list[str]) -> Profile:
    """A copy of `profile` with "section.field=value" assignments applied, e.g. "vqgan.steps=6000".

    Values are parsed by the field's current type; tuples take comma-separated items ("vqgan.channels=32,128").
    """
    sections = [f.name for f in dataclasses.fields(profile) if dataclasses.is_dataclass(getattr(profile, f.name))]
    for item in assignments:
        key, sep, value = item.partition("=")
        section, _, name = key.strip().partition(".")
        if not sep or section not in sections:
            raise CardiolabError(f"--set {item!r}: expected section.field=value, section one of {', '.join(sections)}")
        part = getattr(profile, section)
        fields = [f.name for f in dataclasses.fields(part)]
        if name not in fields:
            raise CardiolabError(f"--set {item!r}: {section} has no field {name!r}; it has {', '.join(fields)}")
        old = getattr(part, name)
        try:
            new = (tuple(_parse(type(old[0]), v) for v in value.split(",")) if isinstance(old, tuple)
                   else _parse(type(old), value))
        except ValueError:
            raise CardiolabError(f"--set {item!r}: {value!r} is not a valid {type(old).__name__}") from None
        profile = dataclasses.replace(profile, **{section: dataclasses.replace(part, **{name: new})})
    return profile


def _parse(kind: type, text: str):
    """One --set value by its field's type; bools from true/false/1/0/yes/no (bool("false") would be True)."""
    if kind is bool:
        if text.lower() not in ("1", "true", "yes", "0", "false", "no"):
            raise ValueError(text)
        return text.lower() in ("1", "true", "yes")
    return kind(text.strip())
