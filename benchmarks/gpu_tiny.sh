#!/usr/bin/env bash
# The tiny profile's baselines trained, sampled and evaluated on a CUDA machine, in one prepared run:
#   bash benchmarks/gpu_tiny.sh OUTDIR CARRIED
# CARRIED holds what the CPU made first and the GPU reuses: runs/tiny/{vqgan,latents} (the tiny VQ-GAN and its
# latents, which the ldm/flow/DiT baselines train on) and samples/dit (CardioDiT's tiny samples, evaluated here
# with the same evaluator and segmenter as every baseline). The phantom and its cache are regenerated (seeded).
# Steps, under one budget (BUDGET seconds, default 540; a step that would start after it is skipped and listed):
#   1. phantom + prepare (tiny), a second "site" (phantom --seed 1 --snr 6,10) for cross-dataset utility;
#   2. train + sample (16 studies, seed 0) each baseline;
#   3. evaluate every cohort with --labels (FD/KID-cardiolab, slice NCC, periodicity, EF W1, mask Dice, shapes);
#   4. utility per cohort: segmenters on synthetic and real+synthetic (UTIL_STEPS steps), holdout + cross site;
#   5. report; OUTDIR/tiny.tgz holds runs/tiny without weights or images (configs, metrics, eval, report) and logs/.
set -u
OUT=${1:?OUTDIR}; CARRIED=${2:?CARRIED}
BUDGET=${BUDGET:-540}; UTIL_STEPS=${UTIL_STEPS:-800}; P="--profile ${PROFILE:-tiny}"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 CARDIOLAB_ROOT=${CARDIOLAB_ROOT:-$(mktemp -d)}
R=$CARDIOLAB_ROOT/runs/${PROFILE:-tiny}
mkdir -p "$OUT/logs" "$R" && cp -r "$CARRIED"/runs/* "$R"/ && mkdir -p "$R/samples" && cp -r "$CARRIED"/samples/* "$R/samples/"
c="$PY -m cardiolab"
GRACE=30; source "$(dirname "$0")/budget.sh"

SITE2=$CARDIOLAB_ROOT/data/phantom/site2
step phantom 90 $c phantom $P --workers 16
step prepare 90 $c prepare $P
step site2 60 $c phantom $P --seed 1 --snr 6,10 --subjects 16 --out "$SITE2" --workers 16
MODELS="ldm flow factorized channel-merged mask-generator mask-to-image ddpm"
for m in $MODELS; do
  step "train_$m" 150 $c train $m $P
  step "sample_$m" 60 $c sample $P --run "$R/$m" --n 16 --seed 0
done
for m in dit $MODELS; do
  [ -d "$R/samples/$m" ] && step "evaluate_$m" 120 $c evaluate $P --synthetic "$R/samples/$m" --labels
done
for m in mask-to-image dit $MODELS; do
  [ -d "$R/samples/$m" ] && [ ! -f "$R/eval/utility-$m.json" ] && step "utility_$m" 120 $PY - "$m" <<EOF
import sys
from cardiolab.profiles import get_profile
from cardiolab.evaluation.utility import utility
p = get_profile("${PROFILE:-tiny}"); m = sys.argv[1]
r = utility(p, p.samples(m), out_json=p.eval_dir / f"utility-{m}.json", steps=$UTIL_STEPS,
            run_root=p.eval_dir / "utility" / m, test_cohort="$SITE2",
            fractions=(0.25, 0.5, 1.0) if m in ("mask-to-image", "dit") else (1.0,))
print({s: round(v["dice"]["mean"]["mean"], 4) for s, v in r["results"].items()})
print("cross", {s: round(v["dice"]["mean"]["mean"], 4) for s, v in r["cross"]["results"].items()})
EOF
done
step report 60 $c report --runs "$R"
tar -czf "$OUT/tiny.tgz" --exclude='*.pt' --exclude='*.nii.gz' --exclude='*.gif' -C "$CARDIOLAB_ROOT/runs" \
  "${PROFILE:-tiny}" -C "$OUT" logs
echo "total $(awk "BEGIN {print int($EPOCHREALTIME - $start)}") s"
