"""Release export: a shareable copy of a synthetic cohort, in nnU-Net v2's raw layout or the ACDC layout.

What leaves the lab is only what a segmentation user needs: images, labels, geometry. Each subject gets a fresh
case id (`case0001`, ... in a seeded shuffled order, so neither name nor position links back to the sampled
cohort), every NIfTI gets a new header built from its affine alone (no descrip / intent / aux strings), Info.cfg
keeps only ACDC's keys, side files (phantom truth, GIFs, samples.json) stay behind, and DATA_CARD.md says where
the data came from, whether it is differentially private and what the copy audit found.

nnU-Net v2 (documentation/dataset_format.md of MIC-DKFZ/nnUNet): nnU-Net segments 3D images, so a 4D cine
becomes one 3D case per labelled key frame, ED and ES, as nnU-Net's own ACDC conversion (Dataset027_ACDC) does:

    OUT/dataset.json                                  channel_names, labels, numTraining, file_ending
    OUT/imagesTr/case0001_frame01_0000.nii.gz         ED image (channel 0000: the cine MRI)
    OUT/labelsTr/case0001_frame01.nii.gz              its labels: 0 background, 1 RV, 2 MYO, 3 LV
    OUT/imagesTs/case0002_frame01_0000.nii.gz         key frames of unlabelled subjects (nnU-Net ignores them)

Name OUT `DatasetXXX_Name` inside `$nnUNet_raw` to train on it. Release gate (required; `--no-gate` exports
unaudited, and the card says so): an audit JSON from `audit copies` of exactly this cohort. The export refuses
when its `copy_fraction` (% of synthetic scans flagged as copies) is above the limit (`max_copy_fraction` in the
JSON, or the caller's), and when a DP cohort's audit compared against another training set than the generator's;
below the limit the flagged cases are dropped and listed in the card. The card states DP only for a release-mode
run (samples.json["privacy"], copied from the run's privacy.json), with epsilon, delta, N, delta x N, the unit of
privacy and how budgets compose.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from cardiolab.core import CardiolabError, atomic_path, read_json, write_json
from cardiolab.io.cohort import INFO_KEYS, LABELS, Subject, samples_record, write_subject
from cardiolab.io.layouts import read_cohort
from cardiolab.io.nifti import save_nifti
from cardiolab.dp.accounting import cohort_privacy, is_release

FORMATS = ("nnunet", "acdc")
DATA_CARD = "DATA_CARD.md"
NNUNET_CHANNELS = {"0": "MRI"}     # any name but "CT" gets nnU-Net's per-case z-score normalisation
FILE_ENDING = ".nii.gz"


def read_gate(audit_json: str | os.PathLike, max_copy_fraction: float | None = None) -> dict:
    """The release decision of an `audit copies` JSON: {"audit", "copy_fraction", "limit", "passed", "flagged",
    "training_cohort", ...}.

    limit: `max_copy_fraction` if given, else the JSON's own `max_copy_fraction`; both in % of synthetic scans.
    flagged: ids of the synthetic cases the audit flagged as copies (the export drops them).
    training_cohort: the id of the training set the audit compared against (None in audits made before it existed).
    """
    audit = read_json(audit_json)
    if not isinstance(audit, dict) or not isinstance(audit.get("copy_fraction"), (int, float)):
        raise CardiolabError(f"{audit_json}: no numeric 'copy_fraction' (not an `audit copies` JSON)")
    limit = max_copy_fraction if max_copy_fraction is not None else audit.get("max_copy_fraction")
    if not isinstance(limit, (int, float)) or not 0 <= limit <= 100:
        raise CardiolabError(f"{audit_json}: no copy-fraction limit in [0, 100]; pass --max-copy-fraction "
                             f"(got {limit!r})")
    per = audit.get("per_synthetic", [])
    if not isinstance(per, list) or not all(isinstance(x, dict) and "id" in x for x in per):
        raise CardiolabError(f"{audit_json}: 'per_synthetic' must list {{id, is_copy}} per synthetic case")
    copy_fraction = float(audit["copy_fraction"])
    return {"audit": str(audit_json), "copy_fraction": copy_fraction, "limit": float(limit),
            "passed": copy_fraction <= limit, "threshold": audit.get("threshold"),
            "percentile": audit.get("percentile"), "embedding": audit.get("embedding"),
            "memorized_fraction": audit.get("memorized_fraction"), "training_cohort": audit.get("training_cohort"),
            "ids": [x["id"] for x in per], "flagged": [x["id"] for x in per if x.get("is_copy")]}


def gate_message(gate: dict) -> str:
    """One line saying why a gate refused (or passed) the release."""
    verdict = "above" if not gate["passed"] else "within"
    return (f"{gate['audit']}: copy fraction {gate['copy_fraction']:.2f} % is {verdict} the limit "
            f"{gate['limit']:.2f} %" + ("; nothing exported" if not gate["passed"] else ""))


def check_gate(gate: dict | None, privacy: dict | None, synthetic: Path, subject_ids: list[str],
               no_gate: bool = False) -> str:
    """Raise unless `gate` may release this cohort; returns how its training set was checked (for the card).

    A gate is required unless no_gate. It must pass, audit exactly these subjects and, for a DP cohort (whose
    privacy record names its training cohort), have compared against that same training set.
    """
    if gate is None:
        if not no_gate:
            raise CardiolabError(f"--synthetic {synthetic}: export needs a copy audit (--gate AUDIT_JSON from "
                                 f"`audit copies`), or --no-gate to export it unaudited (the data card says so)")
        return "not audited"
    if no_gate:
        raise CardiolabError("--no-gate: given together with --gate; choose one")
    if not gate["passed"]:
        raise CardiolabError(gate_message(gate))
    if set(gate["ids"]) != set(subject_ids):
        raise CardiolabError(f"{gate['audit']}: audits other subjects than the {len(subject_ids)} in {synthetic}")
    wanted = (privacy or {}).get("training_cohort")
    if privacy is not None and not wanted:
        raise CardiolabError(f"{synthetic}/samples.json: the DP record names no training cohort, so no audit can be "
                             f"checked against it; re-train and re-sample the DP run")
    if wanted and gate["training_cohort"] != wanted:
        raise CardiolabError(f"{gate['audit']}: compared against training set {gate['training_cohort'] or 'unknown'}, "
                             f"but {synthetic}'s generator trained on {wanted}: audit against its own training set "
                             f"(`audit copies --train <its cache>`)")
    return ("matches the generator's" if wanted else
            "not checked: the cohort records no training set (not a DP cohort)")


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CardiolabError(f"--out {out}: exists and is not an empty folder; choose a new one")


def _read_subjects(synthetic: Path) -> list[Subject]:
    if not synthetic.is_dir():
        raise CardiolabError(f"--synthetic {synthetic}: not a folder")
    return list(read_cohort(synthetic))     # validates every file: missing, NaN voxels, bad Info.cfg


def _stripped(subject: Subject, new_id: str) -> Subject:
    """The subject under a fresh id with only ACDC's Info.cfg keys (Group, Height, Weight; the rest is recomputed)."""
    info = {k: subject.info[k] for k in INFO_KEYS if k in subject.info}
    return replace(subject, id=new_id, info=info)


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    save_nifti(path, array, affine)     # a new header from the affine; nothing else copied


