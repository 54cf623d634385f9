"""DP-SGD accounting: (q, sigma, steps, delta) -> epsilon and back, and the privacy.json record of a DP run.

Every number comes from an Opacus accountant fed a one-entry history [(sigma, q, steps)], exactly what a
DPOptimizer on a Poisson loader with a fixed noise multiplier would have logged. `prv` (Gopi et al. 2021,
numerical composition, tight) is the default; `rdp` (Mironov 2017) is the looser, faster bound.

PRV's upper bound is its estimate + eps_error, and Opacus's eps_error is absolute (0.01): at epsilon 0.2 that is
5 % above the tight value. `accountant_epsilon` asks for a relative error instead (PRV_REL_ERROR of a first
estimate, at least PRV_MIN_ERROR), so PRV agrees with Google's PLD to ~0.1 % and stays an upper bound.

Symbols: q = sample rate (expected batch / N), sigma = noise multiplier (noise std / C), C = max_grad_norm.
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from pathlib import Path

import torch

from cardiolab.core import RUN_CONFIG, CardiolabError, fingerprint, from_record, read_json, to_record, write_json
from cardiolab.engine import CHECKPOINT, STATE, load_checkpoint
from cardiolab.io.cohort import samples_record

ACCOUNTANTS = ("prv", "rdp")
PRV_REL_ERROR = 1e-3      # PRV eps_error relative to a first (default-error) estimate of epsilon
PRV_MIN_ERROR = 1e-4      # floor: finer meshes cost seconds per call for no use at epsilon ~0.1
PRIVACY_JSON = "privacy.json"
# Keys every privacy.json holds (see write_privacy_json for their meaning).
PRIVACY_KEYS = ("max_grad_norm", "noise_multiplier", "sample_rate", "steps", "delta", "epsilon", "accountant",
                "trained_parameters", "n_subjects", "init_run", "vqgan_run", "unit_of_privacy", "release",
                "randomness", "training_cohort", "group_size")   # + noise_seed (release false), group_privacy (k > 1)
UNIT_OF_PRIVACY = "subject"   # one record = one subject's whole 4D latent (ids unique in the training set)
GROUP_SEPARATOR = "~"         # '<subject>~<tag>': another record of the same subject (a canary duplicate, a study)


def validate(sample_rate: float | None = None, noise_multiplier: float | None = None, steps: int | None = None,
             delta: float | None = None, accountant: str | None = None, epsilon: float | None = None) -> None:
    """Raise CardiolabError naming the first bad parameter (as its CLI flag); None means 'not given'."""
    def bad(flag: str, value, why: str) -> CardiolabError:
        return CardiolabError(f"--{flag} {value}: {why}")

    if sample_rate is not None and not (0 < sample_rate <= 1):
        raise bad("sample-rate", sample_rate, "must be in (0, 1]")
    if noise_multiplier is not None and not (noise_multiplier > 0 and math.isfinite(noise_multiplier)):
        raise bad("noise-multiplier", noise_multiplier, "must be a finite number > 0")
    if steps is not None and (int(steps) != steps or steps < 1):
        raise bad("steps", steps, "must be an integer >= 1")
    if delta is not None and not (0 < delta < 1):
        raise bad("delta", delta, "must be in (0, 1)")
    if epsilon is not None and not (epsilon > 0 and math.isfinite(epsilon)):
        raise bad("epsilon", epsilon, "must be a finite number > 0")
    if accountant is not None and accountant not in ACCOUNTANTS:
        raise bad("accountant", accountant, f"must be one of {', '.join(ACCOUNTANTS)}")


def make_accountant(accountant: str = "prv"):
    """A fresh Opacus accountant ('prv' or 'rdp'), the same class PrivacyEngine(accountant=...) builds."""
    from opacus.accountants import create_accountant  # lazy: opacus is a slow import, needed only here

    validate(accountant=accountant)
    return create_accountant(mechanism=accountant)


@contextlib.contextmanager
def _quiet(accountant: str):
    """PRV sizes its domain with an internal RDP bound whose 'largest alpha' warning is not about the result."""
    with warnings.catch_warnings():
        if accountant == "prv":
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        yield


def accountant_epsilon(acc, delta: float) -> float:
    """epsilon of an Opacus accountant's history at delta; PRV with a relative eps_error (see module docstring)."""
    with _quiet(acc.mechanism()):
        if acc.mechanism() != "prv":
            return float(acc.get_epsilon(delta=delta))
        first = float(acc.get_epsilon(delta=delta))                  # eps_error 0.01: estimate + 0.01
        return float(acc.get_epsilon(delta=delta, eps_error=max(PRV_MIN_ERROR, PRV_REL_ERROR * first)))


