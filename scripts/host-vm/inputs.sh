# What the host VM's image is made of, shared by scripts/host-vm.sh (the cache key) and
# build-image.sh (the build), so the key cannot miss an input the build reads. Sourced, not run.

# The PKGS array of scripts/setup.sh, one package a line: the image installs what the quick start does.
setup_pkgs() {
  local line
  line=$(grep -E '^PKGS=\(' "$1") || { echo "host-vm: no PKGS=(...) line in $1" >&2; return 1; }
  line=${line#PKGS=(}
  line=${line%)*}
  # shellcheck disable=SC2086 # word splitting is the point: the array's elements are plain names.
  printf '%s\n' $line
}

# The first Debian archive URI of the host's apt sources whose path ends in /$1 (both the one-line
# and the deb822 format), else $2.
apt_mirror() {
  local uri
  uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | sed -nE 's/^URIs:[[:space:]]*//p; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/p' \
    | tr ' ' '\n' | grep -E "^https?://[^ ]*/$1/?$" | head -n 1)
  echo "${uri:-$2}"
}

# npm's package directory on the host (where `npm` resolves to: npm-cli.js inside it).
host_npm_root() {
  local cli
  cli=$(readlink -f "$(command -v npm)") || return 1
  [ -f "$cli" ] && [ "$(basename "$cli")" = npm-cli.js ] || { echo "host-vm: npm is not npm-cli.js: $cli" >&2; return 1; }
  dirname "$(dirname "$cli")"
}

# The cache key: the build's own files (this one, build-image.sh, the guest's unit and runner), the
# package list and the host's node/npm versions, and the Debian mirror it reads.
image_key() {
  local dir=$1 repo=$2
  {
    cat "$dir/inputs.sh" "$dir/build-image.sh" "$dir"/guest/*
    setup_pkgs "$repo/scripts/setup.sh"
    node --version
    node -p "require('$(host_npm_root)/package.json').version"
    apt_mirror debian http://deb.debian.org/debian
  } | sha256sum | cut -c1-16
}
