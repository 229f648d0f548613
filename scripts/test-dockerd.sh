#!/usr/bin/env bash
# A private dockerd for the docker driver's tests: start|stop|status (idempotent).
#
# It never touches host networking (no iptables rules, no masquerading, no bridge: sandboxes run with
# NetworkMode none) and keeps everything under $PRISM_TEST_DOCKER_DIR (default /var/lib/prism-test/docker):
# data root, exec root, pidfile, log and the socket $PRISM_TEST_DOCKER_DIR/docker.sock. Tests find it
# through DOCKER_HOST=unix://$PRISM_TEST_DOCKER_DIR/docker.sock. `stop` only ends the dockerd whose
# pid this script wrote.
#
# The data root is a sparse filesystem image, loop-mounted, on which the engine can limit a
# container's size (HostConfig.StorageOpt.size), so the tests exercise the docker runtime's diskMb:
#  - XFS mounted with pquota ($STATE/xfs.img on $STATE/xfs), storage driver overlay2: the limit is a
#    project quota on the writable layer. Needs a kernel with CONFIG_XFS_QUOTA.
#  - else btrfs ($STATE/btrfs.img on $STATE/btrfs), storage driver btrfs: the limit is a qgroup on the
#    container's subvolume (image included; the driver adds the image's size). For kernels without
#    XFS quota (e.g. the Firecracker guest kernel these tests run on).
#  - else (no loop devices, neither filesystem) the plain directory $STATE/data, with no limit: the
#    disk-limit tests then skip with the driver's reason.
# The images are sparse: they use only the blocks the engine writes. A data root left in $STATE/data by
# an older version of this script is not touched while a filesystem image works.
set -euo pipefail

STATE=${PRISM_TEST_DOCKER_DIR:-/var/lib/prism-test/docker}
SOCK=$STATE/docker.sock
PIDFILE=$STATE/dockerd.pid
# An upper bound on the engine's images and containers, not space taken up front.
FS_SIZE=${PRISM_TEST_DOCKER_FS_SIZE:-40G}

