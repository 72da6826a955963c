#!/usr/bin/env bash
# The GPU self-check in one script: the environment, the CUDA tests, the benchmark and the stacked
# benchmark, each logged as it happens into one folder.
#
#   bash benchmarks/gpu_check.sh --data /path/to/data           # on a machine with a CUDA GPU
#   bash benchmarks/gpu_check.sh --rehearse --out /tmp/rehearsal # the same on a CPU, tiny
#
# Options:
#   --out DIR        the output folder (default runs/gpu_check)
#   --data DIR       the folder holding cifar-10-batches-py/ (default: $RESNET_REPRO_DATA, else
#                    synthetic data of CIFAR-10's size); the real-data CUDA test uses it too
#   --rehearse       on the CPU at tiny settings: the CUDA tests' logic on the CPU
#                    (RESNET_REPRO_TEST_DEVICE=cpu) and tiny benchmarks
#   --skip-tests     no CUDA tests
#   --skip-bench     no benchmarks
# Each stage runs to its end; to bound one, set its cap in seconds: TESTS_CAP_S, BENCH_CAP_S,
# STACK_CAP_S (a stage cut short keeps what it wrote).
#
# The output folder:
#   gpu_check.log    all of it: environment, every stage's output and how long it took
#   pytest_cuda.log  pytest -m cuda
#   bench.json       benchmarks/throughput.py at short settings (and k runs sharing the GPU)
#   stacked.json     benchmarks/stacked.py: k runs as one stacked net against k runs in turn
#                    (the rows stacking.MEASURED_SPEEDUP takes for trainer.stack=auto)
set -uo pipefail
cd "$(dirname "$0")/.."

die() { echo "gpu_check: error: $*" >&2; exit 2; }
dest="runs/gpu_check" data="${RESNET_REPRO_DATA:-}" rehearse=0 skip_tests=0 skip_bench=0
while (($#)); do
  case "$1" in
    --out) dest=${2:?--out needs a folder}; shift 2 ;;
    --data) data=${2:?--data needs a folder}; shift 2 ;;
    --rehearse) rehearse=1; shift ;;
    --skip-tests) skip_tests=1; shift ;;
    --skip-bench) skip_bench=1; shift ;;
    -h|--help) sed -n '2,24p' "$0" | cut -c3-; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ -z "$data" ] || [ -d "$data/cifar-10-batches-py" ] || die "--data $data holds no cifar-10-batches-py/"
mkdir -p "$dest" || die "cannot make $dest"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
[ -z "$data" ] || export RESNET_REPRO_DATA=$data
exec > >(tee -a "$dest/gpu_check.log") 2>&1
tee_pid=$!

t0=$(date +%s)
stage() { echo; echo "== $1 ($(date -u +%H:%M:%S) UTC) =="; stage_t=$(date +%s); }
took() { echo "-- $1 took $(($(date +%s) - stage_t)) s"; }
# a stage's command, under its cap in seconds when one is set
capped() {
  local cap=$1; shift
  if [ -n "$cap" ]; then timeout --signal=INT --kill-after=20 "$cap" "$@"; else "$@"; fi
}

if [ $rehearse = 1 ]; then
  export RESNET_REPRO_TEST_DEVICE=cpu
  bench_args=(--device cpu --depths 8 14 --variants residual --batch 32 --warmup 1 --iters 2 --windows 2 --compile off
              --synthetic-per-batch 200 --share 1 2)
  stack_args=(--device cpu --ks 1 2 --depth 8 --batch 16 --iters 1 --warmup 1)
else
  bench_args=(--depths 20 56 110 --variants residual --warmup 5 --iters 15 --windows 3 --share 1 2 4)
  [ -z "$data" ] || bench_args+=(--data "$data")
  stack_args=(--device cuda --ks 1 2 4 6 --depth 20 --iters 30 --warmup 5 --precision bf16 --compile default)
fi

stage "environment"
echo "commit: ${RESNET_REPRO_GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}; rehearse=$rehearse;" \
     "data: ${data:-synthetic}"
nvidia-smi 2>/dev/null || echo "nvidia-smi: not found (no NVIDIA GPU here)"
$PY - <<'PY'
import os, platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}, {os.cpu_count()} CPU cores")
print("device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")
import hydra, omegaconf, pytest, yaml  # what the stages need besides torch
print(f"hydra {hydra.__version__}, omegaconf {omegaconf.__version__}, pytest {pytest.__version__}, pyyaml {yaml.__version__}")
PY
took "environment"

tests_ok=1
if [ $skip_tests = 0 ]; then
  stage "CUDA tests: pytest -m cuda"
  capped "${TESTS_CAP_S:-}" $PY -m pytest -m cuda tests/test_cuda.py -q -rs -p no:cacheprovider \
    2>&1 | tee "$dest/pytest_cuda.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || { tests_ok=0; echo "CUDA TESTS FAILED (exit $rc$([ "$rc" = 124 ] && echo ': out of time'))"; }
  took "CUDA tests"
fi

# a benchmark stage: its name, its cap (empty: none), what is kept when it is cut short, the command
bench_stage() {
  local name=$1 cap=$2 kept=$3; shift 3
  stage "$name"
  capped "$cap" "$@"
  rc=$?
  [ "$rc" = 0 ] || echo "$name: exit $rc$([ "$rc" = 124 ] && echo ": out of time ($kept)")"
  took "$name"
}
if [ $skip_bench = 0 ]; then
  bench_stage "benchmark (short settings)" "${BENCH_CAP_S:-}" "bench.json keeps the nets measured" \
    $PY benchmarks/throughput.py "${bench_args[@]}" --json "$dest/bench.json"
  bench_stage "stacked benchmark" "${STACK_CAP_S:-}" "its table above has the rows measured" \
    $PY benchmarks/stacked.py "${stack_args[@]}" --json "$dest/stacked.json"
fi

echo
echo "== done in $(($(date +%s) - t0)) s; files in $dest: $(cd "$dest" && ls | tr '\n' ' ')"
status=$([ $tests_ok = 1 ] && echo 0 || echo 1)
exec >&- 2>&-  # close the pipe to tee, and let it write the last lines before the script ends
wait "$tee_pid"
exit "$status"
