#!/usr/bin/env bash
# A private dockerd for the docker driver's tests: start|stop|status (idempotent).
#
# It never touches host networking (no iptables rules, no masquerading, no bridge: sandboxes run with
# NetworkMode none) and keeps everything under $PRISM_TEST_DOCKER_DIR (default /var/lib/prism-test/docker):
# data root, exec root, pidfile, log and the socket $PRISM_TEST_DOCKER_DIR/docker.sock. Tests find it
# through DOCKER_HOST=unix://$PRISM_TEST_DOCKER_DIR/docker.sock. `stop` only ends the dockerd whose
# pid this script wrote.
set -euo pipefail

STATE=${PRISM_TEST_DOCKER_DIR:-/var/lib/prism-test/docker}
SOCK=$STATE/docker.sock
PIDFILE=$STATE/dockerd.pid

running() {
  [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

start() {
  if running; then echo "dockerd running (pid $(cat "$PIDFILE")), DOCKER_HOST=unix://$SOCK"; return 0; fi
  if ! command -v dockerd >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then echo "test-dockerd: dockerd is missing (apt-get install docker.io as root)" >&2; exit 1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  fi
  mkdir -p "$STATE/data" "$STATE/exec"
  rm -f "$PIDFILE"
  # setsid: dockerd outlives this script (and the shell that ran it) like the test registries do.
  setsid dockerd --host "unix://$SOCK" --data-root "$STATE/data" --exec-root "$STATE/exec" --pidfile "$PIDFILE" \
    --iptables=false --ip6tables=false --ip-masq=false --bridge=none \
    </dev/null >>"$STATE/dockerd.log" 2>&1 &
  for _ in $(seq 1 150); do
    if [ -S "$SOCK" ] && curl -sf --unix-socket "$SOCK" http://localhost/_ping >/dev/null 2>&1; then
      echo "dockerd started (pid $(cat "$PIDFILE")), DOCKER_HOST=unix://$SOCK"
      return 0
    fi
    sleep 0.2
  done
  echo "test-dockerd: dockerd did not answer on $SOCK within 30 s; last log lines:" >&2
  tail -n 20 "$STATE/dockerd.log" >&2
  exit 1
}

stop() {
  running || { echo "dockerd not running"; return 0; }
  local pid
  pid=$(cat "$PIDFILE")
  kill "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || { echo "dockerd stopped"; return 0; }; sleep 0.2; done
  echo "test-dockerd: dockerd (pid $pid) did not stop within 20 s" >&2
  exit 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "running (pid $(cat "$PIDFILE")), DOCKER_HOST=unix://$SOCK"; else echo "not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
