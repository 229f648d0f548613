#!/usr/bin/env bash
# One command from a fresh Debian 12 clone to Python running in a sandbox:
# installs and builds Prism, builds the base image once, starts prismd in the background,
# creates a sandbox and runs python3 in it. Re-running is fast and safe.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

bash scripts/setup.sh

export PRISM_DATA_DIR=${PRISM_DATA_DIR:-/var/lib/prism}
export PRISM_API=${PRISM_API:-127.0.0.1:8008}
LOG=${PRISM_LOG_FILE:-/var/log/prism/prismd.log}
mkdir -p "$(dirname "$LOG")"
prismctl() { node "$ROOT/bin/prismctl.js" "$@"; }

node bin/prismd.js build-base-image

if curl -fsS "http://$PRISM_API/api/v1/health" >/dev/null 2>&1; then
  echo "prismd is already running on $PRISM_API"
else
  echo "starting prismd on $PRISM_API (logs: $LOG)"
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

cat <<TXT

Prism is running (API http://$PRISM_API, data in $PRISM_DATA_DIR). Next:
  alias prismctl="node $ROOT/bin/prismctl.js"     # or: npm link
  prismctl info                                  # the cluster (one node)
  prismctl token create my-app                   # an API token for a program (the SDK)
  prismctl sandbox ls
  prismctl sandbox exec quickstart -- python3 -c 'import sys; print(sys.version)'
  prismctl sandbox create --name mybox --memory 1024
  prismctl sandbox rm quickstart
  kill \$(cat $PRISM_DATA_DIR/prismd.pid)          # stop prismd (sandboxes are recovered on restart)
TXT
