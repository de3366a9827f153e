#!/usr/bin/env bash
# The prepared device call (benchmarks/device_session.py): `TOKDYN_COMMIT=C bash benchmarks/device_session.sh [--plan|--smoke]`,
# C the commit of the tree sent, +dirty where it has uncommitted changes (the device's copy may carry another .git)
cd "$(dirname "$0")/.." && exec python3 benchmarks/device_session.py "$@"
