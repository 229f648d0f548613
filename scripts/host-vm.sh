#!/usr/bin/env bash
# Runs a command on a stock Debian 12 server in a QEMU VM: systemd as PID 1, cgroup v2 only, the
# packages of scripts/setup.sh and the host's Node 20, this checkout (with node_modules and dist/) at
# /prism. The hosts Prism's users have, which this machine (cgroup v1, no systemd) is not.
#
#   scripts/host-vm.sh run [--mem MB] [--cpus N] [--timeout SEC] [--env NAME=VALUE]... -- CMD...
#   scripts/host-vm.sh build     build or refresh the cached image only
#   scripts/host-vm.sh shell     boot the image with the console on this terminal (log in as root,
#                                no password; /prism is mounted; `poweroff` or Ctrl-A X to leave)
#
# run streams CMD's stdout and stderr here as it runs and exits with CMD's status; 124 when
# --timeout (default 1800 s, boot included) ran out, 125 when the VM failed (boot, mounts), with the
# tail of its console. docs/testing.md has the design and timings.
#
# Environment: PRISM_HOSTVM_ACCEL=kvm|tcg (default: KVM only where it works), PRISM_HOSTVM_CGROUP=v2|v1
# (default v2; v1 is only a measuring baseline), PRISM_HOSTVM_CACHE
# (default /var/lib/prism-test/host-vm), PRISM_TEST_IMAGES_DIR (default /var/lib/prism-test/images
# when it exists: carried in at the same path, so in-VM tests need no debootstrap).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
LIB="$HERE/host-vm"
CACHE=${PRISM_HOSTVM_CACHE:-/var/lib/prism-test/host-vm}
# shellcheck source=scripts/host-vm/inputs.sh
source "$LIB/inputs.sh"

log() { echo "host-vm: $*" >&2; }
die() { log "$*"; exit 125; }
usage() { sed -n '5,10s/^# \{0,1\}//p' "$0" >&2; exit 2; }

MODE=${1:-}
[ $# -gt 0 ] && shift
MEM=4096 CPUS=$(nproc) TIMEOUT=1800 EXTRA_ENV=() CMD=()
while [ $# -gt 0 ]; do
  case "$1" in
    --mem) MEM=$2; shift 2 ;;
    --cpus) CPUS=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --env) [[ "$2" == [A-Za-z_]*=* ]] || die "--env wants NAME=VALUE, got $2"; EXTRA_ENV+=("$2"); shift 2 ;;
    --) shift; CMD=("$@"); break ;;
    *) usage ;;
  esac