def epsilon(sample_rate: float, noise_multiplier: float, steps: int, delta: float, accountant: str = "prv") -> float:
    """epsilon spent by `steps` Poisson-sampled Gaussian steps of rate q = sample_rate and noise sigma, at delta."""
    validate(sample_rate=sample_rate, noise_multiplier=noise_multiplier, steps=steps, delta=delta, accountant=accountant)
    acc = make_accountant(accountant)
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    return accountant_epsilon(acc, delta)


def sigma(target_epsilon: float, sample_rate: float, steps: int, delta: float, accountant: str = "prv") -> float:
    """The smallest noise multiplier (to Opacus's 0.01 epsilon tolerance) whose epsilon is <= target_epsilon.

    The search uses Opacus's default (absolute) PRV error, which overstates epsilon: `epsilon` of the result,
    the value privacy.json records, is then at or below the target.
    """
    from opacus.accountants.utils import get_noise_multiplier  # lazy: opacus is a slow import, needed only here

    validate(sample_rate=sample_rate, steps=steps, delta=delta, accountant=accountant, epsilon=target_epsilon)
    try:
        with _quiet(accountant):
            return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                              sample_rate=sample_rate, steps=int(steps), accountant=accountant))
    except ValueError as e:  # Opacus: "The privacy budget is too low." (sigma would exceed 1e6)
        raise CardiolabError(f"--epsilon {target_epsilon}: unreachable at q={sample_rate}, steps={steps}, "
                             f"delta={delta} ({e})") from None


def write_privacy_json(run_dir: str | os.PathLike, *, max_grad_norm: float, noise_multiplier: float,
                       sample_rate: float, steps: int, delta: float, accountant: str = "prv",
                       trained_parameters: list[str] | int, n_subjects: int, init_run: str | None,
                       vqgan_run: str | None, release: bool, noise_seed: int | None = None,
                       training_cohort: str | None = None, group_size: int = 1) -> Path:
    """Write run_dir/privacy.json: the DP-SGD parameters of a run and epsilon under both accountants.

    max_grad_norm: per-subject clip C; noise_multiplier: sigma (noise std = sigma * C); sample_rate: Poisson q;
    steps: optimizer steps taken; accountant: the one that chose sigma (its epsilon is the claim `check` tests);
    trained_parameters: names (or count) of the parameters DP-SGD updated; n_subjects: private records N;
    init_run / vqgan_run: the public runs the model started from and whose latents it trained on.
    release: True when the Poisson masks and noise came from the OS's secret source (no seed exists to record);
    False for a replayable run, whose noise_seed is recorded: anyone with it can replay training, so it is not DP.
    training_cohort: `training_cohort_id` of the private subjects (a copy audit for the export gate must match it).
    group_size: the most records one subject holds (`group_size`); above 1 the record adds `group_privacy`, the
    (epsilon, delta) that subject gets.
    """
    validate(sample_rate=sample_rate, noise_multiplier=noise_multiplier, steps=steps, delta=delta, accountant=accountant)
    if not release and noise_seed is None:
        raise CardiolabError(f"{Path(run_dir) / PRIVACY_JSON}: a replayable (release: false) run records its noise seed")
    record = {
        "max_grad_norm": float(max_grad_norm), "noise_multiplier": float(noise_multiplier),
        "sample_rate": float(sample_rate), "steps": int(steps), "delta": float(delta),
        "epsilon": {acc: epsilon(sample_rate, noise_multiplier, steps, delta, acc) for acc in ACCOUNTANTS},
        "accountant": accountant, "trained_parameters": trained_parameters, "n_subjects": int(n_subjects),
        "init_run": None if init_run is None else str(init_run),
        "vqgan_run": None if vqgan_run is None else str(vqgan_run),
        "unit_of_privacy": UNIT_OF_PRIVACY, "release": bool(release),
        "randomness": "os-csprng, never recorded" if release else "seeded: replayable, not a release",
        "training_cohort": training_cohort, "group_size": int(group_size),
    }
    if group_size > 1:
        record["group_privacy"] = group_privacy(record["epsilon"][accountant], delta, group_size)
    if not release:
        record["noise_seed"] = int(noise_seed)
    return write_json(Path(run_dir) / PRIVACY_JSON, record)


def subject_of(record_id: str) -> str:
    """The subject a training record belongs to: '<subject>~<tag>' records (canary duplicates, further studies)
    are the subject's own."""
    return str(record_id).split(GROUP_SEPARATOR, 1)[0]


def group_size(ids) -> int:
    """The most records any one subject holds among `ids` (1: each subject is one record)."""
    counts: dict[str, int] = {}
    for i in ids:
        counts[subject_of(i)] = counts.get(subject_of(i), 0) + 1
    return max(counts.values(), default=1)


