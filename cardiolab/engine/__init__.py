"""The one training loop every cardiolab model uses (VQ-GAN, DiT, segmenter, evaluator, DP fine-tuning).

A model contributes a `step_fn(batch, step, trainer) -> dict of floats` that computes its losses under
`trainer.autocast()` and calls `trainer.backward(loss, name)` once per optimizer. The engine owns
everything else: devices, DDP, AMP, clipping, the LR schedule, EMA, logging, atomic checkpoints and resume.

Precision: amp="auto" on a CPU with native bf16 runs the model's first step in fp32 and bf16 (no update) and keeps
bf16 only where it is finite, agrees with fp32 and is not slower (`engine.precision.settle_precision`); config.json says
which and why. Never silent: the first non-finite loss or gradient norm stops the run with one line and exit code
1, its last checkpoint kept.

Determinism: the data order and every random draw are functions of (seed, step, rank) only: each step
re-seeds the RNGs, and the batch of step k is the k-th chunk of a stream of seeded permutations. So a run
that is killed and resumed from its last checkpoint ends with weights bit-identical (on CPU) to one that
was never interrupted, and there is no RNG state to restore.

Opacus (DP-SGD; `cardiolab.dp.mechanism.make_private` builds the pieces): pass the GradSampleModule as the
module, the DPOptimizer as its optimizer, its accountant as `accountant` and the Poisson DataLoader as `data`.
Then one engine step is one Poisson batch of the loader's dataset at its `sample_rate` (not drawn by replaying
the loader), fed to step_fn in chunks of cfg.physical_batch samples as Opacus's BatchMemoryManager does
(`signal_skip_step`); an empty batch is a noise-only step. Release mode (the default): the Poisson mask, the
noise and step_fn's own draws (diffusion timesteps and noise, label dropout) come from the OS's cryptographic
source (os.urandom / secrets), fresh at every step and never stored, so knowing the seed, the code and every other
record does not let anyone replay the run; the DP guarantee needs exactly that secrecy (a public stream of loss
draws would also tie each record's draw to its place in the secret batch, so one record could move the others').
cfg.dp_replayable draws all of them from (seed, step) instead (tests, teaching: not a release).
Either way the accountant's history is checkpointed, so kill -9 + resume keeps epsilon identical (and, replayable,
the weights). The engine skips its own clipping (DP-SGD clips per sample), keeps EMA copies free of the Opacus
hooks, computes per-sample gradients and clipping in fp32 (amp=auto resolves to fp32; bf16 per-sample gradients
let a clipped norm exceed C, so the accountant's sensitivity would not hold), refuses DDP, fp16 and bf16, and
returns no per-step statistic of the private batch (loss, batch size) to the log: only DP outputs leave the run.
"""
from cardiolab.engine.determinism import StreamBatchSampler
from cardiolab.engine.dpsgd import poisson_indices
from cardiolab.engine.runs import (CHECKPOINT, METRICS, STATE, ensure_run, kept_checkpoint, kept_checkpoints,
                                   load_checkpoint, read_metrics, recorded_shaping, run_id, run_status,
                                   training_curves)
from cardiolab.engine.trainer import Trainer, TrainConfig, lr_factor
from cardiolab.engine.wrappers import unwrap

__all__ = ["CHECKPOINT", "METRICS", "STATE", "StreamBatchSampler", "TrainConfig", "Trainer", "ensure_run",
           "kept_checkpoint", "kept_checkpoints", "load_checkpoint", "lr_factor", "poisson_indices", "read_metrics",
           "recorded_shaping", "run_id", "run_status", "training_curves", "unwrap"]
