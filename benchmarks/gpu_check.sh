#!/usr/bin/env bash
# The GPU check: one run of at most 8 minutes on a machine with an NVIDIA GPU, for the short
# time such a machine is lent. From the repository root:
#
#     bash benchmarks/gpu_check.sh [--dry-run] [OUT]      (OUT: default gpu-check)
#
# Steps, each under its own time limit, each recorded in OUT/summary.md with its status, time
# and the lines that matter:
#   1. setup      the project installed (pip, the tested set in constraints.txt) unless it imports
#   2. gpu        nvidia-smi and torch.cuda: the card, its memory, the CUDA torch was built with
#   3. tests      the test suite's device-relevant tests (fit, Lightning evaluation, resume,
#                 metrics) with the GPU visible: uqbench's accelerator=auto picks it
#   4. fit        one default `uqbench fit` (accelerator=auto): config.json's run.device
#   5. bf16       the same fit with trainer.precision=bf16-mixed
#   6. bench      a two-cell bench (msp, snapuq) with bench.jobs=2 sharing the GPU
#   7. train      training throughput, uqbench's loop against a plain loop, with GPU utilisation
#                 sampled by nvidia-smi every second
#   8. evaluate   evaluation throughput against a plain model(x) loop
#
# --dry-run checks that every step is well formed without a GPU (CI runs it): the commands
# parse, the fit and bench configurations resolve, the tests collect, the training benchmark
# parses, the evaluation benchmark runs both sides on the CPU over 64 images per file of its
# own official-format files; nothing trains.
set -uo pipefail

DRY=0
if [ "${1:-}" = "--dry-run" ]; then
  DRY=1
  shift
fi
OUT=${1:-gpu-check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SUMMARY="$OUT/summary.md"
PY=${PYTHON:-python}
STARTED=$(date +%s)
FAILED=0

{
  echo "# GPU check ($( [ $DRY = 1 ] && echo "dry run" || echo "run" ), $(date -u +%Y-%m-%dT%H:%M:%SZ))"
  echo
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); output in $OUT"
  echo
  echo "| step | status | seconds |"
  echo "|---|---|---|"
} > "$SUMMARY"
DETAILS="$OUT/details.md"
: > "$DETAILS"

# step NAME LIMIT_SECONDS COMMAND...: run it under a time limit, log it, record the outcome.
step() {
  local name=$1 limit=$2
  shift 2
  local log="$OUT/$name.log" begin end status
  begin=$(date +%s)
  timeout "$limit" "$@" > "$log" 2>&1
  status=$?
  end=$(date +%s)
  local word="ok"
  if [ $status = 124 ]; then word="TIMED OUT after ${limit} s"; FAILED=1
  elif [ $status != 0 ]; then word="FAILED (exit $status)"; FAILED=1; fi
  echo "| $name | $word | $((end - begin)) |" >> "$SUMMARY"
  {
    echo "## $name"
    echo
    echo '```'
    echo "\$ $*"
    tail -n 15 "$log"
    echo '```'
    echo
  } >> "$DETAILS"
}

# 1. setup: keep an environment that already imports the project (and its CUDA torch)
if [ $DRY = 1 ]; then
  step setup 30 $PY -m pip --version
elif ! $PY -c "import uqbench, torch, lightning" 2>/dev/null; then
  step setup 240 $PY -m pip install -q -c constraints.txt -e ".[test]"
else
  step setup 60 $PY -m pip install -q --no-deps --no-build-isolation -e .
fi

if [ $DRY = 1 ]; then
  step gpu 60 $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  step tests 120 $PY -m pytest -q --collect-only -p no:cacheprovider -m "not slow" \
    tests/test_fit.py tests/test_lightning.py tests/test_resume.py tests/test_metrics.py
  step fit 60 $PY -m uqbench fit --print-config trainer.accelerator=auto out="$OUT/runs" name=fit
  step bf16 60 $PY -m uqbench fit --print-config trainer.precision=bf16-mixed out="$OUT/runs"
  step bench 120 $PY -c "from uqbench.bench import check_cells, parse_matrix; \
check_cells(parse_matrix(['method=[msp,snapuq]', 'seed=[13]', 'bench.jobs=2', \
'bench.out=$OUT/bench']))"
  step train 60 $PY benchmarks/bench_train_loop.py --help
  # Both sides read a tiny root in the official formats: the files the GPU run writes load.
  step evaluate 120 $PY benchmarks/bench_eval_cifar10c.py --images 64 --corruptions 1 \
    --dir "$OUT/cifar10c"
else
  step gpu 20 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
&& $PY -c \"import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available(), torch.cuda.get_device_name(0))\""
  step tests 120 $PY -m pytest -q -x -p no:cacheprovider -m "not slow" \
    tests/test_fit.py tests/test_lightning.py tests/test_resume.py tests/test_metrics.py
  step fit 45 $PY -m uqbench fit trainer.accelerator=auto out="$OUT/runs" name=fit
  step bf16 45 $PY -m uqbench fit trainer.precision=bf16-mixed out="$OUT/runs" name=bf16
  step bench 75 $PY -m uqbench bench "method=[msp,snapuq]" "seed=[13]" bench.jobs=2 \
    bench.out="$OUT/bench"
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -l 1 \
    > "$OUT/utilization.csv" 2>/dev/null &
  SAMPLER=$!
  step train 75 $PY benchmarks/bench_train_loop.py --device cuda --images 8192 --rounds 2
  kill $SAMPLER 2>/dev/null
  step evaluate 45 $PY benchmarks/bench_eval_cifar10c.py --device cuda --corruptions 2
fi

{
  echo
  echo "## What was measured"
  echo
  if [ $DRY = 0 ]; then
    for run in fit bf16; do
      if [ -f "$OUT/runs/$run/config.json" ]; then
        $PY -c "import json,sys; c=json.load(open(sys.argv[1])); m=json.load(open(sys.argv[2])); \
print(f'- {sys.argv[3]}: device', c.get('run', {}).get('device'), '| precision', \
c['trainer_args'].get('precision', '32'), '| AUROC ID ok vs err', \
round(m['metrics']['id_vs_error']['auroc'], 4), '| train s', round(m['seconds']['train'], 1))" \
          "$OUT/runs/$run/config.json" "$OUT/runs/$run/metrics.json" "$run"
      fi
    done
    [ -f "$OUT/utilization.csv" ] && awk -F, '{u+=$1; if ($1>m) m=$1; n++} END \
{if (n) printf "- GPU utilisation during the training benchmark: mean %.0f%%, max %d%% (%d samples)\n", u/n, m, n}' \
      "$OUT/utilization.csv"
    grep -h "images/s\|ratio" "$OUT/train.log" "$OUT/evaluate.log" 2>/dev/null | sed 's/^/- /'
  else
    echo "- dry run: every step checked for form, nothing trained"
  fi
  echo
  echo "total $(( $(date +%s) - STARTED )) s"
  echo
  cat "$DETAILS"
} >> "$SUMMARY"
rm -f "$DETAILS"
echo "wrote $SUMMARY"
exit $FAILED
