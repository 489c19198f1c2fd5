#!/usr/bin/env bash
# Every GPU figure of the GPU issue, in two device calls of under 10 minutes each on an H100:
#   bash benchmarks/gpu_session.sh speed    # ~8 min: step speed, compile, packing in processes,
#                                            #   checkpoint cost, a 24-epoch train, path parity
#   bash benchmarks/gpu_session.sh search   # ~8 min: packing inside s9tune search (1, 0.5, 0.25
#                                            #   GPU/trial) and the shipped default search for 3 min
# Prepare here:  ../shared/tools/gpu-bundle.sh .venv/bin/python
#                mkdir -p .data && cp -r ../shared/data/cifar10-mini .data/
# Then run each part with the device tool: carry [".gpu", ".data"] and the command
#   bash .gpu/install.sh && export PYTHONPATH=/tmp/site:$PWD && bash benchmarks/gpu_session.sh speed
# Results land in $OUT (or /tmp/gpu-results); copy the figures, with this command, into RESULTS.md.
set -uo pipefail
part=${1:-speed}
out=${OUT:-/tmp/gpu-results}; mkdir -p "$out"
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
"$py" benchmarks/make_cifar_like.py /tmp/cifar-like >/dev/null
if [[ $part == speed ]]; then
  # 1. step speed, data share, checkpoint cost, packing 1/2/4/8 in processes (eager, then compiled)
  "$py" benchmarks/gpu_speed.py --json "$out/gpu_speed.json" 2>&1 | tee "$out/gpu_speed.txt"
  "$py" benchmarks/gpu_speed.py --compile --packing 1 --json "$out/gpu_speed_compile.json" 2>&1 | tee "$out/gpu_speed_compile.txt"
  # 2. the real CLI: a 24-epoch train at width 64 with a test evaluation every epoch, on CIFAR-shaped data
  { time "$py" -m s9tune train --data-dir /tmp/cifar-like --set val_size=0 --out /tmp/run24 --force; } \
    2>&1 | tail -30 | tee "$out/train24.txt"
  cp /tmp/run24/metrics.json "$out/train24_metrics.json"
  # 3. no accuracy lost on the fast path: mini slice, width 64, 3 seeds per path
  "$py" benchmarks/path_parity.py --data-dir .data/cifar10-mini --width 64 --epochs 12 --batch-size 128 --seeds 3 \
    --device cuda --json "$out/parity.json" 2>&1 | tee "$out/parity.txt"
else
  # 4. packing inside a real search: every config on one 2-epoch schedule, 90 s per setting
  "$py" benchmarks/search_packing.py --data-dir /tmp/cifar-like --gpus-per-trial 1,0.5,0.25 --epochs 2 \
    --time-limit 90 --json "$out/search_packing.json" 2>&1 | tee "$out/search_packing.txt"
  # 5. the shipped default search as it is, stopped after 3 minutes: runs per GPU-hour, occupancy
  "$py" benchmarks/search_packing.py --data-dir /tmp/cifar-like --keep-scheduler --gpus-per-trial 0.25 \
    --time-limit 180 --json "$out/default_search.json" 2>&1 | tee "$out/default_search.txt"
fi
echo "results in $out"
