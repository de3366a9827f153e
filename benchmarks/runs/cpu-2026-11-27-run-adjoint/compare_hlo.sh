#!/bin/bash
# The default early-exit run's optimised XLA program and results, at 22af603 and at this checkout:
# run from the checkout's root; writes nothing outside /tmp/adj.
set -e
mkdir -p /tmp/adj/old && git archive 22af603 tokdyn | tar -x -C /tmp/adj/old
D=benchmarks/runs/cpu-2026-11-27-run-adjoint
PYTHONPATH=/tmp/adj/old python $D/compare_hlo.py /tmp/adj/old_run
python $D/compare_hlo.py /tmp/adj/new_run
strip() { grep -E '^\s*(ROOT )?[%a-zA-Z_][^ ]* = |^[a-zA-Z_%].*\{$|^ENTRY' "$1" | sed -E 's/\.[0-9]+//g; s/,? ?stack_frame_id=[0-9]+//g; s/origin=\{[^}]*\}//g'; }
echo "instructions of the optimised program (names, metadata and source locations stripped): $(strip /tmp/adj/old_run.hlo | wc -l) before, $(strip /tmp/adj/new_run.hlo | wc -l) after; lines differing: $(diff <(strip /tmp/adj/old_run.hlo) <(strip /tmp/adj/new_run.hlo) | wc -l)"
python -c "
import numpy as np
print('final tokens of 3 vmapped runs bit-identical:', np.array_equal(np.load('/tmp/adj/old_run.npy'), np.load('/tmp/adj/new_run.npy')))
print('engine ClusterRun outputs of 8 seeds bit-identical:', np.array_equal(np.load('/tmp/adj/old_run_engine.npy'), np.load('/tmp/adj/new_run_engine.npy'), equal_nan=True))
"
