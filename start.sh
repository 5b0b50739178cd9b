#!/usr/bin/env bash
# ./start.sh [ARGS]   set up what is missing, then serve (ARGS go to `python -m gateway`)
# ./start.sh test     set up, then run the whole test suite
# ./start.sh bench    set up (with the bench extras), then run the benchmarks
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed

log() { echo "start.sh: $*" >&2; }

ensure_uv() {
  if command -v uv >/dev/null 2>&1; then UV=(uv); return; fi
  if ! "$PYTHON" -m uv --version >/dev/null 2>&1; then
    log "bootstrapping uv with pip"
    "$PYTHON" -m pip install --quiet uv
  fi
  UV=("$PYTHON" -m uv)
}

ensure_debian_packages() {
  local missing=()
  command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${missing[*]} with apt-get"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >/dev/null; then
      log "warning: could not install ${missing[*]}; kernels will run with weaker confinement"
    fi
  else
    log "warning: ${missing[*]} missing and not root; kernels will run with weaker confinement"
  fi
}

# Install only when the lock or the project metadata changed since the last install.
ensure_venv() {
  local lock=${1:-requirements.lock} want
  want=$(cat "$lock" pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then return; fi
  ensure_uv
  [ -x "$VENV/bin/python" ] || "${UV[@]}" venv --quiet --python "$PYTHON" "$VENV"
  log "installing pinned dependencies"
  "${UV[@]}" pip sync --quiet --python "$VENV/bin/python" --require-hashes "$lock"
  "${UV[@]}" pip install --quiet --python "$VENV/bin/python" --no-deps -e .
  echo "$want" >"$STAMP"
}

ensure_debian_packages
case "${1:-}" in
  test)
    shift
    ensure_venv
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  bench)
    shift
    ensure_venv requirements-bench.lock  # the lock plus the peer we measure against
    exec "$VENV/bin/python" -m tests.bench "$@"
    ;;
  *)
    ensure_venv
    exec "$VENV/bin/python" -m gateway "$@"
    ;;
esac