def _write_nnunet(tmp: Path, subjects: list[Subject]) -> dict:
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (tmp / sub).mkdir()
    n_train = n_test = 0
    for s in subjects:
        for frame in sorted({s.ed, s.es}):
            case = f"{s.id}_frame{frame + 1:02d}"
            lab = s.labels_at(frame)
            folder = "imagesTr" if lab is not None else "imagesTs"
            _save(s.image[..., frame].astype(np.float32), s.affine, tmp / folder / f"{case}_0000{FILE_ENDING}")
            if lab is not None:
                _save(lab.astype(np.uint8), s.affine, tmp / "labelsTr" / f"{case}{FILE_ENDING}")
                n_train += 1
            else:
                n_test += 1
    if not n_test:
        (tmp / "imagesTs").rmdir()
    dataset = {"channel_names": dict(NNUNET_CHANNELS), "labels": dict(LABELS), "numTraining": n_train,
               "file_ending": FILE_ENDING, "name": "cardiolab-synthetic",
               "description": "synthetic short-axis cine MRI key frames (ED, ES); see DATA_CARD.md"}
    write_json(tmp / "dataset.json", dataset)
    return {"n_cases_train": n_train, "n_cases_unlabelled": n_test}


def _write_acdc(tmp: Path, subjects: list[Subject]) -> dict:
    for s in subjects:
        write_subject(tmp, s)
    return {"n_labelled": sum(bool(s.labels) or s.label_series is not None for s in subjects)}


