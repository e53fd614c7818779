#!/usr/bin/env bash
# Run every benchmark and repeat their RATIO lines at the end.
# Usage: benchmarks/run_all.sh [--quick]   (PYTHON=/path/to/python to pick the interpreter)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# Benchmarks import neurde from this checkout whether or not it is installed.
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
python="${PYTHON:-python}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

failed=()
for name in ode_step ensemble compile_time discrete_compile revnet_memory diffusion_samplers sampler_throughput sde_step reversible batch_mode; do
    echo "== benchmarks/$name.py $*"
    # A failing benchmark is reported at the end instead of hiding the ones after it.
    if ! "$python" "benchmarks/$name.py" "$@" 2>&1 | tee -a "$log"; then
        failed+=("$name")
    fi
    echo
done

echo "== summary"
grep '^RATIO ' "$log" || true
if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
