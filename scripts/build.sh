#!/usr/bin/env bash
# The build (`npm run build`): TypeScript to dist/, the web console to dist/console, then the guest binaries (make decides for those).
#   scripts/build.sh              always compile
#   scripts/build.sh --if-needed  skip tsc when dist/ was built from exactly these inputs (a re-run of
#                                 the quick start, or a checkout whose dist/ was built elsewhere, as in
#                                 the host VM where tsc takes minutes under emulation)
# dist/.build-inputs records the hash of the inputs a build compiled, whoever ran it.
set -euo pipefail
cd "$(dirname "$0")/.."
build_inputs() {
  { find src bench test examples -type f -name '*.ts' -print0 | sort -z | xargs -0 sha256sum
    find console -type f -print0 | sort -z | xargs -0 sha256sum
    sha256sum package-lock.json tsconfig.json tsconfig.test.json; } | sha256sum | cut -d' ' -f1
}
stamp=dist/.build-inputs
inputs=$(build_inputs)
if [[ "${1:-}" == --if-needed && -f "$stamp" && "$(cat "$stamp")" == "$inputs" ]]; then
  echo "build: TypeScript build is up to date"
else
  [[ "${1:-}" == --if-needed ]] && echo "build: compiling TypeScript"
  rm -f "$stamp"
  npx tsc -p tsconfig.json
  # The web console (console/): type-checked, then bundled by Vite into dist/console.
  npx tsc -p console/tsconfig.json
  npx vite build --config console/vite.config.ts --logLevel warn
  echo "$inputs" >"$stamp"
fi
make -s -C guest/init
make -s -C guest/agent
