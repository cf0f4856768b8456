#!/usr/bin/env bash
# The benchmark on a machine whose JAX sees a GPU, plus the EM core's tests there.
#
#   benchmarks/accelerator.sh OUTDIR
#
# Runs from a checkout (jaxgmm on PYTHONPATH) with the machine's own jax, scikit-learn and
# gmmx. Writes OUTDIR/BENCHMARKS.md, OUTDIR/benchmarks/results-accelerator.{json,png} and logs;
# copy the json into benchmarks/ and run `benchmarks/run.py --report-only` to add its section.
set -uo pipefail
out=${1:?usage: benchmarks/accelerator.sh OUTDIR}
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>&1 | tee "$out/gpu.txt"
python3 -c "import jax, jaxgmm, gmmx, sklearn; print(jax.__version__, jax.devices())" 2>&1 | tee -a "$out/gpu.txt"
python3 benchmarks/run.py --accelerator --libs jaxgmm,jaxgmm-fast,sklearn,gmmx --out "$out/BENCHMARKS.md" \
    2>&1 | tee "$out/bench.log"
timeout "${TEST_TIMEOUT:-180}" python3 -m pytest -q -p no:cacheprovider tests/test_em.py tests/test_matmul_precision.py \
    2>&1 | tee "$out/tests.log" | tail -5
