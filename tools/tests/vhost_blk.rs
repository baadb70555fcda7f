//! Real Linux against `rvmm-vhost blk`: a Debian kernel under QEMU TCG (vhost-user-blk-pci)
//! makes an ext2 file system, writes raw patterns and files, discards a range,
//! powers off; the host then checks the qcow2 image with `qemu-img check`, `e2fsck` and
//! `debugfs` (oracles) and compares the bytes.
//!
//! Needs scripts/assets.sh (downloads the kernel once into the asset cache) and QEMU.

mod vhost_blk_common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use vhost_blk_common::{assets, qemu_vhost_blk, run_ok, wait_socket, Proc, Scratch};

const MIB: usize = 1 << 20;

fn repeat_to(s: &str, len: usize) -> Vec<u8> {
    s.as_bytes().iter().copied().cycle().take(len).collect()
}

const GUEST_SCRIPT: &str = r#"
echo "SERIAL=$(cat /sys/block/vda/serial)"
echo "SECTORS=$(cat /sys/block/vda/size)"
echo "RO=$(cat /sys/block/vda/ro)"
yes RVMM | head -c 1048576 > /tmp/pat
dd if=/tmp/pat of=/dev/vda bs=65536 seek=512 conv=fsync 2>/dev/null || echo "DD-WRITE-FAILED"
echo 3 > /proc/sys/vm/drop_caches
a=$(dd if=/dev/vda bs=65536 skip=512 count=16 2>/dev/null | md5sum)
b=$(md5sum < /tmp/pat)
[ "${a%% *}" = "${b%% *}" ] && echo "RAW-READBACK-OK"
# Pattern at 48 MiB, then discard it (the qcow2 clusters are freed and read as zeroes).
dd if=/tmp/pat of=/dev/vda bs=65536 seek=768 conv=fsync 2>/dev/null
blkdiscard -o 50331648 -l 1048576 /dev/vda && echo "DISCARD-OK"
mke2fs -q -b 1024 /dev/vda 16384 || echo "MKFS-FAILED"
mount -t ext2 /dev/vda /mnt || echo "MOUNT-FAILED"
yes rvmm-file-content | head -c 300000 > /mnt/f
mkdir /mnt/dir && dd if=/tmp/pat of=/mnt/dir/g bs=4096 2>/dev/null
sync
umount /mnt
echo 3 > /proc/sys/vm/drop_caches
mount -t ext2 -o ro /dev/vda /mnt
echo "FILE-MD5=$(md5sum < /mnt/f)"
umount /mnt
echo "GUEST-DONE"
"#;

#[test]
fn debian_kernel_uses_rvmm_vhost_blk_on_qcow2() {
    let s = Scratch::new("vhost-blk");
    std::fs::write(s.path("test.sh"), GUEST_SCRIPT).unwrap();
    let kernel = assets(&s.path("test.sh"), &s.path("initrd.gz"));
    let disk = s.path("disk.qcow2");
    run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("64M"),
    );

    let sock = s.path("blk.sock");
    let mut vhost = Proc(
        Command::new(env!("CARGO_BIN_EXE_rvmm-vhost"))
            .args(["blk", "--socket"])
            .arg(&sock)
            .arg("--disk")
            .arg(format!(
                "{},format=qcow2,serial=rvmm-sn-42,discard=unmap",
                disk.display()
            ))
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rvmm-vhost"),
    );
    wait_socket(&sock, &mut vhost);
    // A second backend on the same image is refused (image locking).
    let second = Command::new(env!("CARGO_BIN_EXE_rvmm-vhost"))
        .args(["blk", "--socket"])
        .arg(s.path("other.sock"))
        .arg("--disk")
        .arg(format!("{},format=qcow2", disk.display()))
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use"));

    let serial = s.path("serial.log");
    let mut qemu = qemu_vhost_blk(&kernel, &s.path("initrd.gz"), &sock, &serial);
    let st = qemu.wait_timeout(Duration::from_secs(120));
    let log = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(
        st.is_some(),
        "guest did not power off in 120 s; console:\n{log}"
    );
    let vst = vhost.wait_timeout(Duration::from_secs(10));
    let mut verr = String::new();
    if let Some(e) = vhost.0.stderr.as_mut() {
        let _ = e.read_to_string(&mut verr);
    }
    assert!(
        vst.is_some_and(|s| s.success()),
        "rvmm-vhost did not exit cleanly after the disconnect: {vst:?}\n{verr}"
    );
    for want in [
        "SERIAL=rvmm-sn-42",
        "SECTORS=131072",
        "RO=0",
        "RAW-READBACK-OK",
        "DISCARD-OK",
        "GUEST-DONE",
        "RVMM-TEST-EXIT=0",
    ] {
        assert!(log.contains(want), "console lacks {want:?}:\n{log}");
    }
    for bad in ["FAILED", "I/O error", "EXT4-fs error"] {
        assert!(!log.contains(bad), "console shows {bad:?}:\n{log}");
    }

    // Host-side oracles.
    run_ok(Command::new("qemu-img").arg("check").arg(&disk));
    let raw = s.path("disk.raw");
    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&disk)
            .arg(&raw),
    );
    let bytes = std::fs::read(&raw).unwrap();
    assert_eq!(bytes.len(), 64 * MIB);
    let pat = repeat_to("RVMM\n", MIB);
    assert!(
        bytes[32 * MIB..33 * MIB] == pat[..],
        "raw pattern at 32 MiB differs"
    );
    assert!(
        bytes[48 * MIB..49 * MIB].iter().all(|&b| b == 0),
        "discarded range not zero"
    );
    run_ok(Command::new("e2fsck").args(["-f", "-n"]).arg(&raw));
    let out = s.path("f.out");
    run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("dump /f {}", out.display()))
            .arg(&raw),
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        repeat_to("rvmm-file-content\n", 300_000)
    );
}
