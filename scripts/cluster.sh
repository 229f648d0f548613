#!/usr/bin/env bash
# A local 3-node Prism cluster on loopback (the original project's `make run`), formed the way real
# machines form one: node0 starts it (`prismd --cluster-init`, which runs an etcd member), node1 and
# node2 join it (`prismd --join` with the join token) and run members of their own. Each has its own
# data dir and ports; all share one image store. Installs what it lacks (etcd, the build) first.
#
#   npm run cluster                  # start (idempotent) and stay in the foreground; Ctrl-C stops it all
#   npm run cluster -- start --detach  # start and return
#   npm run cluster -- status        # processes, nodes, leader
#   npm run cluster -- stop          # delete the cluster's sandboxes, stop prismd (SIGTERM; each stops its etcd member)
#   npm run cluster -- clean         # stop, then remove the state dir (etcd data, node identities)
#
# Arguments after `start` that are not --detach go to every prismd (e.g. --placement binpack).
# Stopping deletes every sandbox of this cluster through the API first: prismd leaves sandboxes running
# on SIGTERM (to recover them on restart), which here would leak processes and overlay mounts.
#
# A start that fails stops everything it started (no prismd, no etcd member is left running).
#
# Environment: PRISM_CLUSTER_DIR (state, default /tmp/prism-cluster), PRISM_CLUSTER_IMAGES_DIR (shared
# image store, default /var/lib/prism/images, where the quick start builds the base image),
# PRISM_CLUSTER_API_PORT (first API port, default 8101), PRISM_CLUSTER_ETCD_PORT (first etcd client
# port, default 23811; peers at +10).
# Ports: prismd API 127.0.0.1:8101-8103, etcd clients 23811-23813, peers 23821-23823
# (scripts/etcd-test-cluster.sh uses 23791-23796, so both can run at once).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DIR=${PRISM_CLUSTER_DIR:-/tmp/prism-cluster}
IMAGES=${PRISM_CLUSTER_IMAGES_DIR:-/var/lib/prism/images}
BASE_IMAGE=prism.local/base:bookworm
N=3
API_BASE=${PRISM_CLUSTER_API_PORT:-8101}
ETCD_BASE=${PRISM_CLUSTER_ETCD_PORT:-23811}
api_port() { echo $((API_BASE + $1)); }
etcd_client_port() { echo $((ETCD_BASE + $1)); }
etcd_peer_port() { echo $((ETCD_BASE + 10 + $1)); }
api_url() { echo "http://127.0.0.1:$(api_port "$1")"; }
etcd_endpoints() {
  local out=() i
  for i in $(seq 0 $((N - 1))); do out+=("127.0.0.1:$(etcd_client_port "$i")"); done
  (IFS=,; echo "${out[*]}")
}

log() { echo "cluster: $*" >&2; }
die() { log "$*"; exit 1; }
# The admin API token: the node that started the cluster first wrote it into its data dir.
cluster_token() {
  [[ -s "$DIR/admin-token" ]] || cat "$DIR"/node*/admin-token 2>/dev/null | head -n 1 >"$DIR/admin-token" || true
  [[ -s "$DIR/admin-token" ]] && chmod 600 "$DIR/admin-token" && cat "$DIR/admin-token"
}
prismctl() { PRISM_TOKEN="${PRISM_TOKEN:-$(cluster_token)}" node "$ROOT/bin/prismctl.js" "$@"; }

pid_of() { [[ -f "$DIR/$1.pid" ]] && cat "$DIR/$1.pid"; }
running() {
  local pid
  pid=$(pid_of "$1") || return 1
  kill -0 "$pid" 2>/dev/null
}

# GET a path of a node's API and print one field of the JSON answer (a jq-like path: a.b.c).
api_field() {
  node -e '
    const [url, path, token] = process.argv.slice(1);
    fetch(url, { signal: AbortSignal.timeout(2000), headers: token ? { authorization: `Bearer ${token}` } : {} })
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error(String(r.status)))))
      .then((j) => console.log(path.split(".").reduce((v, k) => v?.[k], j) ?? ""))
      .catch(() => process.exit(1));
  ' "$1/api/v1$2" "$3" "$(cluster_token)"
}