running() {
  [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

install_missing() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null && return 0
  if [ "$(id -u)" -ne 0 ]; then echo "test-dockerd: $cmd is missing (apt-get install $pkg as root)" >&2; return 1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
}

fs_mounted() {
  [ "$(findmnt -n -o FSTYPE --mountpoint "$STATE/$1" 2>/dev/null)" = "$1" ]
}

detach_loop() {
  local dev
  for dev in $(losetup -n -O NAME -j "$1" 2>/dev/null); do losetup -d "$dev" 2>/dev/null || true; done
}

# mount_fs FS MKFS PKG MOUNT_OPTS: mounts $STATE/FS.img (made when missing) on $STATE/FS; fails quietly
# when this host cannot (no loop device, no such filesystem or option in the kernel).
mount_fs() {
  local fs=$1 mkfs=$2 pkg=$3 opts=$4 img=$STATE/$1.img dir=$STATE/$1 made=false
  fs_mounted "$fs" && return 0
  install_missing "$mkfs" "$pkg" >/dev/null 2>&1 || return 1
  if [ ! -f "$img" ]; then
    truncate -s "$FS_SIZE" "$img.new" 2>/dev/null || return 1
    # -K: no discard pass over the sparse file. XFS's default ftype=1 is the d_type overlay2 needs.
    if ! "$mkfs" -q -K -f "$img.new" >/dev/null 2>&1; then rm -f "$img.new"; return 1; fi
    mv "$img.new" "$img"
    made=true
  fi
  # `loop` attaches the device with autoclear: it goes with the unmount (stop detaches leftovers). A
  # device still attached (containers of a killed dockerd keep the filesystem busy) is mounted again:
  # a second device on the same image would be a second, conflicting writer of one filesystem.
  local dev src=$img mopts=loop,noatime$opts
  dev=$(losetup -n -O NAME -j "$img" 2>/dev/null | head -n1)
  if [ -n "$dev" ]; then src=$dev; mopts=noatime$opts; fi
  mkdir -p "$dir"
  if ! mount -t "$fs" -o "$mopts" "$src" "$dir" 2>/dev/null; then
    detach_loop "$img"
    rmdir "$dir" 2>/dev/null || true
    if $made; then rm -f "$img"; fi
    return 1
  fi
}

# Quotas on, and kept exact. Since Linux 6.x btrfs marks its qgroups inconsistent, instead of
# accounting, when it drops a subvolume whose tree is taller than drop_subtree_threshold (default 3:
# any container of the Debian image), and inconsistent qgroups enforce no limit at all. 8 (the
# maximum level) always accounts; the setting lasts one mount. A rescan repairs what a run left.
btrfs_quota() {
  local dir=$STATE/btrfs uuid q
  btrfs quota enable "$dir"
  uuid=$(btrfs filesystem show "$dir" | sed -n 's/.*uuid: \([0-9a-f-]*\).*/\1/p')
  q=/sys/fs/btrfs/$uuid/qgroups
  if [ -w "$q/drop_subtree_threshold" ]; then echo 8 >"$q/drop_subtree_threshold"; fi
  if [ "$(cat "$q/inconsistent" 2>/dev/null)" = 1 ]; then btrfs quota rescan -w "$dir" >/dev/null; fi
}

# Prints the data root and the storage driver for it (none: the engine's default).
data_root() {
  if mount_fs xfs mkfs.xfs xfsprogs ,pquota; then echo "$STATE/xfs overlay2"; return; fi
  if mount_fs btrfs mkfs.btrfs btrfs-progs ''; then
    btrfs_quota || echo "test-dockerd: btrfs quotas could not be set up on $STATE/btrfs: container size limits may not hold" >&2
    echo "$STATE/btrfs btrfs"
    return
  fi
  echo "test-dockerd: cannot loop-mount XFS (pquota) or btrfs under $STATE; data root $STATE/data has no container size limit" >&2
  mkdir -p "$STATE/data"
  echo "$STATE/data none"
}

describe() {
  if fs_mounted xfs; then echo "data root $STATE/xfs (xfs pquota, overlay2: diskMb enforced)"
  elif fs_mounted btrfs; then echo "data root $STATE/btrfs (btrfs, storage driver btrfs: diskMb enforced)"
  else echo "data root $STATE/data (no container size limit)"; fi
}

start() {
  if running; then echo "dockerd running (pid $(cat "$PIDFILE")), DOCKER_HOST=unix://$SOCK, $(describe)"; return 0; fi
  install_missing dockerd docker.io
  mkdir -p "$STATE/exec"
  local root driver
  read -r root driver < <(data_root)
  local storage=()
  [ "$driver" = none ] || storage=(--storage-driver "$driver")
  if [ "$driver" != none ] && [ -d "$STATE/data" ]; then
    echo "test-dockerd: $STATE/data (the unlimited data root of an older version of this script) is unused now; rm -rf it to reclaim its space" >&2
  fi
  rm -f "$PIDFILE"
  # setsid: dockerd outlives this script (and the shell that ran it) like the test registries do.
  setsid dockerd --host "unix://$SOCK" --data-root "$root" "${storage[@]}" --exec-root "$STATE/exec" --pidfile "$PIDFILE" \
    --iptables=false --ip6tables=false --ip-masq=false --bridge=none \
    </dev/null >>"$STATE/dockerd.log" 2>&1 &
  for _ in $(seq 1 150); do
    if [ -S "$SOCK" ] && curl -sf --unix-socket "$SOCK" http://localhost/_ping >/dev/null 2>&1; then
      echo "dockerd started (pid $(cat "$PIDFILE")), DOCKER_HOST=unix://$SOCK, $(describe)"
      return 0
    fi
    sleep 0.2
  done
  echo "test-dockerd: dockerd did not answer on $SOCK within 30 s; last log lines:" >&2
  tail -n 20 "$STATE/dockerd.log" >&2
  exit 1
}

stop() {
  if running; then
    local pid stopped=false
    pid=$(cat "$PIDFILE")
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || { stopped=true; break; }; sleep 0.2; done
    if ! $stopped; then echo "test-dockerd: dockerd (pid $pid) did not stop within 20 s" >&2; exit 1; fi
    echo "dockerd stopped"
  else
    echo "dockerd not running"
  fi
  # Also after a crash: -R takes the overlay and bind mounts a killed dockerd left under its root.
  local fs
  for fs in xfs btrfs; do
    if fs_mounted "$fs"; then
      # Gives the host back the image file's blocks the engine freed (a disk fill test writes GiBs).
      fstrim "$STATE/$fs" 2>/dev/null || true
      umount -R "$STATE/$fs"
      echo "unmounted $STATE/$fs"
    fi
    detach_loop "$STATE/$fs.img"
    if [ -n "$(losetup -n -O NAME -j "$STATE/$fs.img" 2>/dev/null)" ]; then
      # losetup -d on a busy device only marks it to go when released.
      echo "test-dockerd: $STATE/$fs.img stays attached while containers of a killed dockerd run; start and stop again to end them" >&2
    fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "running (pid $(cat "$PIDFILE")), DOCKER_HOST=unix://$SOCK, $(describe)"; else echo "not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