def _profile_of(samples: dict) -> str:
    if samples.get("profile"):
        return str(samples["profile"])
    parts = Path(str(samples.get("run", ""))).parts
    return parts[parts.index("runs") + 1] if "runs" in parts[:-1] else "unknown"


COMPOSITION = ("composition: this (epsilon, delta) covers this one training run. Every other output computed from "
               "the same private subjects adds to it: the runs of an epsilon grid compose (their epsilons add up, at "
               "most), a fine-tune on them without DP (epsilon = inf) has no guarantee and must never be released, "
               "and scores on the private holdout are the data owner's internal evaluation, not part of a release.")


def privacy_lines(privacy: dict | None) -> list[str]:
    """The data card's differential-privacy lines from a cohort's privacy record (samples.json["privacy"])."""
    if privacy is None:
        return ["- differential privacy: no (the generator was not trained with DP)"]
    if not is_release(privacy):
        return ["- differential privacy: no. The generator was trained with DP-SGD in replayable mode (Poisson "
                "masks and noise drawn from a recorded seed; release: false): whoever holds the seed and the other "
                "records can replay training, so no DP guarantee holds for this copy"]
    acc, n, delta = privacy["accountant"], int(privacy["n_subjects"]), float(privacy["delta"])
    eps = float(privacy["epsilon"][acc])
    others = ", ".join(f"{k} {float(v):.4g}" for k, v in privacy["epsilon"].items() if k != acc)
    return [f"- differential privacy: yes: (epsilon = {eps:.4g}, delta = {delta:.3g})-differentially private "
            f"training (DP-SGD through Opacus; epsilon from the {acc} accountant" + (f"; {others}" if others else "")
            + ")",
            f"- unit of privacy: one {privacy.get('unit_of_privacy', 'subject')} (all of its data is one record); "
            f"N = {n} private subjects (N is treated as public)",
            f"- delta x N = {delta * n:.3g} (at most 0.1 by construction: delta <= 1/(10 N))",
            "- release mode: yes (Poisson batches and noise from the operating system's secret random source, "
            "never recorded)",
            f"- DP-SGD: clip C = {float(privacy['max_grad_norm']):g}, noise multiplier sigma = "
            f"{float(privacy['noise_multiplier']):.4g}, sample rate q = {float(privacy['sample_rate']):.4g}, "
            f"{int(privacy['steps'])} steps",
            *_group_lines(privacy),
            f"- {COMPOSITION}"]


def _group_lines(privacy: dict) -> list[str]:
    """Group privacy, where a subject held several training records (canary duplicates, several studies)."""
    g = privacy.get("group_privacy")
    if not isinstance(g, dict):
        return []
    return [f"- group privacy: some subjects held up to {g['k']} training records; such a subject's guarantee is "
            f"(epsilon = {float(g['epsilon']):.4g}, delta = {float(g['delta']):.3g}), not the per-record one above"]