check_prereqs() {
  [[ $(id -u) == 0 ]] || die "prismd runs sandboxes with namespaces and mounts: run as root"
  # A fresh machine: the quick start's packages and the build, then etcd (each node runs a member).
  if [[ ! -d "$ROOT/node_modules" || ! -f "$ROOT/dist/src/daemon/prismd.js" || ! -f "$ROOT/dist/src/cli/prismctl.js" ]]; then
    log "Prism is not set up here yet: running scripts/setup.sh (packages, npm dependencies, build)"
    bash "$ROOT/scripts/setup.sh"
  fi
  if ! command -v etcd >/dev/null; then
    log "installing etcd (Debian's etcd-server): every node runs a member of the cluster's store"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server >/dev/null; } ||
      die "could not install etcd-server"
  fi
  if ! grep -q "\"$BASE_IMAGE\"" "$IMAGES/index.json" 2>/dev/null; then
    log "the base image $BASE_IMAGE is not in $IMAGES; building it once (debootstrap, a few minutes)"
    node "$ROOT/bin/prismd.js" build-base-image --images-dir "$IMAGES"
  fi
}

# node0 starts the cluster; the others join it with the join token (kept in $DIR/join-token, 0600,
# so that a restart of a node that died can rejoin). A node that joined before rejoins with its data.
start_node() {
  local i=$1 name=node$1
  shift
  running "$name" && return 0
  mkdir -p "$DIR/$name"
  local role=(--cluster-init)
  if ((i > 0)); then
    role=(--join "$(api_url 0)")
    export PRISM_JOIN_TOKEN
    PRISM_JOIN_TOKEN=$(cat "$DIR/join-token")
  fi
  setsid node "$ROOT/bin/prismd.js" --name "$name" --api "127.0.0.1:$(api_port "$i")" \
    --data-dir "$DIR/$name" --images-dir "$IMAGES" "${role[@]}" \
    --etcd-client "127.0.0.1:$(etcd_client_port "$i")" --etcd-peer "127.0.0.1:$(etcd_peer_port "$i")" \
    --label "zone=z$i" --log-file "$DIR/$name.log" "$@" \
    >"$DIR/$name.out" 2>&1 </dev/null &
  echo $! >"$DIR/$name.pid"
  # Not our job to report on: a node killed on purpose (kill -9, to try failover) is not an error here.
  disown
}

# Until node $1 answers /health; fails (with its output) when it exited.
wait_up() {
  local i=$1
  for _ in $(seq 1 240); do
    running "node$i" || die "prismd node$i exited: $(tail -n 3 "$DIR/node$i.out" 2>/dev/null)"
    api_field "$(api_url "$i")" /health status >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  die "prismd node$i did not answer in 60s; see $DIR/node$i.log"
}

start_prismd() {
  start_node 0 "$@"
  wait_up 0
  if [[ ! -s "$DIR/join-token" ]]; then
    (umask 077 && prismctl --api "$(api_url 0)" cluster join-token >"$DIR/join-token.tmp") || die "could not get the join token from node0"
    mv "$DIR/join-token.tmp" "$DIR/join-token"
  fi
  local i
  for i in $(seq 1 $((N - 1))); do start_node "$i" "$@"; done
}

# Ready = every node answers, the cluster counts N nodes alive, and a leader is elected.
wait_ready() {
  local i ok
  for _ in $(seq 1 120); do
    ok=1
    for i in $(seq 0 $((N - 1))); do
      running "node$i" || die "prismd node$i exited; see $DIR/node$i.out and $DIR/node$i.log"
      [[ -n $(api_field "$(api_url "$i")" /cluster/info leader 2>/dev/null) ]] || ok=0
    done
    if ((ok)) && (($(api_field "$(api_url 0)" /cluster/info nodesAlive) >= N)); then return 0; fi
    sleep 0.5
  done
  die "the cluster did not become ready in 60s; logs: $DIR/node*.log"
}

