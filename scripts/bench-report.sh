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
  node "dist/bench/$name.js" "$@" > "$out/$name.json.part"
  mv "$out/$name.json.part" "$out/$name.json"
}
run oci-latency 20
run throughput 48
run density "${PRISM_BENCH_DENSITY:-1000}" 16
run lifecycle 5
run cluster-placement 5 1000 0
node dist/bench/report.js "$out" docs
echo "bench-report: results in $out" >&2
