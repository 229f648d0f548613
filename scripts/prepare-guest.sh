#!/usr/bin/env bash
# Prepares what the microvm runtime boots: a kernel from Debian's linux-image-cloud-amd64 and an
# initramfs with our agent as /init. Idempotent and fast when done; --force redoes everything.
#
#   scripts/prepare-guest.sh [--agent PATH] [--init PATH] [--force] [DIR]
#
# DIR (default $PRISM_GUEST_DIR or /var/lib/prism/guest) receives:
#   vmlinux          uncompressed ELF with a PVH entry note (QEMU and Firecracker boot it without a
#                    decompressor: faster than the bzImage). If the note is missing, vmlinuz instead.
#   modules/         the .ko files the agent loads (decompressed), modules.order (their load order)
#   kernel-version   e.g. 6.1.0-56-cloud-amd64
#   manifest.json    kernel version, package version, kernel file, pvh, sha256
#   initramfs.cpio   only when the agent binary exists: /init, /lib/modules/*.ko, /modules.order, and
#                    /prism-init (guest/init, mounted at /.prism/init in the sandbox for file operations)
set -euo pipefail
cd "$(dirname "$0")/.."

AGENT=guest/agent/prism-agent
# prism-init's file helper, which the agent mounts at /.prism/init of every sandbox (files API).
INIT=guest/init/prism-init-musl
FORCE=0
DIR="${PRISM_GUEST_DIR:-/var/lib/prism/guest}"
while [ $# -gt 0 ]; do
  case "$1" in
    --agent) AGENT="$2"; shift 2 ;;
    --agent=*) AGENT="${1#--agent=}"; shift ;;
    --init) INIT="$2"; shift 2 ;;
    --init=*) INIT="${1#--init=}"; shift ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "prepare-guest: unknown option $1" >&2; exit 2 ;;
    *) DIR="$1"; shift ;;
  esac
done

# Load order matters: finit_module does not resolve dependencies, so each module follows the ones it
# depends on (checked below against the modules' own depends= field). The vsock trio is for the
# Firecracker backend and is optional.
REQUIRED_MODULES=(virtio_ring virtio virtio_mmio virtio_console virtio_blk failover net_failover virtio_net overlay)
OPTIONAL_MODULES=(vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport)
META_PKG=linux-image-cloud-amd64

log() { echo "prepare-guest: $*" >&2; }
die() { log "$*"; exit 1; }

for tool in apt-get dpkg-deb readelf sha256sum cpio; do
  command -v "$tool" >/dev/null || die "missing $tool (Debian: apt-get install binutils cpio)"
done

mkdir -p "$DIR"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/prism-guest.XXXXXX")
# Staged beside the target so the final moves are renames within one filesystem.
stage="$DIR/.stage.$$"
trap 'rm -rf "$TMP" "$stage"' EXIT

