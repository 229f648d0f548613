#!/usr/bin/env bash
# Runs inside the host VM (bash scripts/host-vm.sh run -- bash test/hostvm/inside.sh): the README's
# quick start as a user runs it on a stock Debian 12 server, then the v2 + systemd suite.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PRISM_TEST_IMAGES_DIR=${PRISM_TEST_IMAGES_DIR:-/var/lib/prism-test/images}
# The base image is built on the host (debootstrap takes many minutes under emulation) and carried in;
# put it where the quick start's prismd looks, as a re-run of the quick start would find it.
if [[ -d "$PRISM_TEST_IMAGES_DIR" && ! -d /var/lib/prism/images ]]; then
  mkdir -p /var/lib/prism
  cp -a "$PRISM_TEST_IMAGES_DIR" /var/lib/prism/images
fi
start=$(date +%s)
# Bounded, so that a quick start that hangs says why (prismd's journal) with time left to say it,
# rather than the VM being killed at the run's timeout with nothing but the quick start's output.
set +e
timeout "${PRISM_HOSTVM_QUICKSTART_TIMEOUT:-1200}" npm run quickstart 2>&1 | tee /tmp/quickstart.out
rc=${PIPESTATUS[0]}
set -e
echo "host-vm: quick start took $(( $(date +%s) - start )) s"
if [[ $rc -ne 0 ]]; then
  echo "host-vm: the quick start failed (exit $rc$([[ $rc -eq 124 ]] && echo ': timed out')); prismd's state and journal follow"
  systemctl status prismd --no-pager 2>&1 | head -n 15 || true
  journalctl -u prismd --no-pager -o short-precise 2>&1 | cut -c1-400 | tail -n 120 || true
  exit "$rc"
fi
PRISM_IN_HOST_VM=1 npx vitest run --config vitest.hostvm.config.ts "$@"
