#!/usr/bin/env bash
# The GPU checks of issues 11 and 17 in one prepared run, on a CUDA machine:
#   bash benchmarks/gpu.sh OUTDIR          (results: OUTDIR/steps.tsv, OUTDIR/*.json, OUTDIR/logs/*.log)
# Steps run in order of importance under one time budget (BUDGET seconds, default 480): a step that would start
# after it is skipped and listed as such, so the run ends on time with what it measured.
#   1. machine: nvidia-smi, cardiolab.core.machine_info, a measured bf16 matmul peak (8192^3);
#   2. bench dit at the full profile's DiT (768 wide, 8 deep, 12 heads; latent 6x64x64x8, patch 1,4,4,2 = 6144
#      tokens) in bf16: samples/s, peak memory, MFU (FLOP formula: cardiolab.bench.dit_train_flops);
#   3. one full-profile 4D sample: 50 DDIM steps of that DiT + VQ-GAN decoding of its 6 slices to 256x256x32;
#   4. bench highres at MedLoRD's 512x512x256 (VQ-GAN on its 128^3 training crops), every switch, per stage;
#   5. the smoke profile of every registered model on CUDA through the CLI, then a 1-process torchrun (DDP) run;
#   6. extras: fp32, checkpointing, batch 8 and torch.compile variants of step 2.
# SMALL=1 shrinks every size, to check the script itself on a CPU.
set -u
OUT=${1:-runs/bench/gpu}
BUDGET=${BUDGET:-480}
PY=${PYTHON:-python3}
mkdir -p "$OUT/logs"
export PYTHONUNBUFFERED=1 CARDIOLAB_ROOT=${CARDIOLAB_ROOT:-$(mktemp -d)}
c="$PY -m cardiolab"
if [ "${SMALL:-0}" = 1 ]; then
  DIT="--input-size 2,16,16,4 --patch 1,4,4,2 --channels 8 --hidden 64 --depth 2 --heads 4"
  HR="--size 64,64,32"; CROP="--size 32,32,32"; HRP=smoke; LAT="1,4,2,16,16,4"; VQP=smoke; MM=512
else
  DIT="--input-size 6,64,64,8 --patch 1,4,4,2 --channels 8 --hidden 768 --depth 8 --heads 12"
  HR="--size 512,512,256"; CROP="--size 128,128,128"; HRP=full; LAT="1,8,6,64,64,8"; VQP=full; MM=8192
fi
GRACE=60; source "$(dirname "$0")/budget.sh"

