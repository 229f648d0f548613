#!/usr/bin/env bash
# One command from a fresh Debian 12 clone to Python running in a sandbox: checks for root and
# Node.js, installs and builds Prism, puts prismd and prismctl on PATH, builds the base image once,
# runs prismd (as the systemd service prismd.service where systemd is PID 1, else in the background),
# creates a sandbox and runs python3 in it. Re-running is fast and safe; after a git pull it upgrades.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

source scripts/requirements.sh
prism_require_root || exit 1
prism_require_node || exit 1

# Daemon settings given to this script (PRISM_API=0.0.0.0:8008 npm run quickstart) go into the
# service's settings file; PRISM_TOKEN, PRISM_CA and PRISM_CONFIG are prismctl's own.
service_env=()
for v in ${!PRISM_@}; do
  case $v in PRISM_TOKEN | PRISM_CA | PRISM_CONFIG) ;; *) service_env+=(--env "$v=${!v}") ;; esac
done

bash scripts/setup.sh

# prismd and prismctl on PATH: symlinks to the checkout (node follows them, so bin/*.js find dist/).
for b in prismd prismctl; do
  link=/usr/local/bin/$b
  if [ -e "$link" ] && [ ! -L "$link" ]; then
    echo "quickstart: $link exists and is not a symlink; left alone (run $ROOT/bin/$b.js)" >&2
  elif [ "$(readlink "$link" || true)" != "$ROOT/bin/$b.js" ]; then
    ln -sfn "$ROOT/bin/$b.js" "$link"
    echo "quickstart: $link -> $ROOT/bin/$b.js"
  fi
done

ENV_FILE=/etc/prism/prismd.env
# The service's setting $1 as install-service writes it (bare or in double quotes), if it has one.
service_setting() {
  [ -r "$ENV_FILE" ] || return 0
  sed -n "s/^[[:space:]]*$1=//p" "$ENV_FILE" | tail -n 1 | sed 's/^"\(.*\)"$/\1/'
}

SERVICE=
if [ -d /run/systemd/system ]; then
  SERVICE=1
  PRISM_DATA_DIR=${PRISM_DATA_DIR:-$(service_setting PRISM_DATA_DIR)}
  PRISM_API=${PRISM_API:-$(service_setting PRISM_API)}
fi
export PRISM_DATA_DIR=${PRISM_DATA_DIR:-/var/lib/prism}
export PRISM_API=${PRISM_API:-127.0.0.1:8008}
LOG=${PRISM_LOG_FILE:-/var/log/prism/prismd.log}
prismctl() { node "$ROOT/bin/prismctl.js" "$@"; }

node bin/prismd.js build-base-image

if [ -n "$SERVICE" ]; then
  # Writes and (re)starts the unit, so that a rebuilt checkout runs; sandboxes keep running.
  node bin/prismd.js install-service "${service_env[@]}"
elif curl -fsS "http://$PRISM_API/api/v1/health" >/dev/null 2>&1; then
  echo "prismd is already running on $PRISM_API (to run a newer build: kill \$(cat $PRISM_DATA_DIR/prismd.pid), then run this again)"
else
  echo "starting prismd on $PRISM_API (logs: $LOG)"
  mkdir -p "$(dirname "$LOG")"
  nohup node bin/prismd.js --log-file "$LOG" >/dev/null 2>>"$LOG.err" &
  for _ in $(seq 1 100); do
    curl -fsS "http://$PRISM_API/api/v1/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://$PRISM_API/api/v1/health" >/dev/null || { echo "prismd did not start; see $LOG and $LOG.err" >&2; exit 1; }
fi

# prismd wrote the admin API token on its first start; save it for prismctl (~/.config/prism, 0600).
TOKEN_FILE="$PRISM_DATA_DIR/admin-token"
if [[ -z "${PRISM_TOKEN:-}" && -r "$TOKEN_FILE" ]]; then
  prismctl --token "$(cat "$TOKEN_FILE")" login >/dev/null
fi

if ! prismctl sandbox info quickstart >/dev/null 2>&1; then
  prismctl sandbox create --name quickstart >/dev/null
fi
prismctl sandbox start quickstart >/dev/null 2>&1 || true
echo "running: python3 -c 'print(6*7)' in sandbox 'quickstart'"
prismctl sandbox exec quickstart -- python3 -c 'print(6*7)'

line() { printf '  %-46s # %s\n' "$1" "$2"; }
if [ -n "$SERVICE" ]; then
  HOW="as the systemd service prismd.service"
  MANAGE=$(line "journalctl -u prismd -f" "prismd's logs"
    line "systemctl restart prismd" "after editing $ENV_FILE"
    line "systemctl stop prismd" "stop prismd (sandboxes keep running; reattached when it starts)")
else
  HOW="in the background, as there is no systemd here"
  MANAGE=$(line "tail -f $LOG" "prismd's logs"
    line "kill \$(cat $PRISM_DATA_DIR/prismd.pid)" "stop prismd (sandboxes keep running; reattached when it starts)")
fi
cat <<TXT

Prism is running $HOW (API http://$PRISM_API, data in $PRISM_DATA_DIR). Next:
  prismctl info                                  # the cluster (one node)
  prismctl token create my-app                   # an API token for a program (the SDK)
  prismctl sandbox ls
  prismctl sandbox exec quickstart -- python3 -c 'import sys; print(sys.version)'
  prismctl sandbox create --name mybox --memory 1024
  prismctl sandbox rm quickstart
$MANAGE
TXT
