#!/usr/bin/env bash
# Test assets for the real-Linux tests: a Debian kernel and a busybox initramfs. Idempotent.
#
# Everything lives in a cache directory outside git: $RVMM_ASSETS, default ~/.cache/rvmm-assets.
#
# Usage:
#   scripts/assets.sh
#       Ensure the kernel and the base initramfs exist; print their paths as shell assignments:
#         KERNEL=/…/vmlinuz  INITRD=/…/initramfs.cpio.gz  KVER=6.1.0-…-amd64
#   scripts/assets.sh initrd OUT SCRIPT [FILE…]
#       Write OUT: the base initramfs plus SCRIPT as /test.sh and each FILE under /files/.
#       (Linux accepts concatenated cpio archives; this takes milliseconds.)
#
# The kernel is the current linux-image-*-amd64 (the one linux-image-amd64 depends on),
# fetched with `apt-get download` and unpacked with dpkg-deb; nothing is installed on the host.
# Modules: the default set covers virtio-pci, virtio-blk, virtio-net, virtio-scsi (sd, sr),
# ext2/ext4 and iso9660; add more with RVMM_EXTRA_MODULES="name …" (module names as in
# `lsmod`). Dependencies are resolved from each module's .modinfo and loaded in order.
#
# The guest side (/init in the initramfs): mounts /proc, /sys, /dev, loads the modules, then
# runs /test.sh if present, else the script given base64-encoded on the kernel command line as
# rvmm.script=BASE64 (short scripts; the x86 command line holds 2048 bytes). It prints
#   RVMM-TEST-EXIT=<status of the script>
# on the console and powers off (ACPI S5), so the VMM exits. Use console=ttyS0 on the command
# line. The script runs with busybox sh; every busybox applet is on PATH (mke2fs, dd, md5sum,
# blkdiscard, ip, udhcpc, …). Extra files given to `initrd` are under /files.
set -euo pipefail

ASSETS=${RVMM_ASSETS:-$HOME/.cache/rvmm-assets}
BASE_MODULES="virtio_pci virtio_blk virtio_net virtio_scsi sd_mod sr_mod crc32c_generic ext4 isofs"
MODULES="$BASE_MODULES ${RVMM_EXTRA_MODULES:-}"

log() { echo "assets: $*" >&2; }
die() { echo "assets: error: $*" >&2; exit 1; }

# --- kernel -----------------------------------------------------------------------------------
kernel() {
  mkdir -p "$ASSETS"
  if [ -s "$ASSETS/linux/vmlinuz" ] && [ -s "$ASSETS/linux/version" ]; then
    return
  fi
  command -v apt-get >/dev/null || die "apt-get is needed to download the Debian kernel"
  local pkg
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$pkg" ] || die "cannot find the package linux-image-amd64 depends on (run apt-get update)"
  local tmp
  tmp=$(mktemp -d "$ASSETS/.dl.XXXXXX")
  log "downloading $pkg"
  (cd "$tmp" && apt-get download -q "$pkg" >&2) || die "apt-get download $pkg failed"
  dpkg-deb -x "$tmp"/*.deb "$tmp/root"
  local kver
  kver=${pkg#linux-image-}
  [ -f "$tmp/root/boot/vmlinuz-$kver" ] || die "no vmlinuz-$kver in $pkg"
  rm -rf "$ASSETS/linux"
  mkdir -p "$ASSETS/linux"
  mv "$tmp/root/boot/vmlinuz-$kver" "$ASSETS/linux/vmlinuz"
  mv "$tmp/root/boot/config-$kver" "$ASSETS/linux/config"
  mv "$tmp/root/lib/modules/$kver" "$ASSETS/linux/modules"
  rm -rf "$tmp"
  echo "$kver" >"$ASSETS/linux/version"
}

# --- modules ----------------------------------------------------------------------------------
declare -A MODPATH=()
declare -A SEEN=()
ORDER=()

index_modules() {
  local f n
  while IFS= read -r f; do
    n=$(basename "$f")
    n=${n%%.ko*}
    MODPATH[${n//-/_}]=$f
  done < <(find "$ASSETS/linux/modules/kernel" -name '*.ko*')
}

modinfo_depends() {
  local f=$1
  case "$f" in
    *.xz) xz -dc "$f" ;;
    *.zst) zstd -dc "$f" ;;
    *) cat "$f" ;;
  esac | tr '\0' '\n' | sed -n 's/^depends=//p' | head -1 | tr ',' ' '
}

resolve() {
  local m=${1//-/_}
  [ -n "${SEEN[$m]:-}" ] && return
  SEEN[$m]=1
  local f=${MODPATH[$m]:-}
  if [ -z "$f" ]; then
    grep -q "/$m.ko" "$ASSETS/linux/modules/modules.builtin" 2>/dev/null ||
      log "module $m is neither built in nor shipped; skipped"
    return
  fi
  local d
  for d in $(modinfo_depends "$f"); do resolve "$d"; done
  ORDER+=("$m")
}

# --- initramfs --------------------------------------------------------------------------------
write_init() {
  cat >"$1" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs dev /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys
mkdir -p /tmp /mnt
for m in $(cat /etc/rvmm-modules); do
  insmod "/lib/modules/$m.ko" 2>/dev/null || echo "rvmm-init: insmod $m failed"
done
script=/test.sh
if [ ! -f "$script" ]; then
  b64=$(sed -n 's/.*rvmm\.script=\([^ ]*\).*/\1/p' /proc/cmdline)
  if [ -n "$b64" ]; then
    echo "$b64" | base64 -d >/tmp/cmdline.sh
    script=/tmp/cmdline.sh
  fi
fi
if [ -f "$script" ]; then
  sh "$script"
  rc=$?
else
  echo "rvmm-init: no /test.sh and no rvmm.script= on the command line"
  rc=127
fi
echo "RVMM-TEST-EXIT=$rc"
sync
poweroff -f
EOF
  chmod 755 "$1"
}

