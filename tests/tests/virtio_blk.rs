//! The virtio-blk test guest (a virtio-pci block driver written from the virtio 1.2 spec)
//! under QEMU TCG, against QEMU's own `virtio-blk-pci` (proves the guest driver follows the
//! spec) and against `vhost-user-blk-pci` served by `rvmm-vhost blk` (rvmm's virtio-blk request
//! code judged by that independent driver). The host recomputes the guest's pattern and checks
//! the image with `qemu-img compare` and `qemu-img check` (oracles). Finally the same guest
//! runs under rvmm itself (KVM) on `--disk`, judging rvmm's PCI, virtio-pci and virtio-blk.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rvmm_tests::{bin_dir, guest, qemu, qemu_img, Reap};

mod virtio_blk_common;
use virtio_blk_common::{run_on_rvmm, verify, SITES};

fn run_on(format: &str, vhost: bool) {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join(format!("disk.{format}"));
    let disk_s = disk.to_str().unwrap();
    qemu_img(&["create", "-q", "-f", format, disk_s, "64M"]);
    let vm = qemu()
        .kernel(guest("virtio-blk"))
        .cmdline(&format!("console=ttyS0 blk_writes={SITES}"));
    let mut backend = None;
    let vm = if vhost {
        let sock = dir.path().join("blk.sock");
        let bin = bin_dir().join("rvmm-vhost");
        assert!(
            bin.is_file(),
            "build rvmm-vhost first: cargo build -p tools --bin rvmm-vhost"
        );
        let child = Command::new(bin)
            .args(["blk", "--socket"])
            .arg(&sock)
            .arg("--disk")
            .arg(format!(
                "{disk_s},format={format},serial=guest-sn-7,discard=unmap"
            ))
            .stdout(Stdio::null())
            .spawn()
            .expect("start rvmm-vhost");
        backend = Some(Reap(child));
        let t = Instant::now();
        while !sock.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "rvmm-vhost made no socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        vm.args(["-object", "memory-backend-memfd,id=mem,size=512M,share=on"])
            .args(["-numa", "node,memdev=mem", "-chardev"])
            .arg(format!("socket,id=c,path={}", sock.display()))
            .args(["-device", "vhost-user-blk-pci,chardev=c,disable-legacy=on"])
    } else {
        vm.arg("-drive")
            .arg(format!(
                "file={disk_s},if=none,id=d0,format={format},discard=unmap"
            ))
            .arg("-device")
            .arg("virtio-blk-pci,drive=d0,serial=guest-sn-7,disable-legacy=on")
    };
    let out = vm.run();
    if let Some(mut b) = backend.take() {
        // The backend exits by itself once QEMU disconnects (and releases the image lock).
        let t = Instant::now();
        let st = loop {
            if let Some(st) = b.0.try_wait().unwrap() {
                break Some(st);
            }
            if t.elapsed() > Duration::from_secs(10) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(st.is_some_and(|s| s.success()), "rvmm-vhost: {st:?}");
    }
    verify(&out, dir.path(), &disk, format);
}

#[test]
fn virtio_blk_guest_under_qemu_raw() {
    run_on("raw", false);
}

#[test]
fn virtio_blk_guest_under_qemu_qcow2() {
    run_on("qcow2", false);
}

#[test]
fn virtio_blk_guest_under_qemu_on_rvmm_vhost_raw() {
    run_on("raw", true);
}

#[test]
fn virtio_blk_guest_under_qemu_on_rvmm_vhost_qcow2() {
    run_on("qcow2", true);
}

#[test]
fn virtio_blk_guest_under_rvmm_raw() {
    run_on_rvmm("raw", ",format=raw");
}

#[test]
fn virtio_blk_guest_under_rvmm_qcow2() {
    run_on_rvmm("qcow2", ",format=qcow2");
}
