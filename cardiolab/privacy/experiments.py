"""The DP fine-tuning experiment of notebook 06: a private phantom cohort, a grid of (epsilon, init) runs,
their privacy, cost and quality on the private holdout.

Public side: the profile's own VQ-GAN and DiT (they never saw the private cohort). Private side: a second
phantom cohort (`phantom --seed 1`), prepared and encoded with the public VQ-GAN and the public DiT's latent
scale (`encode --scale-from`). Each grid point is a `dit-dp` run (epsilon = inf: the non-private fine-tuning
reference of the same code path); its samples are evaluated against the private holdout (FD/KID-cardiolab,
segmenter EF W1). Numbers on the phantom are phantom numbers.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cardiolab.core import RUN_CONFIG, read_json
from cardiolab.evaluation.evaluate import evaluate
from cardiolab.metrics import privacy as mia
from cardiolab.privacy.cohorts import encode_latents, phantom_cohort
from cardiolab.privacy.membership import audit_mia
from cardiolab.profiles import Profile, override
from cardiolab.tasks import dit, dp as task, segmenter, vqgan
from cardiolab.tasks.dp import PRIVATE_LATENTS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setting:
    epsilon: float            # math.inf: non-private fine-tuning
    init: str = "pre-trained"  # 'pre-trained' (the profile's public DiT) or 'scratch'
    params: str = "all"       # dp.params: all | attention

    @property
    def name(self) -> str:
        eps = "inf" if math.isinf(self.epsilon) else f"{self.epsilon:g}"
        return f"dit-dp-eps{eps}-{self.init}" + ("" if self.params == "all" else f"-{self.params}")


def private_cohort(profile: Profile, subjects: int | None = None, seed: int = 1) -> dict:
    """The private cohort, its cache and its latents (made if missing); returns {"root", "cache", "latents",
    "public_dit"}. The phantom's: a second phantom cohort, data/phantom/<profile>-private, its cache
    data/cache/<profile>-private; another data source's: its own private split (the public VQ-GAN and DiT trained
    on its public split, `datasets.generator_splits`), evaluated on its holdout. Latents in runs/<profile>/lat-priv.

    The latents use the public VQ-GAN and record the public DiT's scale (no statistic of the private subjects).
    subjects: phantom cohort size (default profile.dp.private_subjects); a cohort of another size or seed is remade.
    """
    public_dit = dit.ensure(profile)
    latents = profile.run(PRIVATE_LATENTS)
    if profile.data_source is not None:       # a real source: its private split, beside its holdout
        made, splits = {"root": profile.data_root, "cache": profile.cache_dir}, ("private",)
    else:
        made = phantom_cohort(profile, "private", subjects or profile.dp.private_subjects, seed, (latents,))
        splits = None
    encode_latents(made, vqgan.ensure(profile), public_dit, latents, splits)
    return {**made, "latents": latents, "public_dit": public_dit}


def run_setting(profile: Profile, setting: Setting, private: dict, steps: int, seed: int = 0,
                out: str | Path | None = None) -> dict:
    """Train one grid point (dit-dp on private["latents"]); returns {"run", "seconds", "s_per_step"} (wall time
    of the whole `train` call: setup, sigma search and privacy.json included)."""
    profile = override(profile, [f"dp.epsilon={setting.epsilon}", f"dp.params={setting.params}"])
    out = Path(out) if out is not None else profile.run(setting.name)
    init = private["public_dit"] if setting.init == "pre-trained" else "none"
    t0 = time.perf_counter()
    run = task.train(profile, out=out, steps=steps, seed=seed, latents=private["latents"], init=init)
    seconds = time.perf_counter() - t0
    return {"run": run, "seconds": seconds, "s_per_step": seconds / steps}


def evaluate_setting(profile: Profile, run: str | Path, private: dict, n: int, sample_steps: int,
                     seed: int = 0, seg_model=None, labels: bool = True) -> dict:
    """Sample n studies from a grid run and evaluate them against the private holdout: FD/KID-cardiolab and, with
    labels, the segmenter EF W1 (all groups pooled). Returns {"cohort", "FD-cardiolab", "KID-cardiolab", "EF_W1"}."""
    run = Path(run)
    cohort = task.sample_cohort(run, n, sample_steps, seed, profile.samples(run.name),
                                cond="from-training-distribution")
    res = evaluate(cohort, real=private["cache"], profile=profile, split="holdout", labels=labels, name=run.name,
                   seg_model=seg_model)
    ef = [r["w1"] for r in (res.get("function") or []) if r.get("group") == "all" and r.get("metric") == "EF"]
    return {"cohort": cohort, "FD-cardiolab": res["fidelity"]["FD-cardiolab"],
            "KID-cardiolab": res["fidelity"]["KID-cardiolab"], "EF_W1": ef[0] if ef else float("nan")}


def run_grid(profile: Profile, settings=None, steps: int | None = None,
             n_samples: int | None = None, sample_steps: int | None = None, subjects: int | None = None, seed: int = 0,
             labels: bool = True, seg_model=None) -> pd.DataFrame:
    """The whole experiment: one row per setting with setting, epsilon, init, params, sigma, epsilon_rdp,
    epsilon_prv, delta, s_per_step, FD-cardiolab, KID-cardiolab, EF_W1, run (None where not private).
    settings: default the profile's (epsilon = inf and dp.epsilons pre-trained, 10 from scratch; `settings_from`)."""
    settings = settings or settings_from((math.inf, *profile.dp.epsilons))
    private = private_cohort(profile, subjects)
    steps = int(steps or profile.dp.steps)
    defaults = dit.sample_defaults(profile)
    n_samples, sample_steps = n_samples or defaults["n"], sample_steps or defaults["steps"]
    if labels and seg_model is None:
        seg_model = segmenter.ensure_model(profile)
    rows = []
    for s in settings:
        trained = run_setting(profile, s, private, steps, seed)
        run = trained["run"]
        conf = read_json(run / RUN_CONFIG)
        privacy = read_json(run / "privacy.json") if (run / "privacy.json").exists() else None
        quality = evaluate_setting(profile, run, private, n_samples, sample_steps, seed, seg_model, labels)
        rows.append({"setting": s.name, "epsilon": s.epsilon, "init": s.init, "params": s.params,
                     "sigma": conf.get("noise_multiplier", 0.0),
                     "epsilon_rdp": privacy["epsilon"]["rdp"] if privacy else math.inf,
                     "epsilon_prv": privacy["epsilon"]["prv"] if privacy else math.inf,
                     "delta": privacy["delta"] if privacy else None, "s_per_step": trained["s_per_step"],
                     **{k: quality[k] for k in ("FD-cardiolab", "KID-cardiolab", "EF_W1")}, "run": str(run)})
    return pd.DataFrame(rows)


