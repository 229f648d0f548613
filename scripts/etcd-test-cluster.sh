#!/usr/bin/env bash
# A 3-member etcd cluster on loopback for multi-node tests: clients on 127.0.0.1:23791/23793/23795,
# peers on 23792/23794/23796, data and pid files under /var/lib/prism-test/etcd.
#   scripts/etcd-test-cluster.sh start   # idempotent; prints the endpoints
#   scripts/etcd-test-cluster.sh stop    # kills the members by pid file and removes the data
set -euo pipefail

ROOT=${PRISM_ETCD_TEST_DIR:-/var/lib/prism-test/etcd}
NAMES=(e0 e1 e2)
client_port() { echo $((23791 + 2 * $1)); }
peer_port() { echo $((23792 + 2 * $1)); }
endpoints() {
  local out=() i
  for i in 0 1 2; do out+=("http://127.0.0.1:$(client_port "$i")"); done
  (IFS=,; echo "${out[*]}")
}
running() { [[ -f "$ROOT/$1.pid" ]] && kill -0 "$(cat "$ROOT/$1.pid")" 2>/dev/null; }

start() {
  command -v etcd >/dev/null || { echo "etcd not installed (apt-get install -y etcd-server etcd-client)" >&2; exit 1; }
  mkdir -p "$ROOT"
  local initial="" i
  for i in 0 1 2; do initial+="${initial:+,}${NAMES[$i]}=http://127.0.0.1:$(peer_port "$i")"; done
  for i in 0 1 2; do
    local name=${NAMES[$i]} c="http://127.0.0.1:$(client_port "$i")" p="http://127.0.0.1:$(peer_port "$i")"
    running "$name" && continue
    # A member's data dir already names its cluster; "existing" rejoins it after a crash.
    local state=new
    [[ -d "$ROOT/$name.data/member" ]] && state=existing
    setsid etcd --name "$name" --data-dir "$ROOT/$name.data" \
      --listen-client-urls "$c" --advertise-client-urls "$c" \
      --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" \
      --initial-cluster "$initial" --initial-cluster-token prism-test --initial-cluster-state "$state" \
      >"$ROOT/$name.log" 2>&1 </dev/null &
    echo $! >"$ROOT/$name.pid"
  done
  for _ in $(seq 1 100); do
    if ETCDCTL_API=3 etcdctl --endpoints "$(endpoints)" endpoint health >/dev/null 2>&1; then
      endpoints
      return 0
    fi
    sleep 0.2
  done
  echo "etcd test cluster did not become healthy; logs in $ROOT/*.log" >&2
  exit 1
}

stop() {
  local name
  for name in "${NAMES[@]}"; do
    if running "$name"; then
      local pid
      pid=$(cat "$ROOT/$name.pid")
      kill "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -rf "$ROOT/$name.pid" "$ROOT/$name.data" "$ROOT/$name.log"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
