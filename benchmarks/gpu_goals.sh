#!/usr/bin/env bash
# Every GPU measurement of issue #10 in one run, sized for one device call (~8 min on an H100):
#
#   bash benchmarks/gpu_goals.sh [PAPER_CODE_DIR] [--smoke]
#
# PAPER_CODE_DIR: a checkout of talcron/frame-prediction-pytorch (the paper's code, compared in the same run;
# never committed here). --smoke: tiny shapes and one iteration each, to check the script end to end on a
# CPU machine in a minute (its figures mean nothing).
#
# What it prints, in order (each step under its own time limit, so one slow step cannot eat the call):
#   0. the GPU, driver, torch, CUDA and cuDNN versions (write them next to every figure)
#   1. goal 1: gp at batch 64, 64x64x32, width 64: bf16 (ours vs the paper's code, same run), then fp32;
#      every other paper variant in bf16 vs the paper's code
#   2. goal 2: the CUDA tests of the trainer and losses (bf16 penalty and its gradients vs fp32, uint8 staging on
#      the device, the memory cap), when pytest is importable (tests/test_data.py needs PyAV: not run there)
#   3. goal 3: the data wait with the real pyarrow reader feeding gp at batch 64 (synthetic clips written as shards)
#   4. goal 4: 1, 2 and 4 trainers on the GPU at once (aggregate iterations/s, peak memory per trial)
#   5. goal 5: the top kernels of one gp iteration (torch.profiler)
#
# The device machine has torch, numpy, scipy and pyarrow but not pydantic: carry its cp312 wheels (pydantic,
# pydantic-core, annotated-types, typing-inspection; pytest, pluggy, iniconfig for step 2) unpacked into a
# folder on PYTHONPATH, with the checkout itself (see /work/.library/device/README.md).
set -u
PAPER=""
SMOKE=0
for a in "$@"; do
  case "$a" in
    --smoke) SMOKE=1 ;;
    *) PAPER="$a" ;;
  esac
done
PY=${PY:-python3}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "$SMOKE" = 1 ]; then
  SHAPE=(--frames 16 --size 32 --width 8 --z-dim 32 --batch 4); IT=(--iterations 1 --warmup 1); LONG=60; TRIALS=1,2
  DATA_CLIPS=64; DATA_SHAPE="16 32"
else
  SHAPE=(--batch 64); IT=(--iterations 5 --warmup 2); LONG=150; TRIALS=1,2,4
  DATA_CLIPS=512; DATA_SHAPE="32 64"
fi
PAPER_ARGS=()
[ -n "$PAPER" ] && [ "$SMOKE" = 0 ] && PAPER_ARGS=(--paper-code "$PAPER")

step() { echo; echo "=== $1"; shift; timeout "$@" || echo "(step ended with status $?)"; }

echo "=== 0. machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"

step "1a. gp bf16 vs the paper's code" "$LONG" $PY benchmarks/train_step.py "${SHAPE[@]}" "${IT[@]}" --bf16 "${PAPER_ARGS[@]}"
step "1b. gp fp32 (ours)" "$LONG" $PY benchmarks/train_step.py "${SHAPE[@]}" "${IT[@]}"
for v in sn sn_gp zero_gp one_sided drift; do
  step "1c. $v bf16 vs the paper's code" 60 $PY benchmarks/train_step.py "${SHAPE[@]}" --iterations 3 --warmup 1 --bf16 \
    --variant "$v" "${PAPER_ARGS[@]}"
done

if $PY -c "import pytest" 2>/dev/null; then
  step "2. CUDA tests (bf16 penalty numerics and gradients, device staging, memory cap)" 120 $PY -m pytest -q \
    -p no:cacheprovider tests/test_losses.py tests/test_trainer.py -k "cuda or bf16 or gpu_memory"
else
  echo; echo "=== 2. skipped: pytest is not importable here (carry its wheels to run the CUDA tests)"
fi

DATA_DIR=$(mktemp -d)
$PY - "$DATA_DIR" "$DATA_CLIPS" $DATA_SHAPE <<'EOF'
import sys
from pathlib import Path

import numpy as np

from vidgan.ingest import IngestConfig
from vidgan.ingest.decode import Decoded
from vidgan.ingest.sources import SourceFile
from vidgan.ingest.writer import ShardWriter, new_manifest

out, n, frames, size = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cfg = IngestConfig(frames=frames, size=size, shard_mb=64)
clips = np.random.default_rng(0).integers(0, 256, (n, frames, size, size, 3), dtype=np.uint8)
writer = ShardWriter(out, cfg, new_manifest(cfg, []))
writer.add(Decoded(SourceFile("synthetic", "synthetic", "video", None), clips=clips, starts=list(range(n)), fps=25.0))
writer.flush()
print(f"{n} synthetic clips of {frames}x{size}x{size} written as shards to {out}")
EOF
step "3. data wait: gp bf16 fed by the pyarrow reader" "$LONG" $PY benchmarks/train_step.py "${SHAPE[@]}" "${IT[@]}" --bf16 \
  --data "$DATA_DIR"
step "4. trainers sharing the GPU" $((LONG * 2)) $PY benchmarks/train_step.py "${SHAPE[@]}" "${IT[@]}" --bf16 --trials "$TRIALS"
step "5. profile of one gp iteration" "$LONG" $PY benchmarks/train_step.py "${SHAPE[@]}" --iterations 1 --warmup 1 --bf16 \
  --profile --top 20
rm -rf "$DATA_DIR"
