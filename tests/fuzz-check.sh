#!/usr/bin/env bash
# Builds the fuzz target and fuzzes it briefly from the committed seed corpus: part of the test
# command (tests/run-all.sh), so a change to the decoder that breaks the target, or a crash the
# fuzzer reaches in FUZZ_SECONDS, fails the suite.
#
# Without cargo-fuzz (installing it takes minutes): plain cargo with the flags cargo-fuzz itself
# passes to rustc (its src/project.rs): the sanitizer-coverage instrumentation libFuzzer is guided
# by, `--cfg fuzzing` and debug assertions, in release mode. Those flags are stable. With a nightly
# toolchain the target also gets AddressSanitizer (`-Zsanitizer=address`, cargo-fuzz's default);
# without one it is fuzzed all the same, unsanitized (the decoder is safe Rust). The target compiles
# `src/grpc/codec.rs` by itself, not the server, so a cold build is libFuzzer's C++ and a few small
# crates, in `fuzz/target` (never the main crate's target).
#
#   bash tests/fuzz-check.sh   env: FUZZ_SECONDS=20 (how long the fuzzer runs), FUZZ_NIGHTLY=0
#                              (build with the default toolchain even where nightly is installed)
#
# A crash is written to fuzz/artifacts/frame_decoder/ (cargo-fuzz's place) and fails the script;
# replay it with `fuzz/target/<host>/release/frame_decoder <file>` or `cargo +nightly fuzz run
# frame_decoder <file>`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${FUZZ_SECONDS:-20}
host=$(rustc -vV | sed -n 's/^host: //p')

flags=(
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  -Cllvm-args=-simplifycfg-branch-fold-threshold=0
  -Cllvm-args=-sanitizer-coverage-stack-depth
  --cfg fuzzing
  -Clink-dead-code
  -Cdebug-assertions
  -Ccodegen-units=1
)
toolchain=()
if [[ ${FUZZ_NIGHTLY:-1} != 0 ]] && cargo +nightly --version >/dev/null 2>&1; then
  toolchain=(+nightly)
  flags+=(-Zsanitizer=address)
  export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"
  what="nightly, AddressSanitizer"
else
  what="default toolchain, no sanitizer"
fi

started=$SECONDS
# --target: the flags then reach the target's crates only, not build scripts or proc macros.
RUSTFLAGS="${flags[*]}" cargo "${toolchain[@]}" build --quiet --locked --release \
  --target "$host" --target-dir target --bin frame_decoder
echo "fuzz-check: built frame_decoder ($what) in $((SECONDS - started)) s"

# New inputs go to a scratch corpus (the first directory), never into the committed seeds.
scratch=$(mktemp -d)
log="$scratch.log"
trap 'rm -rf "$scratch" "$log"' EXIT
mkdir -p artifacts/frame_decoder
if ! "target/$host/release/frame_decoder" -max_total_time="$seconds" -print_final_stats=1 \
  -artifact_prefix=artifacts/frame_decoder/ "$scratch" corpus/frame_decoder >"$log" 2>&1; then
  cat "$log" >&2
  echo "fuzz-check: frame_decoder failed; the input is in fuzz/artifacts/frame_decoder/" >&2
  exit 1
fi
# Uninstrumented, libFuzzer still runs but finds nothing new: that would be a broken check.
if grep -q "Is the code instrumented for coverage" "$log"; then
  cat "$log" >&2
  echo "fuzz-check: the target was built without coverage instrumentation" >&2
  exit 1
fi
grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::new_units_added)' "$log" |
  sed 's/^/fuzz-check: /'
