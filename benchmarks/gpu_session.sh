#!/usr/bin/env bash
# One call on a lent accelerator: the measuring suite, then `tokdyn reproduce --quick` one study at
# a time for as long as the time allows (each study keeps its finished parts and the report is
# rewritten after each), everything written under OUT.
#
#   bash benchmarks/gpu_session.sh OUT TOTAL_SECONDS SUITE_SECONDS [suite options...]
#
# Run from the checkout's root; tokdyn is imported from it (no install needed). OUT receives
# gpu.txt (the device), suite.json / suite.md / suite.log / suite.err / trace.tgz, reproduce.log and
# reproduce.tgz (every study directory without its .npz parts).
set -u
OUT=$1 TOTAL=$2 SUITE_T=$3
shift 3
START=$(date +%s)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TOKDYN_CACHE_DIR=${TOKDYN_CACHE_DIR:-/tmp/tokdyn-jax-cache}
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1
  python3 -c "import jax; print(jax.__version__, jax.devices())" 2>&1; } > "$OUT/gpu.txt"
timeout "$SUITE_T" python3 benchmarks/suite.py --out "$OUT" --budget $((SUITE_T * 3 / 4)) "$@" 2>"$OUT/suite.err"
echo "suite rc=$? at $(( $(date +%s) - START )) s"
for st in token-dynamics token-dynamics-sweep collapse scenes visual-tokens grid-diffusion latent-reasoning \
          latent-diagnostics latent-optimisation; do
  left=$(( TOTAL - ($(date +%s) - START) ))
  [ "$left" -lt 15 ] && break
  t=$(date +%s)
  timeout "$left" python3 -m tokdyn.cli reproduce --quick --no-plots --quiet --out /tmp/tokdyn-rq --studies "$st" \
    >> "$OUT/reproduce.log" 2>&1
  echo "== $st rc=$? $(( $(date +%s) - t )) s" | tee -a "$OUT/reproduce.log"
done
tar czf "$OUT/reproduce.tgz" --exclude='*.npz' -C /tmp tokdyn-rq
echo "total $(( $(date +%s) - START )) s"