def settings_from(epsilons=(math.inf, 10.0, 1.0), scratch=(10.0,), attention=()) -> tuple[Setting, ...]:
    """A grid: pre-trained at each epsilon, from scratch at `scratch`, params=attention (pre-trained) at `attention`."""
    return (tuple(Setting(float(e)) for e in epsilons) + tuple(Setting(float(e), "scratch") for e in scratch)
            + tuple(Setting(float(e), params="attention") for e in attention))


LEAKAGE_ATTACKS = ("loss", "calibrated", "lira")   # calibrated: minus the public init's loss (none without an init)


def leakage_table(profile: Profile, table: pd.DataFrame, n_fresh: int | None = None, references: int | None = None,
                  delta: float = 1e-5) -> pd.DataFrame:
    """Membership inference against every run of a `run_grid` table (`audit mia`, each run with its own samples):
    one row per (setting, attack: loss, calibrated, LiRA with `references` reference models) with epsilon, AUC and its
    bootstrap 95 % interval, TPR at 1 % FPR with its Clopper-Pearson interval (NaN with fewer than 100 non-members),
    and the epsilon those intervals prove (`mia.dp_bound_check` at `delta`; for a DP run at its own delta): what an
    attack shows, beside the accountant's epsilon it must stay under.
    n_fresh, references: default dp.audit_fresh and dp.audit_references on phantom data (`audit_mia`'s own rule on
    a real source: none)."""
    if profile.data_source is None:
        n_fresh = profile.dp.audit_fresh if n_fresh is None else n_fresh
        references = profile.dp.audit_references if references is None else references
    rows = []
    for _, row in table.iterrows():
        r = audit_mia(row["run"], profile, n_fresh=n_fresh, references=references)
        d = (r.get("dp") or {}).get("delta", delta)
        for attack in LEAKAGE_ATTACKS:
            if attack not in r["attacks"]:
                continue
            a = r["attacks"][attack]
            point = a["operating_points_ci95"].get("1%")
            tpr, (lo, hi) = (point["tpr"], point["tpr_ci"]) if isinstance(point, dict) else (np.nan, (np.nan, np.nan))
            rows.append({"setting": row["setting"], "epsilon": row["epsilon"], "init": row["init"], "attack": attack,
                         "AUC": a["auc"], "AUC lo": a["auc_ci95"][0], "AUC hi": a["auc_ci95"][1],
                         "TPR@1%": tpr, "TPR@1% lo": lo, "TPR@1% hi": hi,
                         "eps lower bound": mia.dp_bound_check(a["operating_points_ci95"], 0.0, d)["epsilon_lower_bound"],
                         "members": r["n_members"], "non-members": r["n_nonmembers"]})
    return pd.DataFrame(rows)
