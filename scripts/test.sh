#!/usr/bin/env bash
# Sets everything up (idempotent) and runs the whole test suite once per supported ComfyUI runtime:
#   - the default runtime (.venv: ComfyUI 0.3.75 from a fresh clone, see setup.sh),
#   - every ComfyUI source archive in ../shared/runtimes/ (a developer's and CI's extra; a clone
#     from the web has none and runs on the default alone),
# unless COMFYUI_PATH names one runtime, which is then the only one. RUNTIMES="0.33.0 ..." picks
# runtimes by ComfyUI version. Tests marked no_comfyui (core code only) run on the first runtime alone,
# unless a later one's environment has other core packages (torch, transformers, ...). Extra arguments go to pytest, which runs from tests/ (a file is named
# as test_checkpoint.py, not tests/test_checkpoint.py). Ends with a line per runtime and a total.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
artifacts="$root/tests/artifacts"
mkdir -p "$artifacts"

"$root/scripts/setup.sh"
venvs=("$root/.venv")
if [ -z "${COMFYUI_PATH:-}" ]; then
  for archive in "$root"/../shared/runtimes/ComfyUI-*.tar*; do
    [ -f "$archive" ] && venvs+=("$("$root/scripts/setup.sh" "$archive")")
  done
fi

version_of() { sed -n 's/^__version__ = "\(.*\)"/\1/p' "$1/comfyui_version.py" 2>/dev/null || true; }
# Tests marked no_comfyui run core code only: on a later runtime with the same core packages they would repeat.
core_packages() {
  "$1/bin/python" -c 'import importlib.metadata as m; print(*(m.version(p) for p in ("torch", "transformers", "safetensors", "numpy", "pillow", "einops")))'
}

status=0
reports=()
first_version="" first_core=""
for venv in "${venvs[@]}"; do
  comfyui=$(cat "$venv/comfyui-path")
  version=$(version_of "$comfyui")
  if [ -n "${RUNTIMES:-}" ] && [[ " $RUNTIMES " != *" $version "* ]]; then continue; fi
  report="$artifacts/junit-comfyui-${version:-unknown}.xml"
  rm -f "$report"
  printf '\n[deadiff test] ComfyUI %s at %s\n' "${version:-(unknown version)}" "$comfyui" >&2
  core=$(core_packages "$venv")
  ran_on=""
  if [ -z "$first_version" ]; then first_version=${version:-unknown} first_core=$core
  elif [ "$core" = "$first_core" ]; then ran_on=$first_version
  fi
  rc=0
  (cd "$root/tests" && COMFYUI_PATH="$comfyui" DEADIFF_NO_COMFYUI_RAN_ON="$ran_on" \
    "$venv/bin/python" -m pytest --junitxml="$report" "$@") || rc=$?
  # 5: pytest ran nothing, which is right when all it was given had run on the first runtime
  if [ "$rc" -eq 5 ] && [ -n "$ran_on" ]; then rc=0; fi
  [ "$rc" -eq 0 ] || status=$rc
  reports+=("${version:-unknown}=$report")
done
[ ${#reports[@]} -gt 0 ] || { echo "[deadiff test] RUNTIMES=$RUNTIMES matches no runtime" >&2; exit 2; }
python3 "$root/scripts/test_summary.py" "${reports[@]}" || [ "$status" -ne 0 ] || status=1
exit "$status"
