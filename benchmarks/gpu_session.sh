#!/usr/bin/env bash
# Every GPU figure of the GPU issue, in two device calls that fit one session's 15 minutes:
#   bash benchmarks/gpu_session.sh speed    # ~6 min on an H200: step speed, data share, checkpoint
#                                            #   cost, a 24-epoch CLI train, packing in processes,
#                                            #   path parity on the mini slice, compile
#   bash benchmarks/gpu_session.sh search   # ~5 min: packing inside s9tune search (1, 0.5, 0.25
#                                            #   GPU/trial), then the shipped default search
#   bash benchmarks/gpu_session.sh recheck  # ~4.5 min: after the fixes, the figures they change
#   bash benchmarks/gpu_session.sh product  # <= 9.5 min: the headline figures of gpu_results.json:
#                                            #   the 24-epoch train (fit and process time, steady
#                                            #   images/s, MFU) and the shipped default search run
#                                            #   to the end; then, as time allows, what a reused
#                                            #   process keeps per run (eager, compiled) and the
#                                            #   gpu-marked tests
#   QUICK=1 bash benchmarks/gpu_session.sh speed|search|recheck   # the same steps, tiny, on this CPU
# Prepare here:  ../shared/tools/gpu-bundle.sh .venv/bin/python
#                mkdir -p .data && tar -C ../shared/data -cJf .data/mini.tar.xz cifar10-mini
#                (xz: .gpu and the mini slice together must stay under the tool's 64 MiB)
# Then run each part with the device tool: carry [".gpu", ".data"] and the command
#   bash .gpu/install.sh && export PYTHONPATH=/tmp/site:$PWD && bash benchmarks/gpu_session.sh speed
# (for `product`, put S9TUNE_COMMIT=<git rev-parse HEAD> in front: the copy there has no .git)
# Every step has its own time limit, in priority order, so a slow or broken step costs only
# itself. After each step all results so far are packed into $OUT/results-PART.tgz (the device
# tool brings back few files), beside $OUT/session-PART.log.
set -uo pipefail
part=${1:-speed}
out=${OUT:-/tmp/gpu-results}
res=$(mktemp -d /tmp/gpu-res.XXXX)
mkdir -p "$out"
py=${PYTHON:-python3}
quick=${QUICK:-}
log="$res/session-$part.log"
export PYTHONUNBUFFERED=1

step() {  # step NAME LIMIT_S CMD...: run with a time limit, log it, pack what exists so far
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s): $*" | tee -a "$log"
  local t0=$SECONDS
  timeout --signal=INT --kill-after=20 "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$log"
  tar -czf "$out/results-$part.tgz" -C "$res" . && cp "$log" "$out/"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "no nvidia-smi"
  "$py" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())"
  nproc; } | tee "$res/machine.txt" | tee -a "$log"
if [[ -n $quick ]]; then
  cifar_args=(--per-batch 200); dev=cpu
  speed=(--quick --device cpu); compile=("${speed[@]}"); pack=(--quick --device cpu --packing 1,2)
  train_set=(--set width=4 --set epochs=2 --set batch_size=64 --set device=cpu)
  parity=(--width 4 --epochs 1 --batch-size 128 --seeds 2 --device cpu)
  spack=(--device cpu --width 4 --gpus-per-trial 0 --slots 2 --configs 2 --epochs 1 --time-limit 60)
  spack_re=("${spack[@]}")
  sdefault=(--device cpu --width 4 --gpus-per-trial 0 --slots 2 --keep-scheduler --space smoke --time-limit 60)
  sfull=(--device cpu --width 4 --gpus-per-trial 0 --slots 2 --keep-scheduler --space smoke --time-limit 240)
  reuse=(--quick --device cpu)
else
  cifar_args=(); dev=cuda
  speed=(--images 25000 --epochs 3); compile=(--images 20000 --epochs 2)
  pack=(--images 10000 --eval-images 2000 --epochs 6 --packing 1,2,4,8)
  train_set=()
  parity=(--width 64 --epochs 10 --batch-size 128 --seeds 3 --device cuda)
  spack=(--gpus-per-trial 1,0.5,0.25 --epochs 2 --time-limit 50)
  spack_re=(--gpus-per-trial 1,0.25,0.125 --epochs 2 --time-limit 40)
  sdefault=(--keep-scheduler --gpus-per-trial 0.25 --time-limit 90)
  sfull=(--keep-scheduler --gpus-per-trial 0.25 --time-limit 400)
  reuse=(--runs 4 --epochs 3 --images 25000 --eval-images 5000)