def data_card(fmt: str, n_subjects: int, counts: dict, samples: dict, privacy: dict | None, gate: dict | None,
              training_check: str = "not audited", dropped: list[str] = ()) -> str:
    """DATA_CARD.md text: origin, privacy, audit, layout."""
    lines = ["# Synthetic cardiac cine MRI: data card", "",
             "Every case is generated; none is a patient scan. Case ids are fresh and carry no link to any patient.",
             "NIfTI headers hold geometry only (affine, voxel size, frame spacing).", "",
             "## Origin",
             f"- generator: {samples.get('generator', 'unknown')}",
             f"- run: {samples.get('run', 'unknown')}",
             f"- profile: {_profile_of(samples)}",
             f"- sampling: steps {samples.get('steps', 'n/a')}, seed {samples.get('seed', 'n/a')}, "
             f"guidance {samples.get('guidance', 'n/a')}, conditioning {samples.get('cond', 'n/a')}", "",
             "## Differential privacy", *privacy_lines(privacy), "",
             "## Copy audit (memorization)"]
    if gate is None:
        lines.append("- not audited: exported with --no-gate")
    else:
        lines += [f"- audit: {Path(gate['audit']).name} (embedding {gate.get('embedding') or 'n/a'}, "
                  f"threshold tau = {_fmt(gate.get('threshold'))} at percentile {_fmt(gate.get('percentile'))})",
                  f"- training set compared against: {gate.get('training_cohort') or 'unknown'} ({training_check})",
                  f"- synthetic cases flagged as copies of a training subject: {gate['copy_fraction']:.2f} %",
                  f"- training subjects memorized: {_fmt(gate.get('memorized_fraction'))} %",
                  f"- release limit: {gate['limit']:.2f} % -> passed",
                  f"- flagged cases dropped from this copy: {len(dropped)}"
                  + (f" ({', '.join(dropped)}; ids of the sampled cohort)" if dropped else "")]
    lines += ["", "## Layout", f"- format: {fmt}, {n_subjects} synthetic subjects"]
    if fmt == "nnunet":
        lines += [f"- {counts['n_cases_train']} labelled 3D cases (ED and ES frame of each cine) in imagesTr/labelsTr; "
                  f"{counts['n_cases_unlabelled']} unlabelled in imagesTs",
                  "- labels: 0 background, 1 RV, 2 MYO, 3 LV; channel 0000: cine MRI",
                  "- place this folder in $nnUNet_raw as DatasetXXX_Name"]
    else:
        lines += ["- ACDC layout: <id>/<id>_4d.nii.gz, ED/ES frames and labels, Info.cfg",
                  "- labels: 0 background, 1 RV, 2 MYO, 3 LV"]
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else "n/a"


def export_cohort(synthetic: str | os.PathLike, fmt: str, out: str | os.PathLike, gate: dict | None = None,
                  seed: int = 0, no_gate: bool = False) -> dict:
    """Write a release copy of the synthetic cohort at `synthetic` to `out` (atomically: all or nothing).

    fmt: 'nnunet' or 'acdc'. gate: `read_gate(...)`, required unless no_gate (see `check_gate`); a failed gate
    raises before anything is written. The cases the gate flagged as copies are dropped and listed in the card.
    Returns a summary {"out", "format", "n_subjects", "dropped", ...counts}.
    """
    synthetic, out = Path(synthetic), Path(out)
    if fmt not in FORMATS:
        raise CardiolabError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    _check_out(out)
    if gate is not None and not gate["passed"]:
        raise CardiolabError(gate_message(gate))
    subjects = _read_subjects(synthetic)
    samples, privacy = samples_record(synthetic), cohort_privacy(synthetic)
    training_check = check_gate(gate, privacy, synthetic, [s.id for s in subjects], no_gate)
    flagged = set(gate["flagged"]) if gate is not None else set()
    dropped = sorted(s.id for s in subjects if s.id in flagged)
    subjects = [s for s in subjects if s.id not in flagged]
    if not subjects:
        raise CardiolabError(f"{gate['audit']}: flags every case of {synthetic}; nothing to export")
    order = np.random.default_rng(seed).permutation(len(subjects))
    fresh = [_stripped(subjects[i], f"case{k + 1:04d}") for k, i in enumerate(order)]
    with atomic_path(out) as tmp:
        tmp.mkdir()
        counts = _write_nnunet(tmp, fresh) if fmt == "nnunet" else _write_acdc(tmp, fresh)
        (tmp / DATA_CARD).write_text(data_card(fmt, len(fresh), counts, samples, privacy, gate, training_check,
                                               dropped))
    return {"out": str(out), "format": fmt, "n_subjects": len(fresh), "dropped": dropped, **counts}
