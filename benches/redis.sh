# Sourced by benches/run.sh (scenario (f)) and benches/scale.sh: a redis-server of the bench's own.
#
# start_redis LOG [COMMAND PREFIX...]: installs redis-server when missing (as root), starts it on a
# random loopback port with persistence off (prefixed, e.g. by taskset), waits until it accepts
# connections, and sets $redis_pid, $redis_port and $redis_url. The caller stops it by its PID.
start_redis() {
  local log=$1
  shift
  if ! command -v redis-server >/dev/null; then
    if [[ $(id -u) == 0 ]]; then
      apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
    else
      echo "redis-server is missing: apt-get install -y redis-server" >&2
      exit 1
    fi
  fi
  redis_port=$((20000 + RANDOM % 12000))
  "$@" redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$(dirname "$log")" >"$log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 100); do
    grep -q "Ready to accept connections" "$log" 2>/dev/null && break
    kill -0 "$redis_pid" 2>/dev/null || { echo "redis-server did not start; see $log" >&2; exit 1; }
    sleep 0.1
  done
  redis_url="redis://127.0.0.1:$redis_port"
}
