#!/usr/bin/env bash
# ./start.sh [ARGS]   set up what is missing, then serve (ARGS go to `python -m gateway`)
# ./start.sh test     set up, then run the whole test suite
# ./start.sh bench    set up, then run the benchmark against its peers
#
# Four environments, so that what serves holds nothing it does not need:
#   .venv        requirements.lock: the gateway as it ships (serving, and "ours" in the bench)
#   .venv-test   tests/requirements.lock: the same pins plus the test tools
#   .venv-bench  tests/bench/requirements.lock: Jupyter Kernel Gateway and the bench client
#   the kernel environment, kernel-env/requirements.lock: what notebook code imports
#     (ipykernel, bash_kernel, numpy, pandas, matplotlib, ...), outside the checkout, at
#     /opt/icotes/kernel-env as root (else ~/.local/share/icotes/kernel-env)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv

log() { echo "start.sh: $*" >&2; }

# Part of every environment's stamp: changing how an environment is installed reinstalls it.
# Bytecode is compiled at install (uv does not by default, and a confined kernel cannot write
# it into the read-only environment, nor can anything under PYTHONDONTWRITEBYTECODE): without
# it every exec'd kernel compiles its imports from source: ~0.5 s more to its first result and
# ~25 MB more of its own memory, measured here.
INSTALL_STEPS="compile-bytecode"

ensure_uv() {
  if command -v uv >/dev/null 2>&1; then UV=(uv); return; fi
  if ! "$PYTHON" -m uv --version >/dev/null 2>&1; then
    log "bootstrapping uv with pip"
    "$PYTHON" -m pip install --quiet uv
  fi
  UV=("$PYTHON" -m uv)
}

# ensure_debian_packages [test|bench]: what the gateway needs; for tests and the bench, also the services
# they start for themselves (sshd, as the remote host kernels are placed on; Redis, the replicas'
# shared store; haproxy, in front of the replicas).
ensure_debian_packages() {
  local missing=()
  command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
  # the kernels' system-call filter is built with it
  /sbin/ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || missing+=(libseccomp2)
  # a forked kernel's init (essential in Debian, so normally there)
  command -v perl >/dev/null 2>&1 || missing+=(perl-base)
  if [ "${1:-}" = test ] || [ "${1:-}" = bench ]; then
    [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
  fi
  # the playground's tests drive Debian's Chromium (Playwright cannot download its own here)
  if [ "${1:-}" = test ]; then command -v chromium >/dev/null 2>&1 || missing+=(chromium); fi
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${missing[*]} with apt-get"
    # Installed, not started: a test starts each service itself, on loopback, and stops it.
    local no_start=/usr/sbin/policy-rc.d placed=
    if [ ! -e "$no_start" ]; then printf '#!/bin/sh\nexit 101\n' >"$no_start" && chmod +x "$no_start" && placed=1; fi
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >/dev/null; then
      log "warning: could not install ${missing[*]}; kernels will run with weaker confinement, and tests that need them fail"
    fi
    [ -z "$placed" ] || rm -f "$no_start"
  else
    log "warning: ${missing[*]} missing and not root; kernels will run with weaker confinement, and tests that need them fail"
  fi
}

# ensure_venv DIR LOCK [--project]: DIR holds exactly LOCK's pins (and this project).
# Nothing is installed when neither the lock nor the project metadata changed.
ensure_venv() {
  local venv=$1 lock=$2 project=${3:-} want
  want=$( (cat "$lock" pyproject.toml; echo "$INSTALL_STEPS") | sha256sum | cut -d' ' -f1)
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.installed" 2>/dev/null)" = "$want" ]; then return; fi
  ensure_uv
  [ -x "$venv/bin/python" ] || "${UV[@]}" venv --quiet --python "$PYTHON" "$venv"
  log "installing $lock into $venv"
  "${UV[@]}" pip sync --quiet --python "$venv/bin/python" --require-hashes --compile-bytecode "$lock"
  if [ -n "$project" ]; then
    "${UV[@]}" pip install --quiet --python "$venv/bin/python" --no-deps -e .
  fi
  echo "$want" >"$venv/.installed"
}

# ensure_kernel_env PYTHON: the kernel environment where the gateway (run by PYTHON) looks
# for it; sets KERNEL_ENV to its path. Nothing is installed when the lock did not change.
ensure_kernel_env() {
  local lock=kernel-env/requirements.lock want
  KERNEL_ENV=$("$1" -c 'from kernels.environment import default_path; print(default_path())')
  want=$( (cat "$lock"; echo "$INSTALL_STEPS") | sha256sum | cut -d' ' -f1)
  if [ -x "$KERNEL_ENV/bin/python" ] && [ "$(cat "$KERNEL_ENV/.installed" 2>/dev/null)" = "$want" ]; then return; fi
  ensure_uv
  mkdir -p "$(dirname "$KERNEL_ENV")"
  [ -x "$KERNEL_ENV/bin/python" ] || "${UV[@]}" venv --quiet --python "$PYTHON" "$KERNEL_ENV"
  log "installing $lock into $KERNEL_ENV"
  "${UV[@]}" pip sync --quiet --python "$KERNEL_ENV/bin/python" --require-hashes --compile-bytecode "$lock"
  # The Bash kernel ships its kernelspec as a step of its own.
  "$KERNEL_ENV/bin/python" -m bash_kernel.install --sys-prefix >/dev/null
  # matplotlib's font list, built once here rather than in every kernel's fresh home.
  MPLCONFIGDIR="$KERNEL_ENV/share/icotes/matplotlib" "$KERNEL_ENV/bin/python" -c 'import matplotlib.font_manager'
  echo "$want" >"$KERNEL_ENV/.installed"
}

ensure_debian_packages "${1:-}"
case "${1:-}" in
  test)
    shift
    ensure_venv .venv-test tests/requirements.lock --project
    ensure_kernel_env .venv-test/bin/python
    exec .venv-test/bin/python -m pytest "$@"
    ;;
  bench)
    shift
    ensure_venv "$VENV" requirements.lock --project
    ensure_venv .venv-bench tests/bench/requirements.lock
    ensure_kernel_env "$VENV/bin/python"
    export GATEWAY_PYTHON="$PWD/$VENV/bin/python" GATEWAY_KERNEL_ENV="$KERNEL_ENV"
    exec .venv-bench/bin/python -m tests.bench "$@"
    ;;
  *)
    ensure_venv "$VENV" requirements.lock --project
    ensure_kernel_env "$VENV/bin/python"
    exec "$VENV/bin/python" -m gateway "$@"
    ;;
esac
