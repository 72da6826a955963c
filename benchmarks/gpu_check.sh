#!/usr/bin/env bash
# A GPU window in one script: the environment, the CUDA self-check, the benchmark, then the study
# with the time that is left. Everything is logged as it happens into one folder of at most 8 files.
#
#   source .device/kit/on-device.sh && bash benchmarks/gpu_check.sh --budget-min 9   # on the GPU machine
#   bash benchmarks/gpu_check.sh --rehearse --out /tmp/rehearsal                    # the same on a CPU, tiny
#
# Options:
#   --budget-min N   wall-clock minutes for the whole script (default 9; 30, CI's limit, with --rehearse)
#   --out DIR        the output folder (default: $OUT where set, else runs/gpu_check)
#   --rehearse       on the CPU at tiny settings: the CUDA tests' logic on the CPU
#                    (RESNET_REPRO_TEST_DEVICE=cpu), a tiny benchmark, a tiny study on synthetic data
#   --skip-tests     no CUDA tests, and no warm-up beside them (a later window, on code whose tests
#                    passed on this GPU)
#   --skip-bench     no benchmarks (give --timings, or the study times its nets itself)
#   --timings FILE   timings for the study runner besides this window's (e.g. an earlier bench.json)
#   --study-min M    at most M minutes for the study (default: what is left; with --rehearse,
#                    time for its first job at the speed this machine measured, at least 1)
#   --study-out DIR  where the study's runs go (default: runs/study/gpu_check, or gpu_check-rehearsal)
#   --study-anyway   run the study even when a CUDA test failed (by default it is not run)
#   anything else    config overrides for every study job (e.g. trainer.precision=fp32)
# Stage caps (seconds): TESTS_CAP_S (default 240), BENCH_CAP_S (180), STACK_CAP_S (120); 900, 600 and
# 600 with --rehearse.
#
# The output folder:
#   gpu_check.log    all of it: environment, every stage's output and how long it took
#   pytest_cuda.log  pytest -m cuda
#   warm.log         the study's pending nets compiled once each, beside the tests (filling the
#   warm.json          compile caches for the study's runs), and timed there
#   bench.json       benchmarks/throughput.py at short settings (and k runs sharing the GPU)
#   stacked.json     benchmarks/stacked.py: k runs as one stacked net against k runs in turn
#                    (the rows stacking.MEASURED_SPEEDUP takes for trainer.stack=auto)
#   study.log        resnet-study run with the time that is left
#   study.tar.xz     the completed run records (no checkpoints): `resnet-study unpack` files them
#                    under analysis/results/<date>-<gpu>-<schedule>/
set -uo pipefail
cd "$(dirname "$0")/.."

die() { echo "gpu_check: error: $*" >&2; exit 2; }
number() { [[ $2 =~ ^[0-9]+([.][0-9]+)?$ ]] || die "$1 $2 is not a number of minutes"; }
budget_min="" out="${OUT:-}" rehearse=0 skip_tests=0 skip_bench=0 study_anyway=0 study_min=""
study_dir="" timings=() overrides=()
while (($#)); do
  case "$1" in
    --budget-min) number "$1" "${2:-}"; budget_min=$2; shift 2 ;;
    --study-min) number "$1" "${2:-}"; study_min=$2; shift 2 ;;
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    --study-out) study_dir=${2:?--study-out needs a folder}; shift 2 ;;
    --timings) timings+=(--timings "${2:?--timings needs a JSON file}"); shift 2 ;;
    --rehearse) rehearse=1; shift ;;
    --skip-tests) skip_tests=1; shift ;;
    --skip-bench) skip_bench=1; shift ;;
    --study-anyway) study_anyway=1; shift ;;
    -h|--help) sed -n '2,33p' "$0" | cut -c3-; exit 0 ;;
    --*) die "unknown option $1 (see --help)" ;;
    *) overrides+=("$1"); shift ;;
  esac
done
out=${out:-runs/gpu_check}
budget_min=${budget_min:-$([ $rehearse = 1 ] && echo 30 || echo 9)}
study_dir=${study_dir:-runs/study/gpu_check$([ $rehearse = 1 ] && echo -rehearsal)}  # never the real study's runs
mkdir -p "$out" || die "cannot make $out"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
exec > >(tee -a "$out/gpu_check.log") 2>&1
tee_pid=$!

