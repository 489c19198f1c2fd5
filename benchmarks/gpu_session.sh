#!/usr/bin/env bash
# Every GPU measurement of issue 4/4 in one device call (about 8-9 minutes on an H100).
# Prepare here:  ../shared/tools/gpu-bundle.sh .venv/bin/python
#                mkdir -p .data && cp -r ../shared/data/cifar10-mini .data/
# Then run it with the device tool: carry [".gpu", ".data"] and the command
#   bash .gpu/install.sh && export PYTHONPATH=/tmp/site:$PWD && bash benchmarks/gpu_session.sh
# Results land in $OUT (or /tmp/gpu-results); copy the figures, with this command, into RESULTS.md.
set -uo pipefail
out=${OUT:-/tmp/gpu-results}; mkdir -p "$out"
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
# 1. step speed, data share, packing 1/2/4/8 (eager, then compiled)
"$py" benchmarks/gpu_speed.py --json "$out/gpu_speed.json" 2>&1 | tee "$out/gpu_speed.txt"
"$py" benchmarks/gpu_speed.py --compile --packing 1 --json "$out/gpu_speed_compile.json" 2>&1 | tee "$out/gpu_speed_compile.txt"
# 2. the real CLI: a 24-epoch train at width 64 with a test evaluation every epoch, on CIFAR-shaped data
"$py" benchmarks/make_cifar_like.py /tmp/cifar-like >/dev/null
{ time "$py" -m s9tune train --data-dir /tmp/cifar-like --set val_size=0 --out /tmp/run24 --force; } \
  2>&1 | tail -30 | tee "$out/train24.txt"
cp /tmp/run24/metrics.json "$out/train24_metrics.json"
# 3. no accuracy lost on the fast path: mini slice, width 64, 3 seeds per path
"$py" benchmarks/path_parity.py --data-dir .data/cifar10-mini --width 64 --epochs 12 --batch-size 128 --seeds 3 \
  --device cuda --json "$out/parity.json" 2>&1 | tee "$out/parity.txt"
echo "results in $out"
