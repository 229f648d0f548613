#!/usr/bin/env bash
# Runs the benches of docs/benchmarks.md one after another on this machine (root; the image store of
# the tests, /var/lib/prism-test/images, or PRISM_BENCH_IMAGES_DIR), keeps their JSON in one directory
# and generates the page from it. Minutes: the density bench alone creates 1000 sandboxes twice.
#   bash scripts/bench-report.sh [results-dir]      (PRISM_BENCH_DENSITY=N for fewer sandboxes)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d /tmp/prism-bench-XXXXXX)}
mkdir -p "$out"
npm run build >/dev/null
run() { # name, then the bench's arguments
  local name=$1; shift
  echo "bench-report: $name" >&2
  node "dist/bench/$name.js" "$@" > "$out/$name.json.part" || { rm -f "$out/$name.json.part"; return 1; }
  mv "$out/$name.json.part" "$out/$name.json"
}
run oci-latency 20
run throughput 48
run density "${PRISM_BENCH_DENSITY:-1000}" 16
run lifecycle 5
run cluster-placement 5 1000 0
# The docker runtime beside oci, on the test dockerd (scripts/test-dockerd.sh) unless DOCKER_HOST names an
# engine; the test dockerd is stopped again when this started it.
if [[ -z "${DOCKER_HOST:-}" ]]; then
  started_dockerd=false
  bash scripts/test-dockerd.sh status >/dev/null 2>&1 || { bash scripts/test-dockerd.sh start >/dev/null && started_dockerd=true; }
  export DOCKER_HOST=unix://${PRISM_TEST_DOCKER_DIR:-/var/lib/prism-test/docker}/docker.sock
fi
run docker-vs-oci 10 || echo "bench-report: the docker bench failed; the page goes without it" >&2
if [[ "${started_dockerd:-false}" == true ]]; then bash scripts/test-dockerd.sh stop >/dev/null 2>&1 || true; fi
node dist/bench/report.js "$out" docs
echo "bench-report: results in $out" >&2