# Decompressed payload of a bzImage, after the idea of the kernel's scripts/extract-vmlinux: find
# each compressor's magic bytes, decompress from there, keep the first result that is an ELF.
# Decompressors complain about the trailing bytes after the payload; their output is still whole.
is_elf() { [ "$(head -c 4 "$1" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; }
extract_vmlinux() {
  local in="$1" out="$2" magic cmd off
  if is_elf "$in"; then cp "$in" "$out"; return 0; fi
  # magic (PCRE bytes) | decompress command reading stdin. lz4 is Debian's choice for 6.1 cloud.
  local formats=(
    '\x02\x21\x4c\x18|lz4 -dc -l'
    '\x28\xb5\x2f\xfd|zstd -dcq'
    '\xfd\x37\x7a\x58\x5a\x00|xz -dcq'
    '\x1f\x8b\x08|gzip -dcq'
    '\x42\x5a\x68|bzip2 -dcq'
    '\x5d\x00\x00\x00|xz -dcq --format=lzma'
    '\x89\x4c\x5a\x4f\x00\x0d\x0a\x1a\x0a|lzop -dcq'
  )
  for f in "${formats[@]}"; do
    magic="${f%%|*}" cmd="${f#*|}"
    command -v "${cmd%% *}" >/dev/null || continue
    # Only the first few matches: the payload sits near the start; stray magic bytes inside it don't.
    for off in $(LC_ALL=C grep -obUaP "$magic" "$in" | head -n 8 | cut -d: -f1); do
      tail -c +"$((off + 1))" "$in" | $cmd >"$out" 2>/dev/null || true
      if [ -s "$out" ] && is_elf "$out"; then
        log "vmlinux: ${cmd%% *} payload at offset $off"
        return 0
      fi
    done
  done
  rm -f "$out"
  return 1
}

# XEN_ELFNOTE_PHYS32_ENTRY (type 0x12) in the "Xen" notes is the PVH entry point QEMU's -kernel uses.
has_pvh_note() { readelf -nW "$1" 2>/dev/null | grep -qE '^\s*Xen\s.*(0x00000012|PHYS32_ENTRY)'; }

module_depends() { readelf -p .modinfo "$1" 2>/dev/null | sed -n 's/.*depends=//p' | tr ',' ' '; }

prepare_kernel() {
  log "downloading $META_PKG"
  # Root downloads into a private temp dir that the _apt sandbox user cannot write.
  local apt=(apt-get -qq -o APT::Sandbox::User=root download)
  if ! (cd "$TMP" && "${apt[@]}" "$META_PKG" 2>/dev/null); then
    # A fresh machine may have no package lists yet.
    apt-get update -qq
    (cd "$TMP" && "${apt[@]}" "$META_PKG") || die "apt-get download $META_PKG failed"
  fi
  local dep pkg_version
  dep=$(dpkg-deb -f "$TMP"/"$META_PKG"_*.deb Depends | tr ',' '\n' | grep -oE 'linux-image-[^ ]+' | head -n 1)
  pkg_version=$(dpkg-deb -f "$TMP"/"$META_PKG"_*.deb Version)
  [ -n "$dep" ] || die "$META_PKG has no linux-image dependency"
  log "downloading $dep"
  (cd "$TMP" && "${apt[@]}" "$dep") || die "apt-get download $dep failed"
  dpkg-deb -x "$TMP"/"$dep"_*.deb "$TMP/pkg"

  local kver="${dep#linux-image-}"
  [ -f "$TMP/pkg/boot/vmlinuz-$kver" ] || die "no /boot/vmlinuz-$kver in $dep"
  rm -rf "$stage" && mkdir -p "$stage/modules"

  local kernel=vmlinux pvh=true
  if extract_vmlinux "$TMP/pkg/boot/vmlinuz-$kver" "$stage/vmlinux" && has_pvh_note "$stage/vmlinux"; then
    :
  else
    log "WARNING: no vmlinux with a PVH note could be extracted; falling back to vmlinuz (slower boot)"
    rm -f "$stage/vmlinux"
    cp "$TMP/pkg/boot/vmlinuz-$kver" "$stage/vmlinuz"
    kernel=vmlinuz pvh=false
  fi
  local hz
  hz=$(sed -n 's/^CONFIG_HZ=//p' "$TMP/pkg/boot/config-$kver")

  local moddir="$TMP/pkg/lib/modules/$kver/kernel" name src loaded=" " order=()
  for name in "${REQUIRED_MODULES[@]}" "${OPTIONAL_MODULES[@]}"; do
    src=$(find "$moddir" -name "$name.ko" -o -name "$name.ko.xz" -o -name "$name.ko.zst" -o -name "$name.ko.gz" | head -n 1)
    if [ -z "$src" ]; then
      # Built in (=y) needs no file; a required module that is neither is a kernel we cannot use.
      if grep -qw "$name" "$TMP/pkg/lib/modules/$kver/modules.builtin" 2>/dev/null; then
        loaded+="$name "
        continue
      fi
      [[ " ${OPTIONAL_MODULES[*]} " == *" $name "* ]] && { log "note: optional module $name absent"; continue; }
      die "module $name is neither in $dep nor built in"
    fi
    case "$src" in
      *.xz) xz -dc "$src" >"$stage/modules/$name.ko" ;;
      *.zst) zstd -dcq "$src" >"$stage/modules/$name.ko" ;;
      *.gz) gzip -dc "$src" >"$stage/modules/$name.ko" ;;
      *) cp "$src" "$stage/modules/$name.ko" ;;
    esac
    local d
    for d in $(module_depends "$stage/modules/$name.ko"); do
      [[ "$loaded" == *" $d "* ]] || die "module $name depends on $d, which is not loaded before it"
    done
    loaded+="$name "
    order+=("$name.ko")
  done
  printf '%s\n' "${order[@]}" >"$stage/modules.order"
  echo "$kver" >"$stage/kernel-version"

  local sha
  sha=$(sha256sum "$stage/$kernel" | cut -d' ' -f1)
  cat >"$stage/manifest.json" <<EOF
{
  "kernelVersion": "$kver",
  "package": "$dep",
  "packageVersion": "$pkg_version",
  "kernel": "$kernel",
  "pvh": $pvh,
  "hz": ${hz:-null},
  "sha256": "$sha",
  "modules": [$(printf '"%s",' "${order[@]}" | sed 's/,$//')]
}
EOF

  # Move into place; manifest.json last, so its presence means the kernel part is complete.
  rm -f "$DIR/manifest.json" "$DIR/vmlinux" "$DIR/vmlinuz"
  rm -rf "$DIR/modules"
  mv "$stage/$kernel" "$stage/modules" "$stage/modules.order" "$stage/kernel-version" "$DIR/"
  mv "$stage/manifest.json" "$DIR/manifest.json"
  rm -rf "$stage"
  log "kernel $kver ($kernel, pvh=$pvh, HZ=${hz:-?}), modules: ${order[*]}"
}

