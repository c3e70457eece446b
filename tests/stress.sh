#!/usr/bin/env bash
# Runs the test suite RUNS times (default 20) pinned to one core (`taskset -c $CORE`, default 0)
# beside two busy loops pinned to the same core: the suite must pass on one busy core, and a hang
# must show as a failure, not as a stuck run.
#
#   bash tests/stress.sh [RUNS]          env: CORE=0 RUN_TIMEOUT=1500 (seconds per run)
#                                        TESTS="--test client" (cargo test arguments)
#
# Builds once, unpinned, then for each run: starts the two busy loops (each bounded by
# RUN_TIMEOUT and stopped by its PID when the run ends), runs `cargo test` under `timeout`
# (exit 124 = the run hung), and keeps the log of a failed run in target/stress/. Ends with one
# line "N passed, M failed" and exits non-zero if any run failed. Needs grpcurl and grpcio on PATH
# (tests/run-all.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-20}
core=${CORE:-0}
run_timeout=${RUN_TIMEOUT:-1500}
read -r -a test_args <<<"${TESTS:---all-targets}"
logs=target/stress
mkdir -p "$logs"

cargo test "${test_args[@]}" --no-run --quiet

busy_pids=()
stop_busy() {
  for pid in "${busy_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  busy_pids=()
}
trap stop_busy EXIT

passed=0
failed=0
for run in $(seq 1 "$runs"); do
  for _ in 1 2; do
    # A busy loop on the same core, ending by itself after RUN_TIMEOUT at the latest.
    taskset -c "$core" bash -c "end=\$((SECONDS + $run_timeout)); while ((SECONDS < end)); do :; done" &
    busy_pids+=("$!")
  done
  log="$logs/run-$run.log"
  start=$SECONDS
  rc=0
  timeout --kill-after=30 "$run_timeout" taskset -c "$core" \
    cargo test "${test_args[@]}" >"$log" 2>&1 || rc=$?
  stop_busy
  took=$((SECONDS - start))
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    echo "run $run: ok (${took}s)"
    rm -f "$log"
  else
    failed=$((failed + 1))
    what="failed (exit $rc)"
    [ "$rc" -eq 124 ] && what="HUNG (killed after ${run_timeout}s)"
    echo "run $run: $what (${took}s); log: $log"
    grep -E "^test .* FAILED$|panicked at|timed out after" "$log" | head -20 | sed 's/^/    /' || true
  fi
done
echo "stress: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
