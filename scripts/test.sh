#!/usr/bin/env bash
# Sets everything up (idempotent) and runs the whole test suite. Extra arguments go to pytest,
# which runs from tests/ (so a file is named as test_checkpoint.py, not tests/test_checkpoint.py).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
export COMFYUI_PATH
COMFYUI_PATH=$(cat "$root/.venv/comfyui-path")
cd "$root/tests"
exec "$root/.venv/bin/python" -m pytest "$@"