done
for n in "$MEM" "$CPUS" "$TIMEOUT"; do [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "not a positive number: $n"; done
case "$MODE" in
  run) [ ${#CMD[@]} -gt 0 ] || usage ;;
  build | shell) [ ${#CMD[@]} -eq 0 ] || usage ;;
  *) usage ;;
esac
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot and the image cache need it)"

# The host's tools; setup.sh installs them too, this covers a machine where it has not run yet.
ensure_host_tools() {
  local need=() tool pkg
  for tool in debootstrap:debootstrap qemu-system-x86_64:qemu-system-x86 mkfs.ext4:e2fsprogs flock:util-linux; do
    pkg=${tool#*:}
    command -v "${tool%%:*}" >/dev/null || need+=("$pkg")
  done
  [ ${#need[@]} -eq 0 ] && return
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Another apt (a setup run) may hold the lock: wait for it rather than fail.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# The cached image for the current inputs, built when missing. Built in a temp dir and renamed, so a
# cache dir that exists is complete; a lock keeps concurrent runs from building it twice.
ensure_image() {
  local key dir stage started
  key=$(image_key "$LIB" "$REPO")
  dir="$CACHE/$key"
  IMAGE=$dir
  [ -f "$dir/root.img" ] && return
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock 9
  if [ ! -f "$dir/root.img" ]; then
    stage="$CACHE/.build-$key-$$"
    rm -rf "$CACHE"/.build-* # left by a build that was killed; the lock says none is running
    started=$SECONDS
    log "building image $key (once per change of its inputs; minutes)"
    bash "$LIB/build-image.sh" "$stage" "$CACHE/debs" >&2 || { rm -rf "$stage"; die "image build failed"; }
    chmod 444 "$stage/root.img"
    mv "$stage" "$dir"
    log "image $key built in $((SECONDS - started)) s"
    # Older images are dead weight (a few GiB each); a run that already started keeps its open files.
    find "$CACHE" -mindepth 1 -maxdepth 1 -type d -not -name debs -not -name "$key" -exec rm -rf {} +
  fi
  exec 9>&-
}

# KVM only where it boots stock kernels: kvm_pvm (a paravirtual KVM) accepts -accel kvm and then the
# guest dies early in boot, so it counts as no KVM.
choose_accel() {
  case "${PRISM_HOSTVM_ACCEL:-}" in
    kvm | tcg) echo "$PRISM_HOSTVM_ACCEL"; return ;;
    '') ;;
    *) die "PRISM_HOSTVM_ACCEL must be kvm or tcg" ;;
  esac
  if [ -r /dev/kvm ] && [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]; then echo kvm; else echo tcg; fi
}

# An ext4 image of directory $2 with label $1, made on the host (native speed; under TCG the guest
# copying files itself would take far longer). Sparse with room to grow: the guest may write to it.
data_disk() {
  local label=$1 src=$2 img=$3 kib
  kib=$(du -sk "$src" | cut -f1)
  mkfs.ext4 -q -L "$label" -d "$src" "$img" "$((kib * 2 / 1024 + 8192))M" >/dev/null || die "mkfs.ext4 -d $src failed"
}

# The checkout as the guest's /prism. Top-level links (a worktree's node_modules) are followed; .git
# goes along when it is a directory, not when it is a worktree's pointer to a path on this host.
stage_checkout() {
  local dest=$1 entry name
  mkdir -p "$dest"
  shopt -s dotglob nullglob
  for entry in "$REPO"/*; do
    name=$(basename "$entry")
    if [ "$name" = .git ] && [ -f "$entry" ]; then continue; fi
    if [ -L "$entry" ]; then cp -a "$(readlink -f "$entry")" "$dest/$name"; else cp -a "$entry" "$dest/"; fi
  done
  shopt -u dotglob nullglob
}

run_vm() {
  local accel=$ACCEL append qemu=() i
  T_START=$(now_ms)
  RUN=$(mktemp -d "${TMPDIR:-/var/tmp}/prism-hostvm.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM HUP

  local disks=() mounts=""
  [ -d "$REPO/dist" ] || log "note: no dist/ in $REPO (npm run build), so none in the VM"
  stage_checkout "$RUN/checkout"
  data_disk prism-checkout "$RUN/checkout" "$RUN/checkout.img"
  rm -rf "$RUN/checkout"
  disks+=("$RUN/checkout.img") mounts+=$'prism-checkout\t/prism\n'
  local images=${PRISM_TEST_IMAGES_DIR:-/var/lib/prism-test/images}
  if [ -d "$images" ]; then
    images=$(cd "$images" && pwd)
    data_disk prism-images "$images" "$RUN/images.img"
    disks+=("$RUN/images.img") mounts+="prism-images"$'\t'"$images"$'\n'
    EXTRA_ENV=("PRISM_TEST_IMAGES_DIR=$images" "${EXTRA_ENV[@]}")
  fi
  printf '%s' "$mounts" >"$RUN/mounts"

  # PRISM_HOSTVM_CGROUP=v1 boots the same server with the legacy hierarchy instead (systemd 252 still
  # offers it): the like-for-like baseline when measuring what cgroup v2 costs (docs/testing.md).
  local unified=1
  [ "${PRISM_HOSTVM_CGROUP:-v2}" = v1 ] && unified=0
  append="console=ttyS0 root=LABEL=prism-root rw systemd.unified_cgroup_hierarchy=$unified panic=-1 prism.hostvm=$MODE"
  qemu=(qemu-system-x86_64 -M q35 -m "$MEM" -smp "$CPUS" -nodefaults -no-user-config -display none -no-reboot
    -nic none -kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initrd.img" -append "$append"
    # snapshot=on: the guest's writes go to a temp file QEMU makes in TMPDIR (our run dir), never
    # into the cached image.
    -drive "file=$IMAGE/root.img,format=raw,if=virtio,snapshot=on"
    -device virtio-rng-pci
    -fw_cfg "name=opt/prism/mounts,file=$RUN/mounts")
  for i in "${disks[@]}"; do qemu+=(-drive "file=$i,format=raw,if=virtio"); done
  if [ "$accel" = kvm ]; then qemu+=(-accel kvm -cpu host); else qemu+=(-accel tcg -cpu max); fi

  if [ "$MODE" = shell ]; then
    TMPDIR=$RUN "${qemu[@]}" -serial mon:stdio
    return
  fi
  printf '%s\0' "${CMD[@]}" >"$RUN/argv"
  qemu+=(-fw_cfg "name=opt/prism/argv,file=$RUN/argv")
  if [ ${#EXTRA_ENV[@]} -gt 0 ]; then
    printf '%s\0' "${EXTRA_ENV[@]}" >"$RUN/env"
    qemu+=(-fw_cfg "name=opt/prism/env,file=$RUN/env")
  fi
  qemu+=(-chardev "file,id=console,path=$RUN/console.log" -serial chardev:console -device virtio-serial-pci)
  for i in status stdout stderr; do
    : >"$RUN/$i"
    qemu+=(-chardev "file,id=$i,path=$RUN/$i,append=on" -device "virtserialport,chardev=$i,name=prism.$i")
  done
  T_QEMU=$(now_ms)
  TMPDIR=$RUN "${qemu[@]}" </dev/null >"$RUN/qemu.log" 2>&1 &
  QEMU_PID=$!
  # The ports write to files; tail follows them as they grow and stops once QEMU is gone.
  tail -q -c +1 --pid="$QEMU_PID" -F "$RUN/stdout" &
  TAILS=($!)
  tail -q -c +1 --pid="$QEMU_PID" -F "$RUN/stderr" >&2 &
  TAILS+=($!)
  watch_vm
}

# Waits for QEMU to exit; kills it when the timeout runs out. Then reports and exits like CMD did.
watch_vm() {
  local why="" status t_cmd="" t_done="" t_off
  while kill -0 "$QEMU_PID" 2>/dev/null; do
    [ -z "$t_cmd" ] && grep -qx started "$RUN/status" && t_cmd=$(now_ms)
    [ -z "$t_done" ] && grep -qE '^(exit|error:) ' "$RUN/status" && t_done=$(now_ms)
    if [ $(($(now_ms) - T_START)) -ge $((TIMEOUT * 1000)) ]; then why=timeout; kill -KILL "$QEMU_PID"; break; fi
    sleep 0.2
  done
  wait "$QEMU_PID" 2>/dev/null || true
  QEMU_PID=""
  t_off=$(now_ms)
  wait "${TAILS[@]}" 2>/dev/null || true
  TAILS=()
  status=$(tail -n 1 "$RUN/status")
  if [ "$why" = timeout ]; then
    grep -qx started "$RUN/status" || { console_tail; log "timed out after $TIMEOUT s before the command started (VM boot)"; exit 124; }
    log "timed out after $TIMEOUT s: the command was still running; VM killed"
    exit 124
  fi
  case "$status" in
    "exit "*)
      log "$ACCEL: disks $(secs $((T_QEMU - T_START))) s, boot to command $(secs $((t_cmd - T_QEMU))) s," \
        "command $(secs $((t_done - t_cmd))) s, power-off $(secs $((t_off - t_done))) s"
      exit "${status#exit }" ;;
    "error: "*) console_tail; die "in the VM: ${status#error: }" ;;
    *) console_tail; cat "$RUN/qemu.log" >&2; die "the VM stopped without running the command (console tail above)" ;;
  esac
}

now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
secs() { printf '%d.%d' $(($1 / 1000)) $(($1 % 1000 / 100)); }

console_tail() {
  echo "---- VM console (last 40 lines) ----" >&2
  tail -n 40 "$RUN/console.log" 2>/dev/null | tr -d '\r' >&2 || true
  echo "------------------------------------" >&2
}

cleanup() {
  # Runs on every exit, also amid a failure: nothing in here may stop it half way.
  set +e
  if [ -n "$QEMU_PID" ]; then kill -KILL "$QEMU_PID" 2>/dev/null; wait "$QEMU_PID" 2>/dev/null; fi
  local t
  for t in "${TAILS[@]}"; do kill "$t" 2>/dev/null; done
  [ -n "$RUN" ] && rm -rf "$RUN"
}

QEMU_PID="" TAILS=() RUN="" IMAGE="" T_START=0 T_QEMU=0
ensure_host_tools
ensure_image
[ "$MODE" = build ] && { log "image ready: $IMAGE"; exit 0; }
ACCEL=$(choose_accel)
run_vm "$ACCEL"
