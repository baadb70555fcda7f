//! A stock Debian kernel booted by rvmm itself, for hosts with hardware virtualization.
//!
//! On this project's CI machine (nested, software-assisted KVM) a stock kernel cannot boot under
//! KVM — its kernel-mode code is interpreted and some instructions are refused — so these tests
//! are opt-in: `RVMM_REAL_LINUX=1 scripts/test.sh`, or
//! `cargo test -p rvmm-tests --test real_linux -- --ignored`. The kernel and a busybox
//! initramfs come from `scripts/assets.sh` (Debian packages, cached outside git); the real-driver
//! coverage that runs everywhere is the vhost-user tests in `tools/tests/`, where QEMU TCG boots
//! the same kernel against `rvmm-vhost`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rvmm_tests::{qemu_img, rvmm};

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Build an initramfs running `script` as /test.sh; returns the Debian kernel's path.
fn assets(script: &str, initrd: &Path) -> PathBuf {
    let script_path = initrd.with_extension("sh");
    std::fs::write(&script_path, script).expect("write the guest script");
    let out = Command::new(repo().join("scripts/assets.sh"))
        .arg("initrd")
        .arg(initrd)
        .arg(&script_path)
        .output()
        .expect("run scripts/assets.sh");
    assert!(
        out.status.success(),
        "scripts/assets.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let kernel = text
        .lines()
        .find_map(|l| l.strip_prefix("KERNEL="))
        .expect("assets.sh prints KERNEL=");
    PathBuf::from(kernel)
}

/// Debian's virtio_blk driver formats and fills a qcow2 disk through rvmm on 2 vCPUs; the host
/// checks the image and finds the guest's file in it.
#[test]
#[ignore = "needs a host with hardware virtualization: RVMM_REAL_LINUX=1 scripts/test.sh"]
fn debian_kernel_boots_smp_and_uses_a_qcow2_disk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = dir.path().join("disk.qcow2");
    let disk_s = disk.to_str().expect("utf-8 path");
    qemu_img(&["create", "-q", "-f", "qcow2", disk_s, "256M"]);
    let script = r#"
set -e
echo "cpus=$(grep -c ^processor /proc/cpuinfo)"
test "$(cat /sys/block/vda/size)" = 524288
mke2fs -q -F /dev/vda
mkdir -p /mnt && mount -t ext2 /dev/vda /mnt
dd if=/dev/urandom of=/mnt/blob bs=1M count=8 2>/dev/null
echo "blob=$(md5sum /mnt/blob | cut -d' ' -f1)"
umount /mnt
sync
"#;
    let initrd = dir.path().join("initrd.img");
    let kernel = assets(script, &initrd);
    let out = rvmm()
        .kernel(&kernel)
        .initrd(&initrd)
        .cmdline("console=ttyS0 panic=-1 reboot=k")
        .memory("512M")
        .cpus(2)
        .arg("--disk")
        .arg(format!("{disk_s},cache=writeback"))
        .timeout(Duration::from_secs(300))
        .run();
    assert!(
        out.serial.contains("RVMM-TEST-EXIT=0"),
        "guest script failed:\n{}",
        out.report()
    );
    assert_eq!(out.status, Some(0), "{}", out.report());
    assert!(out.serial.contains("cpus=2"), "{}", out.report());
    let md5 = out
        .serial
        .lines()
        .find_map(|l| l.strip_prefix("blob="))
        .expect("guest printed the blob's md5")
        .trim()
        .to_string();

    let check = qemu_img(&["check", disk_s]);
    assert!(check.contains("No errors"), "{check}");
    // Read the file back on the host from a raw copy of the disk.
    let raw = dir.path().join("disk.raw");
    qemu_img(&["convert", "-O", "raw", disk_s, raw.to_str().expect("utf-8")]);
    let dumped = dir.path().join("blob");
    let st = Command::new("debugfs")
        .arg("-R")
        .arg(format!("dump /blob {}", dumped.display()))
        .arg(&raw)
        .output()
        .expect("run debugfs (e2fsprogs)");
    assert!(st.status.success(), "{st:?}");
    let sum = Command::new("md5sum")
        .arg(&dumped)
        .output()
        .expect("md5sum");
    let host_md5 = String::from_utf8_lossy(&sum.stdout);
    assert!(host_md5.starts_with(&md5), "guest {md5}, host {host_md5}");
}
