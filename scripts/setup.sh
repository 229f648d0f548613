#!/usr/bin/env bash
# Installs what Prism needs on Debian 12 and builds it. Safe and fast to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/requirements.sh
prism_require_root || exit 1
prism_require_node || exit 1

# runc: the oci runtime. debootstrap: builds the base image. build-essential: the static init.
# busybox-static: tiny rootfs for driver tests. e2fsprogs, iproute2: disks and network namespaces.
# nftables: sandbox egress policy (docs/network.md).
# zstd: zstd-compressed image layers. qemu-system-x86, musl-tools, cpio, lz4: the microvm runtime
# (QEMU, the static guest agent, the initramfs, the LZ4-compressed Debian kernel). nftables: network
# policy. openssl: --tls auto
# makes its certificates with it. xfsprogs, btrfs-progs: the test dockerd's data root
# (scripts/test-dockerd.sh), a filesystem on which the engine can limit a container's size.
PKGS=(runc debootstrap build-essential busybox-static e2fsprogs iproute2 nftables ca-certificates curl zstd qemu-system-x86 musl-tools cpio lz4 openssl xfsprogs btrfs-progs)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
fi

# The build skips tsc when dist/ was compiled from these very inputs (scripts/build.sh).
bash scripts/build.sh --if-needed

# The microvm runtime's guest kernel + initramfs (Debian's cloud kernel, our agent); fast when done.
# Only microvm needs it, so a host that cannot fetch the kernel (no network) still gets oci and docker.
if ! bash scripts/prepare-guest.sh; then
  echo "setup: WARNING: the microvm guest kernel could not be prepared; the microvm runtime stays unavailable until 'bash scripts/prepare-guest.sh' succeeds" >&2
fi
