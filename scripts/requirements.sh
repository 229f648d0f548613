# What the quick start and setup check before anything else (sourced, not run). Each check prints
# what is wrong and how to fix it on stderr and returns 1. Plain bash, no other command: the tests
# call prism_require_node with PATH holding only a fake node.

prism_require_root() {
  if [ "$EUID" -ne 0 ]; then
    echo "Prism installs packages and creates namespaces, cgroups and mounts: run this as root (e.g. sudo -i, then again)." >&2
    return 1
  fi
}

# Node.js >= 20.19 (package.json "engines"), with npm.
prism_require_node() {
  local node version=''
  node=$(command -v node) && version=$("$node" --version 2>/dev/null || true)
  if [[ $version =~ ^v([0-9]+)\.([0-9]+)\. ]]; then
    local major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
    if (( major > 20 || (major == 20 && minor >= 19) )); then
      command -v npm >/dev/null && return 0
      echo "Prism needs npm, which comes with Node.js from NodeSource or nodejs.org; $node has none beside it." >&2
      return 1
    fi
    echo "Prism needs Node.js >= 20.19; $node is $version." >&2
  else
    echo "Prism needs Node.js >= 20.19, and there is no node on PATH." >&2
  fi
  printf '%s\n' >&2 \
    "Debian 12's own nodejs package is version 18. Node.js 20 from NodeSource's apt repository:" \
    '  apt-get update && apt-get install -y ca-certificates curl gnupg' \
    '  curl -fsSL https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key | gpg --dearmor --batch --yes -o /usr/share/keyrings/nodesource.gpg' \
    '  echo "deb [signed-by=/usr/share/keyrings/nodesource.gpg] https://deb.nodesource.com/node_20.x nodistro main" > /etc/apt/sources.list.d/nodesource.list' \
    '  apt-get update && apt-get install -y nodejs' \
    'or the official build from nodejs.org: README.md, "Requirements".'
  return 1
}
