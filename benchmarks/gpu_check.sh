#!/usr/bin/env bash
# The GPU check as one command (benchmarks/gpu_check.py does the work; benchmarks/README.md, "GPU check").
#
#   benchmarks/gpu_check.sh --prepare [ARCHIVE]   on a machine with internet, once: fills .gpu_check/ (git-ignored)
#                                                 with the wheels ComfyUI 0.33 needs beyond what the GPU machine has
#                                                 and the ComfyUI source archive (default
#                                                 ../shared/runtimes/ComfyUI-0.33.0.tar.xz), and prints the size of
#                                                 what travels to the GPU machine
#   benchmarks/gpu_check.sh                       on the GPU machine (offline, bare, its own python3): installs the
#                                                 wheels into /tmp/gpu_check/site, extracts ComfyUI there, runs the
#                                                 check; the log, report, JSON and server logs go to $OUT if set
#   benchmarks/gpu_check.sh --dry-run             the same check on the CPU at tiny sizes, with this machine's
#                                                 ComfyUI (COMFYUI_PATH, else ./scripts/setup.sh's) and Python
#                                                 ($PYTHON, else .venv/bin/python, else python3); CI runs it
#
# GPU_CHECK_SECONDS is the time limit from the start of this script, set-up included (default 450; --dry-run 600,
# for slow, shared CI machines): the check stops itself before it, and `timeout` ends it at the limit regardless.
set -euo pipefail
started=$(date +%s)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
here="$root/.gpu_check"          # what --prepare fills; carried to the GPU machine
work=/tmp/gpu_check              # on the GPU machine
archive_name=ComfyUI-0.33.0.tar.xz
log() { printf '[gpu check] %s\n' "$*" >&2; }
fail() { printf '[gpu check] FAILED: %s\n' "$*" >&2; exit 1; }

# What ComfyUI 0.33's requirements.txt needs that the GPU machine's image lacks (its list: the device tool's
# KINDS.md), pinned to the versions ./scripts/setup.sh installs for the tests here. Not carried: the editor
# (comfyui-frontend-package, -workflow-templates, -embedded-docs; the server starts with an empty
# --front-end-root) and the optional kornia, spandrel, comfy-angle and PyOpenGL (only comfy_extras nodes the check
# does not use need them). comfy-kitchen is carried without its compiled CUDA and ROCm kernels (a 176 MB and a
# 59 MB library, 58 MB of wheel): ComfyUI imports it, but an fp16 SD1.5 graph with its default PyTorch attention
# calls none of them (they serve fp8/fp4/int8 weights and --use-ck-attention); its eager and Triton backends stay.
WHEELS=(comfy-aimdo==0.4.13 comfy-kitchen==0.2.31 av==18.1.0 torchsde==0.2.6 trampoline==0.1.2 alembic==1.20.1
        SQLAlchemy==2.1.9 Mako==1.4.3 simpleeval==1.0.8 blake3==1.0.11 pydantic==2.14.4 pydantic-core==2.50.5
        pydantic-settings==2.16.3 annotated-types==0.8.0 python-dotenv==1.2.4 typing-inspection==0.4.5
        typing-extensions==4.16.0)

