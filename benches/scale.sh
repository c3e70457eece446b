#!/usr/bin/env bash
# The scale run of issue 16 (opt-in: not one of run.sh's standard scenarios). It starts its own
# redis-server (persistence off) and NODES `h2chat serve --redis` nodes on 127.0.0.1, then:
#
#  1. NODES idle benches one after the other, each joining PER_NODE members over PER_NODE
#     connections in rooms of 100 and holding them, every bench's connections spread round-robin
#     over all the nodes (so every node ends up with PER_NODE connections and members, and every
#     room has members on every node): each bench's connect + join time; once all are joined, RSS
#     per member on each node and Redis's memory. (One bench process cannot hold more than the
#     open-file limit allows, 20,000 here; benches run in turn, not at once, so that Redis, which
#     would have a core of its own in production, is not starved by eight busy processes.)
#  2. One room of ROOM_MEMBERS members over ROOM_CONNS connections spread over the nodes, one
#     sender on the first node at ROOM_RATE posts/s for ROOM_MSGS posts: lost deliveries.
#
#   benches/scale.sh                     # 4 nodes x 15,000 members, then one room of 10,000
#   taskset -c 1 benches/scale.sh        # everything on one core (children inherit the mask)
#
# Environment: ROOM_ONLY=1 (phase 2 alone), NODES (4), PER_NODE (15000), ROOM_MEMBERS (10000), ROOM_CONNS (400), ROOM_RATE
# (100), ROOM_MSGS (500), HOLD (the longest a bench keeps its members joined, 900 s: the script
# stops the benches by PID once it has measured), OUT (target/bench-scale). Every process is stopped by its PID; every wait is bounded.
# Needs: redis-server (installed when missing and running as root: benches/redis.sh), /proc, and
# `ulimit -n` above PER_NODE for each process (each node and each bench holds PER_NODE
# connections; this container allows 20,000 per process).
set -euo pipefail
cd "$(dirname "$0")/.."

ROOM_ONLY=${ROOM_ONLY:-0}
NODES=${NODES:-4}
PER_NODE=${PER_NODE:-15000}
ROOM_MEMBERS=${ROOM_MEMBERS:-10000}
ROOM_CONNS=${ROOM_CONNS:-400}
ROOM_RATE=${ROOM_RATE:-100}
ROOM_MSGS=${ROOM_MSGS:-500}
HOLD=${HOLD:-900}
OUT=${OUT:-target/bench-scale}
mkdir -p "$OUT"
rm -f "$OUT"/ready-*.json

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
if ((PER_NODE + 200 > nofile)); then
  echo "PER_NODE=$PER_NODE needs ulimit -n above $((PER_NODE + 200)); it is $nofile" >&2
  exit 1
fi
cargo build --release --quiet --bin h2chat
BIN=target/release/h2chat

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

