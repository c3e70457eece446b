#!/usr/bin/env bash
# Two server binaries side by side on the hot path: (a) and (c) flat out (server CPU per delivery),
# (b) at 5,000 posts/s (CPU per delivery, p99) and (e) unary UnaryCall under h2load (CPU per
# request, req/s), each run against OLD and NEW in turn, ROUNDS times, with NEW's `bench` as the
# load for both. On a shared machine only what is measured in the same run compares: the table
# gives each figure's median per binary and NEW/OLD.
#
#   benches/ab.sh OLD_BIN NEW_BIN [ROUNDS]     # e.g. the commit before a change, and after it
#
# Environment: SERVER_CPU (default 0), LOAD_CPU (default 1), OUT (default target/bench-ab),
# QUICK=1 for a reduced scale (the figures then only show that it runs), SCENARIOS (default
# "a b c e"; add "f" for run.sh's scenario (f), two nodes of one Redis against one node: each
# round starts its own redis-server, see benches/redis.sh; F_RATE posts/s, default 1,000, and
# F_POSTS posts; node a and Redis run on SERVER_CPU, node b on LOAD_CPU beside the load;
# F_REDIS_CPU puts Redis on another CPU, F_REDIS_NICE, e.g. -10, runs it at that nice). Needs
# what run.sh needs (taskset, h2load; redis-server for (f)).
set -euo pipefail
cd "$(dirname "$0")/.."

old=$1 new=$2 rounds=${3:-3}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT=${OUT:-target/bench-ab}
mkdir -p "$OUT"
if [[ "${QUICK:-0}" == 1 ]]; then
  A_MSGS=5000 B_MSGS=2500 C_MSGS=400 E_N=50000 F_MSGS=1000
else
  A_MSGS=50000 B_MSGS=15000 C_MSGS=2000 E_N=300000 F_MSGS=5000
fi
SCENARIOS=${SCENARIOS:-a b c e}
F_RATE=${F_RATE:-1000}
F_MSGS=${F_POSTS:-$F_MSGS}