print_info() {
  local i
  cat <<TXT

Prism cluster of $N nodes on loopback (state in $DIR, images in $IMAGES):
TXT
  for i in $(seq 0 $((N - 1))); do
    printf '  node%s  %s   log %s\n' "$i" "$(api_url "$i")" "$DIR/node$i.log"
  done
  cat <<TXT
  etcd   members run by the nodes, clients at $(etcd_endpoints)
  leader $(api_field "$(api_url 0)" /cluster/info leaderName 2>/dev/null || echo '?')

Try, from another shell (the admin API token is in $DIR/admin-token, mode 0600):
  alias prismctl="node $ROOT/bin/prismctl.js"
  export PRISM_TOKEN=\$(cat $DIR/admin-token)
  prismctl --api 127.0.0.1:$(api_port 0) node ls
  prismctl --api 127.0.0.1:$(api_port 0) sandbox create --name demo
  prismctl --api 127.0.0.1:$(api_port 1) sandbox exec demo -- python3 -c 'print(6*7)'
  prismctl --api 127.0.0.1:$(api_port 2) node top --watch
Stop with Ctrl-C here, or: npm run cluster -- stop
TXT
}

# Deletes every sandbox of this cluster through whichever node answers, then waits for the records
# to go (a delete of a sandbox on a dead node cannot finish; those are reported, not waited for).
delete_sandboxes() {
  local i url="" ids
  for i in $(seq 0 $((N - 1))); do
    if running "node$i" && api_field "$(api_url "$i")" /health status >/dev/null 2>&1; then url=$(api_url "$i"); break; fi
  done
  [[ -n $url ]] || return 0
  ids=$(prismctl --api "$url" -o json sandbox ls 2>/dev/null | node -e '
    let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
      try { console.log(JSON.parse(s).sandboxes.map((x) => x.id).join(" ")); } catch { }
    });') || true
  [[ -n $ids ]] || return 0
  log "deleting sandboxes: $ids"
  # shellcheck disable=SC2086
  prismctl --api "$url" sandbox delete $ids >/dev/null || log "some sandboxes could not be deleted (see above)"
  for _ in $(seq 1 60); do
    [[ $(api_field "$url" /cluster/info sandboxes.total 2>/dev/null) == 0 ]] && return 0
    sleep 0.5
  done
  log "sandboxes still listed after 30s:"
  prismctl --api "$url" sandbox ls >&2 || true
}

stop_pid() {
  local name=$1 sig=$2 wait_s=$3 pid
  running "$name" || { rm -f "$DIR/$name.pid"; return 0; }
  pid=$(pid_of "$name")
  kill "-$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((wait_s * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name (pid $pid) did not exit after SIG$sig in ${wait_s}s; killing it"
    kill -9 "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$DIR/$name.pid"
}

