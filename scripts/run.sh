#!/usr/bin/env bash
# Starts ComfyUI on 127.0.0.1 with this pack loaded. Port: --port N or $PORT (default 8188).
# Other arguments go to ComfyUI's main.py (e.g. --cpu, --lowvram).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
comfyui=$(cat "$root/.venv/comfyui-path")

# Make the pack visible in that ComfyUI's custom_nodes unless it already lives there.
link="$comfyui/custom_nodes/ComfyUI-DEADiff"
if [ "$(cd "$root/.." && pwd)" != "$(cd "$comfyui/custom_nodes" && pwd)" ] && [ ! -e "$link" ]; then
  ln -s "$root" "$link"
  echo "[deadiff run] linked $link -> $root" >&2
fi

extra=()
"$root/.venv/bin/python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null || extra+=(--cpu)
cd "$comfyui"
exec "$root/.venv/bin/python" main.py --listen 127.0.0.1 --port "${PORT:-8188}" "${extra[@]}" "$@"