t0=$(date +%s)
deadline=$($PY -c "print(int($t0 + $budget_min * 60))")
left_s() { echo $((deadline - $(date +%s))); }
stage() { echo; echo "== $1 ($(date -u +%H:%M:%S) UTC; $(left_s) s of the budget left) =="; stage_t=$(date +%s); }
took() { echo "-- $1 took $(($(date +%s) - stage_t)) s"; }
cap_for() { local l; l=$(left_s); echo $(( l < $1 ? l : $1 )); }  # a stage's seconds: its cap, or what is left
warm_pid=""
stop_warm() { if [ -n "$warm_pid" ]; then kill "$warm_pid" 2>/dev/null; wait "$warm_pid" 2>/dev/null; warm_pid=""; fi; }
trap stop_warm EXIT

# the settings: the real study on the GPU, or a tiny one on the CPU
if [ $rehearse = 1 ]; then
  export RESNET_REPRO_TEST_DEVICE=cpu
  study_ov=(dataset=synthetic trainer.device=cpu trainer.batch_size=32 trainer.eval_batch_size=128
            schedule.iterations=20 "schedule.milestones=[10,15]" trainer.log_every=5 trainer.eval_every=10)
  bench_args=(--device cpu --depths 8 14 --variants residual --batch 32 --warmup 1 --iters 2 --windows 2
              --synthetic-per-batch 200 --share 1 2)
  warm_args=(--ends-only --warmup 1 --iters 2 --windows 1)
  run_args=(--start-s 4 --reserve-s 10 --grace-s 10)
  # a rehearsal checks that every stage works, not the window's clock: generous caps, so that a
  # loaded machine makes it slower, not red
  stack_args=(--device cpu --ks 1 2 --depth 8 --batch 16 --iters 1 --warmup 1)
  tests_cap=${TESTS_CAP_S:-900} bench_cap=${BENCH_CAP_S:-600} stack_cap=${STACK_CAP_S:-600}
else
  data=${RESNET_REPRO_DATA:-../shared/data}
  study_ov=("dataset.root=$data" dataset.download=false)
  bench_args=(--depths 20 56 110 --variants residual --warmup 5 --iters 15 --windows 3 --share 1 2 4 --data "$data")
  warm_args=(--warmup 3 --iters 10 --windows 1)
  run_args=()
  stack_args=(--device cuda --ks 1 2 4 6 --depth 20 --iters 30 --warmup 5)
  tests_cap=${TESTS_CAP_S:-240} bench_cap=${BENCH_CAP_S:-180} stack_cap=${STACK_CAP_S:-120}
fi
study_ov+=("${overrides[@]}")

stage "environment"
echo "commit: ${RESNET_REPRO_GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}; budget ${budget_min} min; rehearse=$rehearse"
echo "study overrides: ${study_ov[*]}"
nvidia-smi 2>/dev/null || echo "nvidia-smi: not found (no NVIDIA GPU here)"
$PY - <<'PY'
import os, platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}, {os.cpu_count()} CPU cores")
print("device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")
import hydra, omegaconf, pytest, yaml  # what the stages need besides torch
print(f"hydra {hydra.__version__}, omegaconf {omegaconf.__version__}, pytest {pytest.__version__}, pyyaml {yaml.__version__}")
PY
tests_s=$([ $skip_tests = 0 ] && echo "$tests_cap" || echo 0) bench_s=$([ $skip_bench = 0 ] && echo "$((bench_cap + stack_cap))" || echo 0)
echo "plan: CUDA tests at most ${tests_s} s (the warm-up beside them), benchmarks at most ${bench_s} s, then the study:" \
     "at least $($PY -c "print(round(max(0, $(left_s) - $tests_s - $bench_s - 20) / 60, 1))") min$([ -n "$study_min" ] && echo " (capped at $study_min)")"
took "environment"