def group_privacy(epsilon_: float, delta: float, k: int) -> dict:
    """What (epsilon, delta)-DP per record gives a subject with k records: (k epsilon, k e^((k-1) epsilon) delta)
    (group privacy; Dwork & Roth 2014, Theorem 2.2 and its (epsilon, delta) form). delta is capped at 1."""
    return {"k": int(k), "epsilon": float(k * epsilon_),
            "delta": float(min(1.0, k * math.exp((k - 1) * epsilon_) * delta))}


def training_cohort_id(source: str | os.PathLike, ids) -> str:
    """Id of a training set: the cache (or cohort folder) it was read from and its subject ids. Phantom cohorts
    share ids (patient001, ...), so the source is part of it. A DP run records it; a copy audit records the one
    it compared against; the export gate refuses an audit whose id differs from the generator's. The source is
    named as records name it (`core.to_record`: relative to the root), so a copied root keeps its ids."""
    return fingerprint({"source": to_record(source), "ids": sorted(str(i) for i in ids)})


def is_release(record: dict | None) -> bool:
    """Whether a privacy record is of a release-mode run (secret noise); records written before the mode existed
    drew their noise from a stored seed and are not."""
    return isinstance(record, dict) and record.get("release") is True


def read_privacy_json(run_dir: str | os.PathLike) -> dict:
    """run_dir/privacy.json (or the file itself), checked for every key and valid parameters."""
    path = Path(run_dir)
    path = path if path.suffix == ".json" else path / PRIVACY_JSON
    record = read_json(path)
    if not isinstance(record, dict):
        raise CardiolabError(f"{path}: not a JSON object")
    if missing := [k for k in PRIVACY_KEYS if k not in record]:
        raise CardiolabError(f"{path}: missing key(s) {', '.join(missing)}")
    if not isinstance(record["release"], bool) or (not record["release"] and "noise_seed" not in record):
        raise CardiolabError(f"{path}: 'release' must be true, or false with the run's 'noise_seed'")
    eps = record["epsilon"]
    if not isinstance(eps, dict) or record["accountant"] not in eps:
        raise CardiolabError(f"{path}: 'epsilon' must map the accountant {record['accountant']!r} to a number")
    try:
        validate(sample_rate=record["sample_rate"], noise_multiplier=record["noise_multiplier"],
                 steps=record["steps"], delta=record["delta"], accountant=record["accountant"])
        float(eps[record["accountant"]])
    except (CardiolabError, TypeError, ValueError) as e:
        raise CardiolabError(f"{path}: {e}") from None
    return record


def cohort_privacy(cohort: str | os.PathLike) -> dict | None:
    """The privacy record a DP generator's `sample` copied into cohort/samples.json (None: no record, not DP)."""
    record = samples_record(cohort)
    privacy = record.get("privacy") if isinstance(record, dict) else None
    return privacy if isinstance(privacy, dict) else None


def _close(a, b, rtol: float = 1e-9) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=rtol)
    except (TypeError, ValueError):
        return False


