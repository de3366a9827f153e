#!/usr/bin/env bash
# The prepared device call (benchmarks/device_session.py): `bash benchmarks/device_session.sh [--plan|--smoke]`
cd "$(dirname "$0")/.." && exec python3 benchmarks/device_session.py "$@"