pid=
others=()
cleanup() {
  for p in $pid "${others[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# start BIN NAME [ARGS...]: a fresh chat server of BIN on the server CPU; sets $pid and $addr.
start() {
  local bin=$1 name=$2 extra=()
  shift 2
  # The interop service is served by default before --interop existed.
  "$bin" serve --help | grep -q -- '--interop' && extra=(--interop)
  taskset -c "${START_CPU:-$SERVER_CPU}" "$bin" serve --addr 127.0.0.1:0 --max-post-rate 0 "${extra[@]}" "$@" \
    >/dev/null 2>"$OUT/$name.log" &
  pid=$!
  for _ in $(seq 100); do
    addr=$(sed -nE 's/.*listening.* addr=([0-9.:]+).*/\1/p' "$OUT/$name.log" | head -1)
    [[ -n "$addr" ]] && return 0
    sleep 0.1
  done
  echo "$name did not start; see $OUT/$name.log" >&2
  exit 1
}
stop() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=
}
field() { sed -nE "s/.*\"$2\":(\"[^\"]*\"|[^,}]*).*/\1/p" "$OUT/$1.json" | tr -d '"'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# (f) against BIN: 100 members, one sender at F_RATE posts/s, on one node; then over two nodes of
# one Redis (every other connection on the second). Appends the CPU per delivery on one node, the
# busier node's over two, and their ratio to $OUT/TAG.txt. The one node runs without a delivery
# window, as `--redis` rooms do (where BIN has the flag).
f_round() {
  local bin=$1 tag=$2 r=$3 n a_pid b_pid b_addr before after one_args=()
  n="$tag-f-$r"
  "$bin" serve --help | grep -q -- '--delivery-window' && one_args=(--delivery-window 0)
  start "$bin" "$n-one" "${one_args[@]}"
  taskset -c "$LOAD_CPU" "$new" bench fanout --addr "$addr" --rooms 1 --members 100 --senders 1 \
    --messages "$F_MSGS" --size 100 --rate "$F_RATE" --server-pid "$pid" >"$OUT/$n-one.json" \
    2>"$OUT/$n-one.txt" || true
  stop
  start_redis "$OUT/$n-redis.log" ${F_REDIS_NICE:+nice -n "$F_REDIS_NICE"} taskset -c "${F_REDIS_CPU:-$SERVER_CPU}"
  others=("$redis_pid")
  # Each node on a core of its own, as two nodes are deployed: on one core the two need more than
  # the core (one node alone uses nearly all of it at this load), and the run measures the
  # queue, not the nodes. Node b shares the load's core, Redis node a's.
  START_CPU=$LOAD_CPU start "$bin" "$n-b" --redis "$redis_url"
  b_pid=$pid b_addr=$addr
  others+=("$b_pid")
  start "$bin" "$n-a" --redis "$redis_url"
  a_pid=$pid
  for name in "$n-a" "$n-b"; do
    for _ in $(seq 100); do
      grep -q "chat is serving" "$OUT/$name.log" && break
      sleep 0.1
    done
  done
  before="$(cpu_ticks "$a_pid") $(cpu_ticks "$b_pid")"
  taskset -c "$LOAD_CPU" "$new" bench fanout --addr "$addr" --peer "$b_addr" --rooms 1 \
    --members 100 --senders 1 --messages "$F_MSGS" --size 100 --rate "$F_RATE" \
    >"$OUT/$n-two.json" 2>"$OUT/$n-two.txt" || true
  after="$(cpu_ticks "$a_pid") $(cpu_ticks "$b_pid")"
  stop
  for p in "$b_pid" "$redis_pid"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  others=()
  local one node
  one=$(field "$n-one" server_ns_per_delivery)
  node=$(echo "$before $after" | awk -v hz="$(getconf CLK_TCK)" -v d="$(field "$n-two" delivered)" '{
    a = ($3 - $1) / hz * 1e9 / (d / 2); b = ($4 - $2) / hz * 1e9 / (d / 2); printf "%.0f", (a > b ? a : b) }')
  echo "(f)_one_node_ns_per_delivery $one" >>"$OUT/$tag.txt"
  echo "(f)_two_nodes_ns_per_delivery $node" >>"$OUT/$tag.txt"
  echo "(f)_ratio $(awk -v n="$node" -v o="$one" 'BEGIN { if (o > 0) printf "%.2f", n / o }')" >>"$OUT/$tag.txt"
  echo "(f)_two_nodes_lost $(field "$n-two" lost)" >>"$OUT/$tag.txt"
}

# One round of every scenario against BIN; appends "figure value" lines to $OUT/TAG.txt.
round() {
  local bin=$1 tag=$2 r=$3 n
  [[ " $SCENARIOS " == *" f "* ]] && f_round "$bin" "$tag" "$r"
  for s in a b c; do
    [[ " $SCENARIOS " == *" $s "* ]] || continue
    n="$tag-$s-$r"
    start "$bin" "$n"
    case $s in
      a) args=(--rooms 1 --members 100 --senders 1 --messages $A_MSGS) ;;
      b) args=(--rooms 1 --members 100 --senders 1 --messages $B_MSGS --rate 5000) ;;
      c) args=(--rooms 10 --members 50 --senders 5 --messages $C_MSGS) ;;
    esac
    taskset -c "$LOAD_CPU" "$new" bench fanout --addr "$addr" "${args[@]}" --size 100 \
      --server-pid "$pid" >"$OUT/$n.json" 2>"$OUT/$n.txt" || true
    stop
    echo "($s)_ns_per_delivery $(field "$n" server_ns_per_delivery)" >>"$OUT/$tag.txt"
    if [[ $s == b ]]; then
      echo "(b)_p99_us $(field "$n" p99_us)" >>"$OUT/$tag.txt"
      echo "(b)_user_ns_per_delivery $(field "$n" server_user_ns_per_delivery)" >>"$OUT/$tag.txt"
      echo "(b)_write_calls_per_delivery $(field "$n" server_write_calls_per_delivery)" >>"$OUT/$tag.txt"
    fi
  done
  [[ " $SCENARIOS " == *" e "* ]] || return 0
  n="$tag-e-$r"
  start "$bin" "$n"
  "$new" bench unary-request --out "$OUT/unary.bin" >/dev/null 2>&1
  local before after
  before=$(cpu_ticks "$pid")
  taskset -c "$LOAD_CPU" h2load -n "$E_N" -c 10 -m 100 -H 'content-type: application/grpc' \
    -H 'te: trailers' -d "$OUT/unary.bin" "http://$addr/grpc.testing.TestService/UnaryCall" \
    >"$OUT/$n.h2load.txt" 2>&1 || true
  after=$(cpu_ticks "$pid")
  stop
  if grep -q " $E_N succeeded, 0 failed, 0 errored" "$OUT/$n.h2load.txt"; then
    echo "(e)_us_per_request $(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$E_N" \
      'BEGIN { printf "%.3f", t / hz * 1e6 / n }')" >>"$OUT/$tag.txt"
    echo "(e)_req_per_s $(sed -nE 's/^finished in .*, ([0-9.]+) req\/s.*/\1/p' "$OUT/$n.h2load.txt")" \
      >>"$OUT/$tag.txt"
  fi
}

# shellcheck source=benches/redis.sh
source benches/redis.sh
rm -f "$OUT/old.txt" "$OUT/new.txt"
load_before=$(cut -d' ' -f1 /proc/loadavg)
for r in $(seq "$rounds"); do
  # Alternate which goes first, so a drift in the machine's load falls on both.
  if ((r % 2)); then round "$old" old "$r"; round "$new" new "$r"
  else round "$new" new "$r"; round "$old" old "$r"; fi
done

median() { grep "^$2 " "$OUT/$1.txt" | awk '$2 != "" && $2 != "null" { print $2 }' | sort -g |
  awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
echo
echo "$rounds rounds, alternating; load average $load_before before, $(cut -d' ' -f1 /proc/loadavg) after."
echo
echo "| figure | old (median) | new (median) | new / old |"
echo "|---|---|---|---|"
for f in "(a)_ns_per_delivery" "(b)_ns_per_delivery" "(b)_user_ns_per_delivery" \
  "(b)_write_calls_per_delivery" "(b)_p99_us" "(c)_ns_per_delivery" \
  "(e)_us_per_request" "(e)_req_per_s" "(f)_one_node_ns_per_delivery" \
  "(f)_two_nodes_ns_per_delivery" "(f)_ratio" "(f)_two_nodes_lost"; do
  grep -q "^$f " "$OUT/old.txt" "$OUT/new.txt" 2>/dev/null || continue
  o=$(median old "$f") n=$(median new "$f")
  ratio=$(awk -v o="${o:-0}" -v n="${n:-0}" 'BEGIN { if (o > 0 && n > 0) printf "%.2f", n / o; else print "n/a" }')
  echo "| ${f//_/ } | ${o:-n/a} | ${n:-n/a} | $ratio |"
done
echo
echo "Every run: \`$OUT/{old,new}.txt\`, JSON reports and h2load output beside them."