prepare() {
  local archive=${1:-$root/../shared/runtimes/$archive_name} python=${PYTHON:-python3} platforms=() n
  [ -f "$archive" ] || fail "no ComfyUI archive at $archive (give its path: --prepare ARCHIVE)"
  for n in 28 27 24 17 12; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
  platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
  rm -rf "$here/wheels.partial"
  mkdir -p "$here/wheels.partial"
  log "downloading ${#WHEELS[@]} wheels for CPython 3.12 on x86-64 Linux"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$here/wheels.partial" "${WHEELS[@]}"
  log "removing comfy-kitchen's compiled kernels"
  "$python" - "$here"/wheels.partial/comfy_kitchen-*.whl <<'EOF'
import os, sys, zipfile
wheel = sys.argv[1]
dropped = lambda name: name.startswith("comfy_kitchen/backends/") and os.path.basename(name).startswith("_C.")
with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(wheel + ".new", "w", zipfile.ZIP_DEFLATED) as zout:
    for item in zin.infolist():
        if dropped(item.filename):
            continue
        data = zin.read(item)
        if item.filename.endswith(".dist-info/RECORD"):  # the wheel's file list must match what it holds
            data = b"".join(l for l in data.splitlines(True) if not dropped(l.decode().split(",")[0]))
        zout.writestr(item, data)
os.replace(wheel + ".new", wheel)
EOF
  rm -rf "$here/wheels"
  mv "$here/wheels.partial" "$here/wheels"
  install -m 0644 "$archive" "$here/$archive_name"  # the shared copy is read-only
  local tracked untracked carried
  tracked=$(cd "$root" && git ls-files -z | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
  untracked=$(cd "$root" && git ls-files -z --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
  carried=$(du -sb "$here" | cut -f1)
  log "travels: tracked files $((tracked / 1024)) KiB + untracked, not ignored $((${untracked:-0} / 1024)) KiB +" \
      ".gpu_check $((carried / 1024)) KiB = $(((tracked + ${untracked:-0} + carried) / 1048576)) MiB (the limit: 64 MiB)"
}

setup_device() {
  [ -d "$here/wheels" ] && [ -f "$here/$archive_name" ] ||
    fail "no .gpu_check/wheels or .gpu_check/$archive_name: run benchmarks/gpu_check.sh --prepare where there is" \
         "internet, and carry .gpu_check"
  local t0=$SECONDS
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$work/site" \
    "$here"/wheels/*.whl || fail "installing the wheels"
  rm -rf "$work/ComfyUI"
  mkdir -p "$work/ComfyUI"
  # Python's tarfile rather than tar, which would need an xz program there
  python3 - "$here/$archive_name" "$work/ComfyUI" <<'EOF' || fail "extracting $archive_name"
import sys, tarfile
archive, dest = sys.argv[1:]
with tarfile.open(archive) as tar:  # a `git archive` with top folder ComfyUI/: extracted without it
    members = [m for m in tar.getmembers() if "/" in m.name.strip("/")]
    for m in members:
        m.name = m.name.strip("/").split("/", 1)[1]
    tar.extractall(dest, members=members, filter="data")
EOF
  [ -f "$work/ComfyUI/main.py" ] || fail "$archive_name holds no ComfyUI/main.py"
  log "set-up: wheels installed and ComfyUI extracted in $((SECONDS - t0)) s"
  export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}" COMFYUI_PATH="$work/ComfyUI"
}

mode=${1:-}
case "$mode" in
  --prepare) shift; prepare "$@"; exit ;;
  --dry-run) limit=${GPU_CHECK_SECONDS:-600}
             python=${PYTHON:-$( [ -x "$root/.venv/bin/python" ] && echo "$root/.venv/bin/python" || echo python3)}
             args=(--dry-run) ;;
  "")        limit=${GPU_CHECK_SECONDS:-450} python=python3 args=(--workdir "$work/files") ;;
  *)         fail "unknown argument $mode (see the top of $0)" ;;
esac

check() {
  log "$(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(uname -m), time limit ${limit} s"
  if [ -z "$mode" ]; then nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true; setup_device; fi
  local deadline=$((started + limit)) left rc=0
  left=$((deadline - $(date +%s)))
  [ "$left" -gt 60 ] || fail "only $left s left of the time limit after set-up"
  # the check aims to end 10 s before the limit; timeout sends SIGTERM at the limit (the check then stops its
  # servers and reports) and SIGKILL 10 s later
  PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" timeout -k 10 "$left" "$python" -m benchmarks.gpu_check --deadline "$((deadline - 10))" "${args[@]}" || rc=$?
  [ "$rc" -ne 124 ] || log "FAILED: the time limit (${limit} s) was reached"
  log "finished in $(($(date +%s) - started)) s with exit status $rc"
  return "$rc"
}

export PYTHONUNBUFFERED=1
if [ -z "${OUT:-}" ]; then check; exit; fi
mkdir -p "$OUT"
check 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
