#!/usr/bin/env bash
# Builds the fuzz target and runs it briefly over the committed seed corpus: part of the test
# command, so a change to the decoder's API that breaks the target, or a crash the seeds reach,
# fails the suite.
#
# cargo-fuzz needs nightly-only rustc flags (-Z sanitizer, ...). A machine of this project has the
# stable toolchain only, so the target is built with it and RUSTC_BOOTSTRAP=1, which lets stable
# take those flags (its sanitizer runtimes ship with it). cargo-fuzz is installed from crates.io
# if it is missing (pinned, --locked).
#
#   bash tests/fuzz-check.sh            env: FUZZ_SECONDS=20 (how long the fuzzer runs)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

cargo_fuzz_version=0.13.2
seconds=${FUZZ_SECONDS:-20}

if ! cargo fuzz --version 2>/dev/null | grep -q "$cargo_fuzz_version"; then
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked --quiet
fi

export RUSTC_BOOTSTRAP=1
cargo fuzz build frame_decoder
# New inputs go to a scratch corpus (the first directory), never into the committed seeds.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cargo fuzz run frame_decoder "$scratch" corpus/frame_decoder -- \
  -max_total_time="$seconds" -print_final_stats=1