tests_ok=1
if [ $skip_tests = 0 ]; then
  # every pending study net compiled once beside the tests, with a share of the cores, so that the
  # study's runs compile from inductor's cache
  stage "warm-up of the study's nets (background)"
  half=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))
  TORCHINDUCTOR_COMPILE_THREADS=$half OMP_NUM_THREADS=$half \
    $PY -m resnet_repro.study warm --out "$study_dir" --json "$out/warm.json" "${warm_args[@]}" "${study_ov[@]}" \
    > "$out/warm.log" 2>&1 &
  warm_pid=$!
  echo "warm-up started (pid $warm_pid); its log: warm.log"

  stage "CUDA tests: pytest -m cuda"
  cap=$(cap_for "$tests_cap")
  if [ "$cap" -lt 30 ]; then
    tests_ok=0; echo "CUDA TESTS NOT RUN: ${cap} s left"
  else
    timeout --signal=INT --kill-after=20 "$cap" $PY -m pytest -m cuda tests/test_cuda.py -q -rs -p no:cacheprovider \
      2>&1 | tee "$out/pytest_cuda.log"
    rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || { tests_ok=0; echo "CUDA TESTS FAILED (exit $rc$([ "$rc" = 124 ] && echo ': out of time'))"; }
  fi
  took "CUDA tests"
  if [ -n "$warm_pid" ] && kill -0 "$warm_pid" 2>/dev/null; then
    echo "warm-up still running: stopped, so that what follows has the device alone (warm.json keeps what it measured)"
  fi
  stop_warm
  tail -n 12 "$out/warm.log"
fi

# a benchmark stage: its name, its cap in seconds, what is kept when it runs out of time, the command
bench_stage() {
  local name=$1 cap_s=$2 kept=$3; shift 3
  stage "$name"
  cap=$(cap_for "$cap_s")
  if [ "$cap" -lt 30 ]; then
    echo "$name not run: ${cap} s left"
  else
    timeout --signal=INT --kill-after=20 "$cap" "$@"
    rc=$?
    [ "$rc" = 0 ] || echo "$name: exit $rc$([ "$rc" = 124 ] && echo ": out of time ($kept)")"
  fi
  took "$name"
}
if [ $skip_bench = 0 ]; then
  bench_stage "benchmark (short settings)" "$bench_cap" "bench.json keeps the nets measured" \
    $PY benchmarks/throughput.py "${bench_args[@]}" --json "$out/bench.json"
  bench_stage "stacked benchmark" "$stack_cap" "its table above has the rows measured" \
    $PY benchmarks/stacked.py "${stack_args[@]}" --json "$out/stacked.json"
fi

stage "study"
# speed from the benchmark, measured alone on the device; the warm-up ran beside the tests, so its
# timings (slow, and with cold compiles) stand in only when there is no benchmark
if [ -f "$out/bench.json" ]; then timings+=(--timings "$out/bench.json")
elif [ -f "$out/warm.json" ]; then timings+=(--timings "$out/warm.json"); fi
if [ $rehearse = 1 ] && [ -z "$study_min" ]; then
  # a CPU rehearsal is no GPU window: its study gets the time its first job needs at the speed this
  # machine just measured (a loaded machine makes the rehearsal slower, never empty)
  first=$($PY -m resnet_repro.study run --dry-run --out "$study_dir" "${timings[@]}" "${run_args[@]}" "${study_ov[@]}" \
          2>/dev/null | awk '$1 ~ /^depth=/ {print $3; exit}')
  study_min=$($PY -c "print(round(max(1.0, 1.5 * float('${first:-1}') + 0.5), 2))")
  echo "rehearsal: the first job is estimated at ${first:-?} min here; the study gets ${study_min} min"
else
  study_min=$($PY -c "print(round(min(($(left_s) - 20) / 60, float('${study_min:-inf}')), 2))")
fi
if [ $tests_ok = 0 ] && [ $study_anyway = 0 ]; then
  echo "the study is not run: the CUDA tests did not pass (fix them first, or pass --study-anyway)"
elif $PY -c "import sys; sys.exit(float('$study_min') < 0.5)"; then
  # the runner stops its jobs at its own deadline; the outer limit only guards against a hang
  timeout --kill-after=15 "$($PY -c "print(int($study_min * 60 + 60))")" \
    $PY -m resnet_repro.study run --out "$study_dir" --budget-min "$study_min" "${timings[@]}" "${run_args[@]}" \
    --archive "$out/study.tar.xz" "${study_ov[@]}" 2>&1 | tee "$out/study.log"
  echo "study: exit ${PIPESTATUS[0]}"
else
  echo "no time left for the study (${study_min} min)"
fi
took "study"

echo
echo "== done in $(($(date +%s) - t0)) s; files in $out: $(cd "$out" && ls | tr '\n' ' ')"
n=$(find "$out" -maxdepth 1 -type f | wc -l)
[ "$n" -le 8 ] || echo "WARNING: $n files in $out; only 8 come back from the GPU machine"
status=$([ $tests_ok = 1 ] && echo 0 || echo 1)
exec >&- 2>&-  # close the pipe to tee, and let it write the last lines before the script ends
wait "$tee_pid"
exit "$status"