def cross_check(run_dir: str | os.PathLike) -> list[str]:
    """Problems (one line each, naming the field) between a DP run's privacy.json and what the run really did.

    Compared: the checkpoint's accountant history (mechanism, sigma, q, steps), state.json's step count, q against
    the expected batch and N (q = 1/ceil(N/batch), config.json), the config's sigma, q, delta and release mode
    (a replayable run cannot be relabelled a release), delta <= 1/(10 N), and
    the training latents: subject ids unique, N of them (non-holdout), and the training-cohort id. A folder that
    holds only privacy.json (or the file itself) has nothing to cross-check: [].
    """
    path = Path(run_dir)
    run = path.parent if path.suffix == ".json" else path
    record = read_privacy_json(path)
    if not any((run / name).exists() for name in (CHECKPOINT, STATE, RUN_CONFIG)):
        return []
    problems = []

    def bad(field: str, why: str) -> None:
        problems.append(f"{field}: {why}")

    sigma_, q, steps, n = (record["noise_multiplier"], record["sample_rate"], record["steps"], record["n_subjects"])
    if not (run / CHECKPOINT).exists():
        bad("checkpoint", f"{run / CHECKPOINT} is missing: the accountant state cannot be checked")
    else:
        state = load_checkpoint(run).get("accountant") or {}
        history = [tuple(h) for h in state.get("history", [])]
        if state.get("mechanism") != record["accountant"]:
            bad("accountant", f"{record['accountant']!r} but the checkpoint's accountant is {state.get('mechanism')!r}")
        if any(not _close(h[0], sigma_) for h in history):
            bad("noise_multiplier", f"{sigma_:g} but the checkpoint's accountant stepped sigma "
                                    f"{sorted({h[0] for h in history})}")
        if any(not _close(h[1], q) for h in history):
            bad("sample_rate", f"{q:g} but the checkpoint's accountant stepped q {sorted({h[1] for h in history})}")
        if sum(int(h[2]) for h in history) != steps:
            bad("steps", f"{steps} but the checkpoint's accountant holds {sum(int(h[2]) for h in history)} steps")
    if (run / STATE).exists() and int(read_json(run / STATE).get("step", -1)) != steps:
        bad("steps", f"{steps} but {run / STATE} records step {read_json(run / STATE).get('step')}")
    conf = read_json(run / RUN_CONFIG) if (run / RUN_CONFIG).exists() else {}
    if conf:
        batch = conf.get("shaping", {}).get("dp", {}).get("batch", conf.get("train", {}).get("batch_size"))
        if conf.get("n_train") != n:
            bad("n_subjects", f"{n} but config.json trained on n_train = {conf.get('n_train')}")
        if batch and not _close(q, 1 / math.ceil(n / batch)):
            bad("sample_rate", f"{q:g} but N = {n} and expected batch {batch} give q = 1/ceil(N/batch) = "
                               f"{1 / math.ceil(n / batch):g}")
        for field in ("noise_multiplier", "sample_rate", "delta"):
            if field in conf and not _close(conf[field], record[field]):
                bad(field, f"{record[field]:g} but config.json records {conf[field]:g}")
        replayable = conf.get("train", {}).get("dp_replayable")
        if conf.get("release", record["release"]) != record["release"] or (
                replayable is not None and bool(replayable) == record["release"]):
            bad("release", f"{record['release']} but config.json trained with dp_replayable = {replayable} "
                           f"(release {conf.get('release')})")
    if record["delta"] * 10 * n > 1 + 1e-12:
        bad("delta", f"{record['delta']:g} is above 1/(10 N) = {1 / (10 * n):.3g}")
    latents = conf.get("shaping", {}).get("latents")
    if latents:
        problems += _check_latents(from_record(latents), record)
    return problems


def _check_latents(latents: Path, record: dict) -> list[str]:
    """Unique ids, N and the training-cohort id of the run's private latents (config.json's shaping.latents)."""
    path = latents / "latents.pt" if latents.is_dir() else latents
    if not path.exists():
        return [f"training_cohort: the training latents {path} are gone; ids and N cannot be checked"]
    data = torch.load(path, map_location="cpu", weights_only=True)
    splits = dict(data["splits"])
    ids = [str(i) for i in data["ids"] if splits.get(i) != "holdout"]
    out = []
    if len(set(ids)) != len(ids):
        out.append(f"ids: {path} repeats subject ids (the unit of privacy is the subject)")
    if len(ids) != record["n_subjects"]:
        out.append(f"n_subjects: {record['n_subjects']} but {path} holds {len(ids)} training subjects")
    if record.get("training_cohort") and "cache_dir" in data and \
            training_cohort_id(from_record(data["cache_dir"]), ids) != record["training_cohort"]:
        out.append(f"training_cohort: {record['training_cohort']} but {path} gives "
                   f"{training_cohort_id(from_record(data['cache_dir']), ids)}")
    return out


def check_privacy_json(run_dir: str | os.PathLike, rtol: float = 1e-6) -> tuple[bool, str]:
    """Recompute epsilon from a run's privacy.json and `cross_check` it against the run: (ok, one-line verdict).
    ok is False when the record understates epsilon or disagrees with the run (the verdict names each field).

    rtol absorbs float round-off of the JSON round trip only; the recorded epsilon must not be below the recomputation.
    """
    record = read_privacy_json(run_dir)
    acc = record["accountant"]
    claimed = float(record["epsilon"][acc])
    actual = epsilon(record["sample_rate"], record["noise_multiplier"], record["steps"], record["delta"], acc)
    where = f"{Path(run_dir)}: q={record['sample_rate']:g} sigma={record['noise_multiplier']:g} " \
            f"steps={record['steps']} delta={record['delta']:g} ({acc})"
    if claimed < actual * (1 - rtol):
        return False, f"FAILED: {where} records epsilon {claimed:.6g} but recomputes to {actual:.6g}"
    if problems := cross_check(run_dir):
        return False, f"FAILED: {where}: " + "; ".join(problems)
    mode = "release" if is_release(record) else "replayable (release: false, not DP as released)"
    return True, f"OK: {where} epsilon {actual:.6g} (recorded {claimed:.6g}); {mode}"
