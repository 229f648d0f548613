#!/usr/bin/env bash
# Builds the host VM's image into an empty directory: a stock Debian 12 server (debootstrap's default
# variant, i.e. every `required` and `important` package, which in bookworm includes systemd-sysv, udev
# and dbus), Debian's cloud kernel, the packages of scripts/setup.sh's PKGS, and the host's Node 20.
# Called by scripts/host-vm.sh, which hashes this file into the cache key: what this file does is
# what the image is.
#
#   scripts/host-vm/build-image.sh OUT_DIR DEB_CACHE_DIR
#
# OUT_DIR receives root.img (ext4, label prism-root, sparse), vmlinuz, initrd.img, packages.txt.
# DEB_CACHE_DIR keeps the downloaded .debs across builds, so a rebuild after an edit downloads nothing.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${1:?usage: build-image.sh OUT_DIR DEB_CACHE_DIR}
DEBS=${2:?usage: build-image.sh OUT_DIR DEB_CACHE_DIR}
SUITE=bookworm
# The disk the guest sees. Sparse, so only what is written costs host space; big enough for the
# in-VM tests to build images and pull layers.
DISK_SIZE=24G

log() { echo "host-vm build: $*" >&2; }
die() { log "$*"; exit 1; }

# shellcheck source=scripts/host-vm/inputs.sh
source "$HERE/inputs.sh"
mapfile -t SETUP_PKGS < <(setup_pkgs "$REPO/scripts/setup.sh")
# What a stock server has beside the required/important set, and the kernel the VM boots.
SERVER_PKGS=(linux-image-cloud-amd64 systemd systemd-sysv udev dbus iproute2 kmod ca-certificates)

MIRROR=$(apt_mirror debian http://deb.debian.org/debian)
SECURITY=$(apt_mirror debian-security http://deb.debian.org/debian-security)

ROOT="$OUT/rootfs"
mkdir -p "$ROOT" "$DEBS"
mounted=()
unmount_all() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
  mounted=()
}
trap unmount_all EXIT
bind() { mkdir -p "$2"; mount "${@:3}" "$1" "$2"; mounted+=("$2"); }
in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"; }

log "debootstrap $SUITE from $MIRROR"
debootstrap --cache-dir="$DEBS" "$SUITE" "$ROOT" "$MIRROR" >"$OUT/debootstrap.log" 2>&1 \
  || { tail -n 30 "$OUT/debootstrap.log" >&2; die "debootstrap failed (log above)"; }

# The sources a stock server has (no network in the VM, but apt policy and `apt list` look right).
cat >"$ROOT/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY $SUITE-security main
SOURCES
# Services must not start inside the chroot during installation.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
bind proc "$ROOT/proc" -t proc
bind sysfs "$ROOT/sys" -t sysfs
bind /dev/pts "$ROOT/dev/pts" --bind
bind "$DEBS" "$ROOT/var/cache/apt/archives" --bind

log "installing ${SERVER_PKGS[*]} ${SETUP_PKGS[*]}"
{
  in_root apt-get update -qq
  in_root apt-get -y -qq upgrade
  # As setup.sh installs them: without recommends.
  in_root apt-get install -y -qq --no-install-recommends "${SERVER_PKGS[@]}" "${SETUP_PKGS[@]}"
} >"$OUT/apt.log" 2>&1 || { tail -n 30 "$OUT/apt.log" >&2; die "apt-get in the image failed (log above)"; }
in_root dpkg-query -W -f='${Package} ${Version}\n' >"$OUT/packages.txt"
unmount_all
rm -f "$ROOT/usr/sbin/policy-rc.d"
rm -rf "$ROOT"/var/lib/apt/lists/*_Packages "$ROOT"/var/lib/apt/lists/*_Release "$ROOT"/var/lib/apt/lists/*_InRelease

KVER=$(basename "$(ls -d "$ROOT"/lib/modules/* | head -n 1)")
CONFIG="$ROOT/boot/config-$KVER"
# The run unit reads the command from QEMU's fw_cfg (see guest/prism-hostvm-run).
grep -qE '^CONFIG_FW_CFG_SYSFS=(y|m)' "$CONFIG" || die "kernel $KVER has no CONFIG_FW_CFG_SYSFS"
cp "$ROOT/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
cp "$ROOT/boot/initrd.img-$KVER" "$OUT/initrd.img"

log "configuring (kernel $KVER)"
echo prism-hostvm >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tprism-hostvm\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
# No network but loopback: no resolver either (debootstrap copied the host's).
: >"$ROOT/etc/resolv.conf"
# Pass 0: every run starts from the same clean filesystem, so fsck would only cost boot time.
echo 'LABEL=prism-root / ext4 defaults,errors=remount-ro 0 0' >"$ROOT/etc/fstab"
# One fixed machine id: an empty one makes systemd treat each boot as a first boot (preset-all).
in_root systemd-machine-id-setup >/dev/null
# `shell` mode logs in as root on the console; the VM has no network, so no password is needed.
in_root passwd -qd root
# apt's daily timers would take the dpkg lock under tests that install packages; there is no
# network to update from anyway.
in_root systemctl mask -q apt-daily.timer apt-daily-upgrade.timer

# The host's Node and npm, as the host runs them: node in /usr/local/bin, npm's package beside it.
NPM_ROOT=$(host_npm_root)
install -m 755 "$(command -v node)" "$ROOT/usr/local/bin/node"
mkdir -p "$ROOT/usr/local/lib/node_modules"
cp -a "$NPM_ROOT" "$ROOT/usr/local/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$ROOT/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$ROOT/usr/local/bin/npx"

install -m 755 "$HERE/guest/prism-hostvm-run" "$ROOT/usr/local/sbin/prism-hostvm-run"
install -m 644 "$HERE/guest/prism-hostvm-run.service" "$ROOT/etc/systemd/system/prism-hostvm-run.service"
in_root systemctl enable -q prism-hostvm-run.service

log "writing root.img ($DISK_SIZE sparse)"
mkfs.ext4 -q -L prism-root -d "$ROOT" "$OUT/root.img" "$DISK_SIZE"
rm -rf "$ROOT"
