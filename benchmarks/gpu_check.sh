#!/usr/bin/env bash
# Issue #4's GPU check as one prepared script (under 8 minutes on one H100/H200):
#   1. benchmarks/checkpoint.py --device cuda: async-save blocking window and write throughput with
#      the model and Adam state on the GPU (the snapshot goes to pinned host memory);
#   2. benchmarks/gpt_gpu.py: a few hundred steps of a small GPT (GPT-2 small, then a 24-layer
#      1024-wide one), with the planner's predicted tokens/s, MFU and memory beside the measured ones;
#   3. the checkpoint tests against the card's own torch (its release may differ from ours).
# Results land in $OUT (or /tmp/gpu_check): one JSON per run plus its log. modelplane.train imports
# pydantic (the spec types); where the GPU image lacks it, install its wheels first (pydantic,
# pydantic_core, annotated-types, typing-inspection, as pinned in constraints.txt) and put them on PYTHONPATH.
#   bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/nvidia-smi.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
df -h /tmp | tail -1
timeout 210 $PY benchmarks/checkpoint.py --device cuda --repeats 3 >"$OUT/checkpoint_cuda.json" 2>"$OUT/checkpoint_cuda.log"
echo "checkpoint exit $?"; tail -3 "$OUT/checkpoint_cuda.log"
timeout 120 $PY benchmarks/gpt_gpu.py >"$OUT/gpt_small.json" 2>"$OUT/gpt_small.log"
echo "gpt small exit $?"; tail -3 "$OUT/gpt_small.log"
timeout 120 $PY benchmarks/gpt_gpu.py --layers 24 --hidden 1024 --heads 16 --micro-batch 8 --steps 200 \
    >"$OUT/gpt_medium.json" 2>"$OUT/gpt_medium.log"
echo "gpt medium exit $?"; tail -3 "$OUT/gpt_medium.log"
timeout 120 $PY -m pytest --noconftest -q -p no:cacheprovider tests/train/test_checkpoint.py >"$OUT/pytest_checkpoint.log" 2>&1
echo "checkpoint tests exit $?"; tail -3 "$OUT/pytest_checkpoint.log"
$PY - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for name in ("checkpoint_cuda", "gpt_small", "gpt_medium"):
    try:
        d = json.loads((out / f"{name}.json").read_text())
    except Exception as exc:
        print(name, "no result:", exc)
        continue
    if name.startswith("gpt"):
        print(name, json.dumps({k: d[k] for k in ("device", "compiled", "measured", "planner",
                                                  "ratio_measured_over_predicted_tokens_per_s")}))
    else:
        print(name, json.dumps(d)[:3000])
PY
