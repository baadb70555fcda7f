#!/usr/bin/env bash
# Install everything rvmm's build and tests need on a fresh Debian 12 machine. Idempotent.
# Usage: scripts/setup.sh            install packages (as root or via sudo)
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_pkgs=(gcc make binutils iproute2 bridge-utils tcpdump busybox-static xorriso isolinux
  syslinux-common grub-pc-bin grub-common mtools cpio python3 python3-pip)
# vnc: console fonts (VGA text-mode font source) and real VNC clients for the screen tests.
need_pkgs+=(console-setup-linux locales x11proto-dev xvfb tigervnc-viewer novnc chromium)
# blk: e2fsck/debugfs check guest-made file systems; assets.sh unpacks kernels and modules;
# iasl disassembles the PCI root bridge AML.
need_pkgs+=(e2fsprogs file xz-utils zstd dpkg acpica-tools)
# iso: udev's cdrom_id is the oracle for how udev sees the CD-ROM (vhost_scsi test).
need_pkgs+=(udev)
# tests: gcc/binutils build the test guests; script(1) gives rvmm a terminal in a test.
need_pkgs+=(bsdutils)
missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# QEMU is a test oracle only. Debian's qemu-system-x86 needs the qemu-utils of the same version;
# a newer preinstalled qemu-utils (backports) has to be replaced by that one.
sys_ver=""
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  missing+=(qemu-system-x86)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -q
  if [[ " ${missing[*]} " == *" qemu-system-x86 "* ]]; then
    sys_ver=$(apt-cache policy qemu-system-x86 | awk '/Candidate/{print $2}')
    missing=("${missing[@]/qemu-system-x86/}")
    missing+=("qemu-system-x86=$sys_ver" "qemu-system-common=$sys_ver" "qemu-utils=$sys_ver"
      "qemu-block-extra=$sys_ver" qemu-system-data)
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --allow-downgrades ${missing[@]}
fi
# vnc: vncdotool drives the real-client screen tests.
python3 -m pip show vncdotool >/dev/null 2>&1 || python3 -m pip install -q vncdotool \
  || python3 -m pip install -q --break-system-packages vncdotool
command -v qemu-img >/dev/null || { echo "setup: qemu-img missing after install" >&2; exit 1; }
echo "setup: ok ($(qemu-system-x86_64 --version | head -1))" >&2