# 1. machine
step machine 60 bash -c "nvidia-smi; $PY -c 'import json, torch; from cardiolab.core import machine_info, pick_device
print(json.dumps(machine_info(pick_device(\"auto\")), indent=1), torch.__version__)'"
step matmul 60 $PY - "$MM" "$OUT/matmul.json" <<'EOF'
import json, sys, time, torch
n, dev = int(sys.argv[1]), "cuda" if torch.cuda.is_available() else "cpu"
a, b = (torch.randn(n, n, device=dev, dtype=torch.bfloat16) for _ in range(2))
for _ in range(3): a @ b
torch.cuda.synchronize() if dev == "cuda" else None
t0 = time.perf_counter()
for _ in range(10): a @ b
torch.cuda.synchronize() if dev == "cuda" else None
s = (time.perf_counter() - t0) / 10
json.dump({"n": n, "seconds": s, "tflops_per_s": 2 * n ** 3 / s / 1e12, "device": dev}, open(sys.argv[2], "w"))
print(2 * n ** 3 / s / 1e12, "TFLOP/s bf16 matmul")
EOF

# 2. the full profile's DiT, bf16
step dit_b4_bf16 120 $c bench dit $DIT --batch 4 --steps 10 --warmup 3 --precision bf16 --json "$OUT/dit_b4_bf16.json"

# 3. one full-profile sample: DiT chain + VQ-GAN decode
step dit_sample50 120 $c bench dit-sample $DIT --steps 50 --precision bf16 --json "$OUT/dit_sample50.json"
step vqgan_decode 120 $PY - "$VQP" "$LAT" "$OUT/vqgan_decode.json" <<'EOF'
import json, sys, time, torch
from cardiolab.core import pick_device
from cardiolab.models.vqgan import VQGAN, VQConfig
from cardiolab.profiles import get_profile
from cardiolab.tasks.vqgan import decode_latents
dev = pick_device("auto")
vq = VQGAN(VQConfig.pick(get_profile(sys.argv[1]).vqgan)).to(dev).eval()
z = torch.randn(*map(int, sys.argv[2].split(",")))
with torch.autocast(dev.type, dtype=torch.bfloat16):
    decode_latents(vq, z)                       # warm-up
    torch.cuda.synchronize() if dev.type == "cuda" else None
    t0 = time.perf_counter()
    x = decode_latents(vq, z)
    torch.cuda.synchronize() if dev.type == "cuda" else None
s = time.perf_counter() - t0
json.dump({"latent": list(z.shape), "image": list(x.shape), "seconds": s, "precision": "bf16"}, open(sys.argv[3], "w"))
print(s, "s to decode", tuple(z.shape), "->", tuple(x.shape))
EOF

# 4. MedLoRD's size: every stage, each switch toggled, then every memory switch on at once
for stage in ldm controlnet sample; do
  step "highres_$stage" 150 $c bench highres --profile $HRP $HR --stage $stage --json "$OUT/highres_$stage.json"
done
step highres_vqgan_crop 120 $c bench highres --profile $HRP $CROP --stage vqgan --json "$OUT/highres_vqgan_crop.json"
step highres_lean_ldm 90 $c bench highres --profile $HRP $HR --stage ldm --switch checkpointing=true --switch amp=bf16
step highres_lean_controlnet 90 $c bench highres --profile $HRP $HR --stage controlnet --switch checkpointing=true --switch amp=bf16
step highres_lean_sample 90 $c bench highres --profile $HRP $HR --stage sample --switch sliding=true --switch code_chunk=1024 --switch amp=bf16

# 5. smoke profile of every model on CUDA
P="--profile smoke"
step smoke_phantom 90 $c phantom $P
for m in vqgan dit segmenter evaluator factorized channel-merged ddpm ldm flow mask-generator mask-to-image \
         landmarks copy-detector; do
  step "smoke_$m" 120 $c train $m $P
done
step smoke_sample_dit 60 $c sample $P --run "$CARDIOLAB_ROOT/runs/smoke/dit" --n 2
D=$CARDIOLAB_ROOT/data/phantom/smoke-private; C=$CARDIOLAB_ROOT/data/cache/smoke-private
step smoke_dp 240 bash -c "$c phantom $P --seed 1 --subjects 20 --out $D && $c prepare $P --root $D --out $C &&
  $c encode $P --cache $C --out $CARDIOLAB_ROOT/runs/smoke/lat-priv &&
  $c train dit-dp $P --latents $CARDIOLAB_ROOT/runs/smoke/lat-priv --init $CARDIOLAB_ROOT/runs/smoke/dit --set dp.epsilon=10"
step smoke_highres 240 bash -c "$c phantom --kind volume $P && for m in vqgan ldm controlnet segmenter; do
  $c train highres-\$m $P || exit 1; done"
step smoke_torchrun 120 $PY -m torch.distributed.run --nproc_per_node=1 -m cardiolab train dit $P \
  --out "$CARDIOLAB_ROOT/runs/smoke/dit-ddp"
step smoke_runs 30 $PY - "$CARDIOLAB_ROOT/runs/smoke" "$OUT/smoke_runs.json" <<'EOF'
import json, sys
from pathlib import Path
rows = {}
for conf in sorted(Path(sys.argv[1]).glob("*/config.json")):
    c, m = json.loads(conf.read_text()), conf.parent / "metrics.jsonl"
    last = json.loads(m.read_text().splitlines()[-1]) if m.exists() and m.read_text().strip() else {}
    rows[conf.parent.name] = {"precision": c.get("precision"), "machine": c.get("machine"),
                              "s_per_step": last.get("s_per_step"), "step": last.get("step")}
json.dump(rows, open(sys.argv[2], "w"), indent=1)
print(json.dumps(rows, indent=1))
EOF

# 6. extras
step dit_b4_fp32 90 $c bench dit $DIT --batch 4 --steps 5 --warmup 2 --precision fp32 --json "$OUT/dit_b4_fp32.json"
step dit_b8_bf16 90 $c bench dit $DIT --batch 8 --steps 10 --warmup 3 --precision bf16 --json "$OUT/dit_b8_bf16.json"
step dit_b4_ckpt 90 $c bench dit $DIT --batch 4 --steps 10 --warmup 3 --precision bf16 --checkpointing --json "$OUT/dit_b4_ckpt.json"
step dit_b4_compile 180 $c bench dit $DIT --batch 4 --steps 10 --warmup 3 --precision bf16 --compile --json "$OUT/dit_b4_compile.json"
echo "total $(awk "BEGIN {print int($EPOCHREALTIME - $start)}") s"