base_initrd() {
  local stamp="$ASSETS/initramfs.modules"
  local want
  want="$(cat "$ASSETS/linux/version") $MODULES"
  if [ -s "$ASSETS/initramfs.cpio.gz" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return
  fi
  log "building the initramfs ($MODULES)"
  index_modules
  local m
  for m in $MODULES; do resolve "$m"; done
  local root
  root=$(mktemp -d "$ASSETS/.initrd.XXXXXX")
  mkdir -p "$root"/{bin,dev,proc,sys,tmp,mnt,etc,lib/modules,files}
  local bb
  bb=$(command -v busybox) || die "busybox is missing (apt-get install busybox-static)"
  file -L "$bb" 2>/dev/null | grep -q 'statically linked' ||
    log "warning: $bb is not static; install busybox-static"
  cp "$bb" "$root/bin/busybox"
  for m in "${ORDER[@]}"; do
    case "${MODPATH[$m]}" in
      *.xz) xz -dc "${MODPATH[$m]}" >"$root/lib/modules/$m.ko" ;;
      *.zst) zstd -dc "${MODPATH[$m]}" >"$root/lib/modules/$m.ko" ;;
      *) cp "${MODPATH[$m]}" "$root/lib/modules/$m.ko" ;;
    esac
  done
  printf '%s\n' "${ORDER[@]}" >"$root/etc/rvmm-modules"
  write_init "$root/init"
  # The kernel opens /dev/console before /init runs; devtmpfs is mounted only later.
  mknod "$root/dev/console" c 5 1 2>/dev/null || true
  (cd "$root" && find . | cpio -o -H newc -R 0:0 --quiet | gzip -6) >"$ASSETS/.initramfs.tmp"
  mv "$ASSETS/.initramfs.tmp" "$ASSETS/initramfs.cpio.gz"
  echo "$want" >"$stamp"
  rm -rf "$root"
}

overlay_initrd() {
  local out=$1 script=$2
  shift 2
  [ -f "$script" ] || die "test script $script does not exist"
  local root
  root=$(mktemp -d)
  mkdir -p "$root/files"
  cp "$script" "$root/test.sh"
  local f
  for f in "$@"; do cp "$f" "$root/files/"; done
  {
    cat "$ASSETS/initramfs.cpio.gz"
    (cd "$root" && find . | cpio -o -H newc -R 0:0 --quiet | gzip -1)
  } >"$out.tmp"
  mv "$out.tmp" "$out"
  rm -rf "$root"
}

# flock: concurrent tests share one cache.
mkdir -p "$ASSETS"
exec 9>"$ASSETS/.lock"
flock 9
kernel
base_initrd
case "${1:-}" in
  "") ;;
  initrd)
    [ $# -ge 3 ] || die "usage: $0 initrd OUT SCRIPT [FILE…]"
    shift
    overlay_initrd "$@"
    ;;
  *) die "unknown command '$1' (use no argument, or: initrd OUT SCRIPT [FILE…])" ;;
esac
echo "KERNEL=$ASSETS/linux/vmlinuz"
echo "INITRD=$ASSETS/initramfs.cpio.gz"
echo "KVER=$(cat "$ASSETS/linux/version")"