fi
"$py" benchmarks/make_cifar_like.py /tmp/cifar-like "${cifar_args[@]}" >/dev/null
# the real CLI's 24-epoch train (width 64, batch 512, a test evaluation every epoch), its metrics kept
# a fresh folder each session: --force replaces only what s9tune made, and the run's checkpoints stay out of $res
run24="$(mktemp -d /tmp/run24.XXXX)/run"
train_cmd="$py -m s9tune train --data-dir /tmp/cifar-like --set val_size=0 ${train_set[*]} --set device=$dev --out $run24 && cp $run24/metrics.json $run24/metrics.jsonl $res/"
train24=(bash -c "time $train_cmd")
# the same train with its whole process timed (import, data, fit, analysis-free exit), in seconds
train24t=(bash -c "t0=\$(date +%s%N); $train_cmd && ms=\$(( (\$(date +%s%N) - t0) / 1000000 )) && printf '%d.%03d\n' \$((ms / 1000)) \$((ms % 1000)) > $res/train24_process_s.txt")
mini=.data/cifar10-mini
if [[ -f .data/mini.tar.xz ]]; then rm -rf /tmp/mini && mkdir -p /tmp/mini && tar -C /tmp/mini -xJf .data/mini.tar.xz && mini=/tmp/mini/cifar10-mini; fi

if [[ $part == speed ]]; then
  # 1. steady step speed (eager), data path share, checkpoint cost, peak memory
  step speed 120 "$py" benchmarks/gpu_speed.py "${speed[@]}" --packing 0 --json "$res/gpu_speed.json"
  # 2. the real CLI: a 24-epoch train at width 64, batch 512, a test evaluation every epoch
  step train24 200 "${train24[@]}"
  # 3. packing: k processes on one GPU, each with a 1/k memory cap
  step packing 120 "$py" benchmarks/gpu_speed.py "${pack[@]}" --json "$res/gpu_packing.json"
  # 4. no accuracy lost on the fast path: mini slice, width 64, 3 seeds per path
  step parity 150 "$py" benchmarks/path_parity.py --data-dir "$mini" "${parity[@]}" --json "$res/parity.json"
  # 5. torch.compile: compile time and compiled steady speed
  step compile 180 "$py" benchmarks/gpu_speed.py "${compile[@]}" --compile --packing 0 --json "$res/gpu_speed_compile.json"
elif [[ $part == recheck ]]; then
  # after the fixes of the first session's figures (memory cap, checkpoint pacing, actor reuse):
  # the gpu tests, the 24-epoch train, packing in a search at 1, 0.25 and 0.125, and in processes
  step gpu_tests 60 "$py" -m pytest -q -m gpu -p no:cacheprovider tests/test_checkpoint_pacing.py
  step train24 100 "${train24[@]}"
  step search_packing 200 "$py" benchmarks/search_packing.py --data-dir /tmp/cifar-like "${spack_re[@]}" --json "$res/search_packing.json"
  step packing 60 "$py" benchmarks/gpu_speed.py "${pack[@]}" --json "$res/gpu_packing.json"
elif [[ $part == product ]]; then
  step train24 120 "${train24t[@]}"
  step default_search 420 "$py" benchmarks/search_packing.py --data-dir /tmp/cifar-like "${sfull[@]}" --json "$res/default_search.json"
  step results 40 "$py" benchmarks/gpu_results.py "$res" --out "$res/gpu_results.json"
  # what a reused actor keeps from run to run, eager and compiled (lowest priority: last)
  step reuse 60 "$py" benchmarks/run_reuse.py "${reuse[@]}" --json "$res/run_reuse.json"
  step reuse_compile 90 "$py" benchmarks/run_reuse.py "${reuse[@]}" --compile --json "$res/run_reuse_compile.json"
  step gpu_tests 60 "$py" -m pytest -q -m gpu -p no:cacheprovider tests/
else
  # 6. packing inside a real search: every config on one 2-epoch schedule
  step search_packing 270 "$py" benchmarks/search_packing.py --data-dir /tmp/cifar-like "${spack[@]}" --json "$res/search_packing.json"
  # 7. the shipped default search as it is, stopped early: runs per GPU-hour, occupancy
  step default_search 140 "$py" benchmarks/search_packing.py --data-dir /tmp/cifar-like "${sdefault[@]}" --json "$res/default_search.json"
fi
echo "results in $out" | tee -a "$log"
