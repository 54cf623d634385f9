"""One-run audit of DP fine-tuning: an empirical epsilon lower bound from canaries of a single `train dit-dp` run.

Steinke, Nasr & Jagielski 2023 ("Privacy auditing with one (1) training run", NeurIPS): m canaries, each kept in
the training set independently with probability 1/2; after one training run an attack guesses, for the canaries it
is surest of, whether each was trained on. A run that is (epsilon, delta)-DP cannot make many more correct guesses
than randomized response at epsilon, so the number of correct guesses bounds epsilon from below
(`mia.one_run_epsilon`, 95 % confidence). The bound is far below the accountant's epsilon for DP-SGD with a
black-box attack on the final model: it says what this attack proves, not how private the run is.

Here the canaries are m of the private training subjects; the ones not drawn for inclusion leave the training set
of the audit run (a separate run: the released model is never the audited one). The attack is the calibrated loss
(the run's denoising loss minus the public init's, `membership.loss_scores`), on the EMA weights as released.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from cardiolab.core import CardiolabError, write_json
from cardiolab.diffusion import DiffusionConfig, create_scheduler
from cardiolab.dp.accounting import read_privacy_json
from cardiolab.metrics import privacy as mia
from cardiolab.privacy.canaries import write_latents
from cardiolab.privacy.membership import T_FRACTIONS, loss_scores
from cardiolab.profiles import Profile, override
from cardiolab.tasks import dit, dp as dp_task, vqgan

KIND = "cardiolab-audit-one-run"
ONE_RUN_JSON = "one-run.json"


def split_canaries(record: dict, m: int, seed: int = 0) -> tuple[dict, dict]:
    """(training record, canaries) of a latents record: m of its training (non-holdout) subjects become canaries,
    each kept in the training record with probability 1/2, the rest removed from it.

    canaries: {"ids": [m], "latents": (m, C, D, h, w, t), "included": (m,) bool array, "seed"}.
    """
    splits = dict(record["splits"])
    train = [i for i, sid in enumerate(record["ids"]) if splits.get(sid) != "holdout"]
    if not 2 <= m <= len(train):
        raise CardiolabError(f"--canaries {m}: need 2 <= m <= {len(train)} training subjects")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(train, size=m, replace=False))
    included = rng.random(m) < 0.5
    drop = set(chosen[~included].tolist())
    keep = [i for i in range(len(record["ids"])) if i not in drop]
    ids = [record["ids"][i] for i in keep]
    kept = {**record, "latents": record["latents"][keep], "cond": record["cond"][keep], "ids": ids,
            "splits": {s: splits[s] for s in ids if s in splits}}
    canaries = {"ids": [record["ids"][i] for i in chosen], "latents": record["latents"][chosen],
                "included": included, "seed": int(seed)}
    return kept, canaries


def audit_one_run(profile: Profile, latents: str | os.PathLike, init: str | os.PathLike,
                  out: str | os.PathLike, m: int | None = None, k: int | None = None, seed: int = 0,
                  steps: int | None = None, confidence: float = 0.95, epsilon: float | None = None) -> dict:
    """Train one dit-dp run (the profile's dp section, release mode) on `latents` with m canaries included at
    random, attack the canaries, and write out/one-run.json.

    latents: the private latents (as `train dit-dp --latents`); init: the public DiT (also the attack's reference).
    m: canaries (default half the training subjects); k: guesses each way, "included" for the k highest scores and
    "excluded" for the k lowest (default m // 4, at least 1); epsilon: the run's target (default the profile's
    dp.epsilon).
    Writes out/latents/ (the audit run's training set) and out/run/.
    Returns the JSON: {kind, run, m, k, guesses, correct, epsilon_lower_bound, confidence, epsilon, delta,
    accountant, canaries: [{id, included, score}]}.
    """
    out = Path(out)
    if epsilon is not None:
        profile = override(profile, [f"dp.epsilon={epsilon}"])
    record = vqgan.load_latents(latents)
    n_train = sum(dict(record["splits"]).get(s) != "holdout" for s in record["ids"])
    m = int(m if m is not None else n_train // 2)
    k = int(k if k is not None else max(1, m // 4))     # a small private split still gets one guess each way
    if not 1 <= 2 * k <= m:
        raise CardiolabError(f"--guesses {k}: need 1 <= 2 k <= m = {m}")
    kept, canaries = split_canaries(record, m, seed)
    write_latents(kept, out / "latents")
    run = dp_task.train(profile, out=out / "run", latents=out / "latents", init=init, steps=steps)
    privacy = read_privacy_json(run)
    model, conf = dit.load(run)
    reference, _ = dit.load(init)
    dcfg = DiffusionConfig(**conf["diffusion"])
    sch = create_scheduler(dcfg)
    T = dcfg.train_timesteps
    t_steps = sorted({min(T - 1, max(1, round(f * T))) for f in T_FRACTIONS})
    z = canaries["latents"].float() * float(conf["scale"])
    with torch.no_grad():
        scores = -(loss_scores(model, sch, z, canaries["ids"], t_steps, dcfg.loss)
                   - loss_scores(reference, sch, z, canaries["ids"], t_steps, dcfg.loss))
    audit = mia.one_run_epsilon(scores, canaries["included"], k, k, float(privacy["delta"]), confidence)
    acc = privacy["accountant"]
    result = {"kind": KIND, "run": str(run), "m": m, "k": k, **audit, "confidence": confidence,
              "epsilon": float(privacy["epsilon"][acc]), "delta": float(privacy["delta"]), "accountant": acc,
              "release": privacy.get("release"), "inclusion_seed": canaries["seed"],
              "canaries": [{"id": i, "included": bool(inc), "score": float(s)}
                           for i, inc, s in zip(canaries["ids"], canaries["included"], scores)]}
    write_json(out / ONE_RUN_JSON, result)
    return result
