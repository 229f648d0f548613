#!/usr/bin/env bash
# Local OCI registries for the image-pull integration tests: start|stop|status (idempotent).
#
#   127.0.0.1:5000  no auth
#   127.0.0.1:5001  htpasswd (Basic) auth: prism / prism-test-pw
#   127.0.0.1:5002  token (Bearer) auth, like Docker Hub; tokens from 127.0.0.1:5003/token
#                   (anonymous: pull; prism / prism-test-pw: pull and push)
#
# Everything binds 127.0.0.1 only. State (configs, storage, pid files, logs) lives under
# $PRISM_TEST_REGISTRIES_DIR (default /var/lib/prism-test/registries); the registries keep running after
# this script exits so that every test run and developer shell shares them.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${PRISM_TEST_REGISTRIES_DIR:-/var/lib/prism-test/registries}
USER_NAME=prism
USER_PASSWORD=prism-test-pw
TOKEN_ISSUER=prism-test-token-server
TOKEN_SERVICE=prism-test-registry
SERVICES=(5000 5001 5002 5003)

usage() {
  echo "usage: $0 start|stop|status" >&2
  exit 2
}

# Debian package names of the tools the registries and the image fixtures need.
ensure_packages() {
  local -A need=([docker-registry]=docker-registry [skopeo]=skopeo [htpasswd]=apache2-utils
    [openssl]=openssl [zstd]=zstd [curl]=curl [flock]=util-linux)
  local missing=() cmd
  for cmd in "${!need[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
  done
  [ -x /bin/busybox ] || missing+=(busybox-static)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "test-registries: missing ${missing[*]} (install them as root)" >&2
    exit 1
  fi
  echo "test-registries: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Where policy-rc.d allows it, the package starts its own registry on :5000 (all interfaces): not ours.
  if [ -x /etc/init.d/docker-registry ]; then /etc/init.d/docker-registry stop >/dev/null 2>&1 || true; fi
}

pid_of() { cat "$STATE/$1.pid" 2>/dev/null || true; }

# Alive and really ours: a recycled pid must not count as a running registry.
is_running() {
  local pid
  pid=$(pid_of "$1")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -e docker-registry -e token-server
}

http_code() {
  local path=/v2/
  [ "$1" = 5003 ] && path=/healthz
  curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$1$path" || true
}

answers() {
  local code
  code=$(http_code "$1")
  [ "$code" = 200 ] || [ "$code" = 401 ]
}

write_registry_config() {
  local port=$1 auth=$2
  mkdir -p "$STATE/$port"
  cat >"$STATE/$port.yml" <<EOF
version: 0.1
log:
  level: info
  fields:
    service: registry-$port
storage:
  filesystem:
    rootdirectory: $STATE/$port
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: prism-test-registry-$port
$auth
EOF
}

prepare() {
  mkdir -p "$STATE"
  if [ ! -s "$STATE/htpasswd" ]; then
    htpasswd -Bbn "$USER_NAME" "$USER_PASSWORD" >"$STATE/htpasswd.tmp"
    mv "$STATE/htpasswd.tmp" "$STATE/htpasswd"
  fi
  if [ ! -s "$STATE/token.crt" ] || [ ! -s "$STATE/token.key" ]; then
    # Self-signed: the registry trusts it as rootcertbundle, the token server sends it as the JWT's x5c.
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$TOKEN_ISSUER" \
      -keyout "$STATE/token.key.tmp" -out "$STATE/token.crt.tmp" 2>/dev/null
    mv "$STATE/token.key.tmp" "$STATE/token.key"
    mv "$STATE/token.crt.tmp" "$STATE/token.crt"
  fi
  write_registry_config 5000 ""
  write_registry_config 5001 "auth:
  htpasswd:
    realm: prism-test-basic
    path: $STATE/htpasswd"
  write_registry_config 5002 "auth:
  token:
    realm: http://127.0.0.1:5003/token
    service: $TOKEN_SERVICE
    issuer: $TOKEN_ISSUER
    rootcertbundle: $STATE/token.crt"
}

launch() {
  local svc=$1
  local cmd=(docker-registry serve "$STATE/$svc.yml")
  if [ "$svc" = 5003 ]; then
    cmd=(node "$ROOT/test/fixtures/token-server.mjs" --port 5003 --key "$STATE/token.key" --cert "$STATE/token.crt"
      --issuer "$TOKEN_ISSUER" --service "$TOKEN_SERVICE" --user "$USER_NAME:$USER_PASSWORD")
  fi
  # setsid: own session, so the caller's job control or terminal does not take the daemons down with it.
  # 9>&-: the daemons must not inherit (and so hold forever) the start/stop lock.
  setsid "${cmd[@]}" </dev/null >>"$STATE/$svc.log" 2>&1 9>&- &
  echo $! >"$STATE/$svc.pid"
}

start() {
  ensure_packages
  prepare
  local svc
  for svc in "${SERVICES[@]}"; do
    if is_running "$svc"; then continue; fi
    rm -f "$STATE/$svc.pid"
    echo "--- start $(date -u +%FT%TZ)" >>"$STATE/$svc.log"
    launch "$svc"
  done
  local deadline=$((SECONDS + 30)) failed=0
  for svc in "${SERVICES[@]}"; do
    until is_running "$svc" && answers "$svc"; do
      if [ $SECONDS -ge $deadline ] || ! is_running "$svc"; then
        echo "test-registries: 127.0.0.1:$svc did not come up (HTTP $(http_code "$svc")); log tail:" >&2
        tail -n 20 "$STATE/$svc.log" >&2 || true
        failed=1
        break
      fi
      sleep 0.2
    done
  done
  [ $failed -eq 0 ] || exit 1
  echo "test-registries: up on 127.0.0.1:5000 (plain), :5001 (basic), :5002 (token, tokens from :5003); state in $STATE"
}

stop() {
  local svc pid i
  for svc in "${SERVICES[@]}"; do
    if is_running "$svc"; then
      pid=$(pid_of "$svc")
      kill "$pid" 2>/dev/null || true
      for i in $(seq 50); do
        [ -d "/proc/$pid" ] || break
        sleep 0.1
      done
      [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$STATE/$svc.pid"
  done
  echo "test-registries: stopped"
}

status() {
  local svc all=0
  for svc in "${SERVICES[@]}"; do
    if is_running "$svc"; then
      echo "127.0.0.1:$svc running pid $(pid_of "$svc") HTTP $(http_code "$svc")"
      answers "$svc" || all=1
    else
      echo "127.0.0.1:$svc stopped"
      all=1
    fi
  done
  return $all
}

[ $# -eq 1 ] || usage
case $1 in
  start | stop)
    mkdir -p "$STATE"
    # One caller at a time: parallel test workers may all ask to start the registries.
    exec 9>"$STATE/.lock"
    flock 9
    "$1"
    ;;
  status) status ;;
  *) usage ;;
esac