field() { sed -nE "s/.*\"$2\":(\"[^\"]*\"|[^,}]*).*/\1/p" "$1" | tr -d '"'; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
mem_available_mib() { awk '/^MemAvailable/ { printf "%d", $2 / 1024 }' /proc/meminfo; }
redis_mem() { redis-cli -p "$port" info memory | sed -nE 's/^used_memory:([0-9]+).*/\1/p'; }

# shellcheck source=benches/redis.sh
source benches/redis.sh
# Redis above the rest: in production it has a core of its own (here it shares one with them).
start_redis "$OUT/redis.log" nice -n -5
rpid=$redis_pid port=$redis_port url=$redis_url
pids+=("$rpid")
redis_base=$(redis_mem)

node_pids=() node_addrs=()
for i in $(seq "$NODES"); do
  "$BIN" serve --addr 127.0.0.1:0 --redis "$url" --max-post-rate 0 >/dev/null 2>"$OUT/node-$i.log" &
  node_pids+=($!)
  pids+=($!)
  addr=
  for _ in $(seq 100); do
    addr=$(sed -nE 's/.*listening.* addr=([0-9.:]+).*/\1/p' "$OUT/node-$i.log" 2>/dev/null | head -1 || true)
    [[ -n "$addr" ]] && break
    sleep 0.1
  done
  [[ -n "$addr" ]] || { echo "node $i did not start; see $OUT/node-$i.log" >&2; exit 1; }
  node_addrs+=("$addr")
done
for i in $(seq "$NODES"); do
  for _ in $(seq 100); do
    grep -q "chat is serving" "$OUT/node-$i.log" && break
    sleep 0.1
  done
done
# --addr A --peer B --peer C ...: every node, starting with node $1.
spread() {
  local first=$1 args=() k
  for ((k = 0; k < NODES; k++)); do
    local a=${node_addrs[$(((first + k) % NODES))]}
    if ((k == 0)); then args+=(--addr "$a"); else args+=(--peer "$a"); fi
  done
  echo "${args[@]}"
}

# members_in_redis: every member Redis holds a claim for.
members_in_redis() {
  local n=0 key
  for key in $(redis-cli -p "$port" --scan --pattern 'h2chat:order:*'); do
    n=$((n + $(redis-cli -p "$port" zcard "$key")))
  done
  echo "$n"
}

rows=()
row() { rows+=("| $1 | $2 |"); }

# 1. NODES x PER_NODE idle members.
if ((!ROOM_ONLY)); then
base_rss=() mem_before=$(mem_available_mib)
for p in "${node_pids[@]}"; do base_rss+=("$(rss_kib "$p")"); done
t0=$(date +%s.%N)
bench_pids=()
for ((b = 0; b < NODES; b++)); do
  # shellcheck disable=SC2046
  "$BIN" bench idle $(spread "$b") --members "$PER_NODE" --conns "$PER_NODE" \
    --members-per-room 100 --settle 1 --timeout 600 --ready-file "$OUT/ready-$b.json" \
    --hold "$HOLD" >"$OUT/idle-$b.json" 2>"$OUT/idle-$b.txt" &
  bench_pids+=($!)
  pids+=($!)
  # Joined (its ready file), or ended without: bounded by the bench's timeout.
  while [[ ! -s "$OUT/ready-$b.json" ]]; do
    kill -0 "${bench_pids[$b]}" 2>/dev/null || { cat "$OUT/idle-$b.txt" >&2; echo "bench $b ended before joining" >&2; exit 1; }
    sleep 0.2
  done
done
t1=$(date +%s.%N)
joined_rss=() mem_joined=$(mem_available_mib)
for p in "${node_pids[@]}"; do joined_rss+=("$(rss_kib "$p")"); done
redis_joined=$(redis_mem)
in_redis=$(members_in_redis)
rooms_in_redis=$(redis-cli -p "$port" --scan --pattern 'h2chat:meta:*' | wc -l)
for p in "${bench_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${bench_pids[@]}"; do wait "$p" 2>/dev/null || true; done
# Their leaves announced (at most two minutes) before the next phase joins anyone.
for _ in $(seq 120); do
  (($(members_in_redis) == 0)) && break
  sleep 1
done

total=$((NODES * PER_NODE))
all_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
each=""
for ((b = 0; b < NODES; b++)); do
  each+="$(field "$OUT/ready-$b.json" connect_and_join_s | awk '{ printf "%.1f", $1 }') "
done
row "members joined (Redis's count)" "$in_redis of $total, in $rooms_in_redis rooms, over $NODES nodes"
row "connect + join, $PER_NODE members each, benches in turn" "${each% } s ($all_s s for all $total, settling included)"
per_node=""
for ((i = 0; i < NODES; i++)); do
  per_node+="$(awk -v a="${base_rss[$i]}" -v b="${joined_rss[$i]}" -v n="$PER_NODE" 'BEGIN { printf "%.1f", (b - a) / n }') "
done
row "server RSS per member (connection + member) on each node" "${per_node% } KiB"
row "Redis memory" "$(awk -v a="$redis_base" -v b="$redis_joined" -v n="$total" 'BEGIN { printf "%.0f MiB (%.0f bytes per member)", b / 1048576, (b - a) / n }')"
row "machine memory available" "$mem_before MiB before, $mem_joined MiB with every member joined"
fi

# 2. One room of ROOM_MEMBERS over every node, one sender at ROOM_RATE posts/s.
# shellcheck disable=SC2046
"$BIN" bench fanout $(spread 0) --rooms 1 --members "$ROOM_MEMBERS" --conns "$ROOM_CONNS" \
  --senders 1 --messages "$ROOM_MSGS" --size 100 --rate "$ROOM_RATE" --timeout 600 --drain 60 \
  >"$OUT/room.json" 2>"$OUT/room.txt" || true
cat "$OUT/room.txt" >&2
f=$OUT/room.json
row "one room of $ROOM_MEMBERS over $NODES nodes ($ROOM_CONNS connections), $ROOM_RATE posts/s x $ROOM_MSGS: lost" \
  "$(field "$f" lost) of $(field "$f" expected) ($(field "$f" gap_events) gap events, $(field "$f" seq_errors) seq errors; joined in $(field "$f" join_s | awk '{ printf "%.1f", $1 }') s)"
row "the room: latency p50 / p99 (members on other nodes p50 / p99)" \
  "$(field "$f" p50_us | awk '{ printf "%.1f", $1 / 1000 }') / $(field "$f" p99_us | awk '{ printf "%.1f", $1 / 1000 }') ms ($(field "$f" peer_p50_us | awk '{ printf "%.1f", $1 / 1000 }') / $(field "$f" peer_p99_us | awk '{ printf "%.1f", $1 / 1000 }') ms); sender $(field "$f" sender_posts_per_s | awk '{ printf "%.0f", $1 }') posts/s"

for p in "${node_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${node_pids[@]}"; do wait "$p" 2>/dev/null || true; done
kill -TERM "$rpid" 2>/dev/null || true
wait "$rpid" 2>/dev/null || true

cat <<EOF

## Scale run ($NODES nodes of one Redis)

$(date -u +%Y-%m-%d), $(nproc --all) CPUs, every process on CPUs $(taskset -pc $$ | sed 's/.*: //') (nodes, Redis and benches share them);
load average $(cut -d' ' -f1-3 /proc/loadavg) at the end.

| Figure | Measured |
|---|---|
$(printf '%s\n' "${rows[@]}")

Raw reports: \`$OUT/\` (ready-*.json, idle-*.txt, room.json, node and Redis logs).
EOF
