"""Whole-heart volume cohorts of the high-resolution pipeline: adherence of samples to their conditioning masks and
relative regional volumes (`cardiolab.metrics.volumes`), scored through the highres-segmenter."""
from __future__ import annotations

import os

import numpy as np

from cardiolab.core import CardiolabError, write_json
from cardiolab.io.volume import LABELS, read_volume_cohort
from cardiolab.metrics.volumes import dice_per_label, mean_per_key, relative_volumes, volume_w1
from cardiolab.profiles import Profile
from cardiolab.tasks import highres_common, highres_segmenter

def evaluate_highres(synthetic: str | os.PathLike, real: str | os.PathLike | None = None,
                     *, profile: Profile, segmenter_run: str | os.PathLike | None = None,
                     out: str | os.PathLike | None = None) -> dict:
    """Adherence and relative regional volumes of a synthetic volume cohort (cardiolab.metrics.volumes).

    synthetic: volume-layout cohort whose masks are the conditioning masks (as `sample --mask` writes).
    real: volume-layout cohort (default: the profile's holdout volumes). The highres-segmenter (trained if
    needed) segments both sides: adherence is its Dice per structure against each sample's conditioning mask;
    regional volumes are structure / heart shares of its segmentations, real vs synthetic, with W1 per structure.
    Writes `out` (JSON) when given; returns the numbers.
    """
    structures = {k: v for k, v in LABELS.items() if k}
    model = highres_segmenter.load(segmenter_run or highres_segmenter.ensure(profile))
    real_subjects = list(read_volume_cohort(real)) if real else highres_common.load_volumes(profile, "holdout")
    adherence, synth_shares = [], []
    for s in read_volume_cohort(synthetic):
        pred = highres_segmenter.segment(model, s.image)
        adherence.append({"id": s.id, **dice_per_label(pred, s.mask, structures)})
        synth_shares.append(relative_volumes(pred, structures))
    if not adherence:
        raise CardiolabError(f"{synthetic}: no synthetic volumes")
    real_shares = [relative_volumes(highres_segmenter.segment(model, s.image), structures) for s in real_subjects]
    dice = mean_per_key([{k: v for k, v in r.items() if k != "id"} for r in adherence])
    dice["mean"] = float(np.nanmean(list(dice.values())))
    result = {"n_synthetic": len(adherence), "n_real": len(real_subjects), "synthetic": str(synthetic),
              "real": str(real) if real else "holdout",
              "adherence": {"dice": dice, "per_subject": adherence},
              "regional_volumes": {"real": mean_per_key(real_shares), "synthetic": mean_per_key(synth_shares),
                                   "w1": volume_w1(real_shares, synth_shares)}}
    if out is not None:
        write_json(out, result)
    return result


def compare_highres(cohorts: dict[str, str | os.PathLike], real: str | os.PathLike | None = None,
                    *, profile: Profile, segmenter_run: str | os.PathLike | None = None,
                    out: str | os.PathLike | None = None) -> dict[str, dict]:
    """evaluate_highres of several synthetic volume cohorts side by side, one segmenter, one real side.

    cohorts: name -> cohort, e.g. {"conditional": ..., "unconditional": ...} from `sample --mask` at
    conditioning scale 1 and 0. Each sample is scored against the mask written beside it. For an unconditional
    sample (scale 0: the frozen UNet with the same noise) that mask was NOT used, so its Dice is the chance level
    of the anatomy (how much any plausible heart overlaps that mask by common placement): conditional Dice means
    something only above it. (Against the sample's own segmentation Dice would be 1 by construction.)
    Writes `out` (JSON, {name: scores}) when given; `highres_table` prints the result.
    """
    if not cohorts:
        raise CardiolabError("compare_highres: no cohorts given")
    segmenter_run = segmenter_run or highres_segmenter.ensure(profile)
    result = {name: evaluate_highres(path, real=real, profile=profile, segmenter_run=segmenter_run)
              for name, path in cohorts.items()}
    if out is not None:
        write_json(out, result)
    return result


def highres_table(scores: dict[str, dict]) -> str:
    """A text table of compare_highres: per structure, adherence Dice and regional-volume W1 of each cohort."""
    names = list(scores)
    first = scores[names[0]]
    structures = list(first["regional_volumes"]["w1"])
    head = ["structure"] + [f"Dice {n}" for n in names] + [f"W1 {n}" for n in names]
    rows = []
    for s in structures:
        rows.append([s] + [f"{scores[n]['adherence']['dice'][s]:.3f}" for n in names]
                    + [f"{scores[n]['regional_volumes']['w1'][s]:.4f}" for n in names])
    rows.append(["mean"] + [f"{scores[n]['adherence']['dice']['mean']:.3f}" for n in names]
                + [f"{np.nanmean(list(scores[n]['regional_volumes']['w1'].values())):.4f}" for n in names])
    rows.append(["n synthetic / real"] + [f"{scores[n]['n_synthetic']} / {scores[n]['n_real']}" for n in names]
                + [""] * len(names))
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in [head] + rows)