# A prismd killed with -9 leaves its sandboxes running, and only prismd can tear them down. So before
# stopping, nodes that died are started again: they come back, reconcile, and take part in the deletes.
revive_dead_nodes() {
  local i dead=() args=()
  for i in $(seq 0 $((N - 1))); do
    [[ -f "$DIR/node$i.pid" ]] && ! running "node$i" && dead+=("node$i")
  done
  ((${#dead[@]})) || return 0
  log "restarting ${dead[*]} so that their sandboxes can be deleted"
  [[ -f "$DIR/prismd.args" ]] && mapfile -d '' -t args <"$DIR/prismd.args"
  start_prismd "${args[@]}"
  wait_ready || log "the restarted nodes did not come back; their sandboxes may be left running"
}

stop_all() {
  [[ -d $DIR ]] || return 0
  exec 9>"$DIR/lock"
  flock 9
  (revive_dead_nodes) || true
  delete_sandboxes
  local i pids=()
  for i in $(seq 0 $((N - 1))); do stop_pid "node$i" TERM 20 & pids+=($!); done
  wait "${pids[@]}"
  # prismd stops its etcd member; one whose prismd was killed (-9) and never revived runs on alone.
  local stray
  stray=$(pgrep -f -- "--data-dir $DIR/node[0-9]+/etcd" || true)
  if [[ -n $stray ]]; then
    log "stopping etcd members left by killed nodes: $stray"
    # shellcheck disable=SC2086
    kill $stray 2>/dev/null || true
    for _ in $(seq 1 50); do pgrep -f -- "--data-dir $DIR/node[0-9]+/etcd" >/dev/null || break; sleep 0.2; done
    pkill -9 -f -- "--data-dir $DIR/node[0-9]+/etcd" 2>/dev/null || true
  fi
  if grep -q " $DIR/" /proc/mounts; then
    log "mounts left under $DIR (a sandbox was not deleted):"
    grep " $DIR/" /proc/mounts >&2
  fi
  log "stopped"
  exec 9>&-
}

status() {
  local i name any=0
  for name in node0 node1 node2; do
    if running "$name"; then printf '%-6s running (pid %s)\n' "$name" "$(pid_of "$name")"; any=1; else printf '%-6s stopped\n' "$name"; fi
  done
  ((any)) || return 3
  for i in $(seq 0 $((N - 1))); do
    if running "node$i"; then
      echo
      prismctl --api "$(api_url "$i")" info || true
      echo
      prismctl --api "$(api_url "$i")" node ls || true
      echo
      prismctl --api "$(api_url "$i")" cluster members || true
      return 0
    fi
  done
}

start() {
  local detach=0 args=()
  for a in "$@"; do if [[ $a == --detach || $a == -d ]]; then detach=1; else args+=("$a"); fi; done
  check_prereqs
  mkdir -p "$DIR"
  # A start that fails leaves nothing running: whatever it started is stopped again.
  trap 'rc=$?; if ((rc != 0)); then log "start failed; stopping what was started"; stop_all; fi' EXIT
  # Starts only what is not running, so a second start restarts a node that died and changes nothing else.
  if ((${#args[@]})); then printf '%s\0' "${args[@]}" >"$DIR/prismd.args"; else rm -f "$DIR/prismd.args"; fi
  start_prismd "${args[@]}"
  wait_ready
  trap - EXIT
  print_info
  if [[ -f "$DIR/supervisor.pid" ]] && kill -0 "$(cat "$DIR/supervisor.pid")" 2>/dev/null; then
    log "already running in the foreground of pid $(cat "$DIR/supervisor.pid")"
    return 0
  fi
  ((detach)) && return 0
  echo $$ >"$DIR/supervisor.pid"
  trap 'trap - INT TERM HUP; echo; stop_all; rm -f "$DIR/supervisor.pid"; exit 0' INT TERM HUP
  # Stay until a signal, until `cluster stop` from another shell has stopped the processes, or until
  # our parent is gone: `npm run` exits on SIGTERM without passing it on, which would orphan us.
  local parent=$PPID
  while running node0 || running node1 || running node2; do
    if [[ $(awk '{print $4}' "/proc/$$/stat") != "$parent" ]]; then
      log "parent process $parent is gone; stopping"
      break
    fi
    sleep 1 &
    wait $! || true
  done
  trap - INT TERM HUP
  stop_all
  rm -f "$DIR/supervisor.pid"
}

cmd=${1:-start}
[[ $# -gt 0 ]] && shift
case "$cmd" in
  start) start "$@" ;;
  stop) stop_all ;;
  status) status ;;
  clean)
    stop_all
    # Never rm -rf through a mounted sandbox rootfs.
    if grep -q " $DIR/" /proc/mounts; then die "not removing $DIR: mounts are left under it (see above)"; fi
    rm -rf "$DIR"
    log "removed $DIR"
    ;;
  *) echo "usage: $0 [start [--detach] [prismd flags...]|stop|status|clean]" >&2; exit 2 ;;
esac