# newc cpio written from a staging tree. /dev/console must exist in it: the kernel opens it for
# init's stdin/stdout/stderr before devtmpfs is mounted (Debian does not auto-mount devtmpfs).
build_initramfs() {
  local root="$TMP/initramfs"
  rm -rf "$root"
  mkdir -p "$root"/{dev,proc,sys,newroot,lower,upper,tmp,lib/modules}
  chmod 1777 "$root/tmp"
  mknod -m 600 "$root/dev/console" c 5 1
  install -m 755 "$AGENT" "$root/init"
  if [ -f "$INIT" ]; then install -m 755 "$INIT" "$root/prism-init"; else log "WARNING: no $INIT (make -C guest/init): file operations will fail in microVMs"; fi
  cp "$DIR"/modules/*.ko "$root/lib/modules/"
  cp "$DIR/modules.order" "$root/modules.order"
  (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet --reproducible --owner=0:0) \
    >"$DIR/initramfs.cpio.tmp"
  mv "$DIR/initramfs.cpio.tmp" "$DIR/initramfs.cpio"
  log "initramfs.cpio: $(stat -c %s "$DIR/initramfs.cpio") bytes, agent $AGENT"
}

if [ "$FORCE" = 1 ] || [ ! -f "$DIR/manifest.json" ]; then
  prepare_kernel
else
  log "kernel $(cat "$DIR/kernel-version") already prepared in $DIR (--force to redo)"
fi

if [ -f "$AGENT" ]; then
  if [ "$FORCE" = 1 ] || [ ! -f "$DIR/initramfs.cpio" ] || [ "$AGENT" -nt "$DIR/initramfs.cpio" ] \
    || { [ -f "$INIT" ] && [ "$INIT" -nt "$DIR/initramfs.cpio" ]; } \
    || [ "$DIR/manifest.json" -nt "$DIR/initramfs.cpio" ]; then
    build_initramfs
  else
    log "initramfs.cpio up to date"
  fi
else
  log "no agent at $AGENT yet: initramfs not built (build guest/agent, then re-run)"
fi
