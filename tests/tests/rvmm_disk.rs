//! `rvmm --disk`: the virtio-blk test guest (a virtio-pci block driver written from the virtio
//! 1.2 spec, proven against QEMU's device in `virtio_blk.rs`) drives rvmm's virtio-blk on raw
//! and qcow2 images; the host recomputes the guest's pattern and judges the image with
//! `qemu-img compare` and `qemu-img check`. Also: image locking between two rvmm processes,
//! bad options, and the boot order refusing to "boot" a disk without firmware.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rvmm_tests::{guest, qemu_img, rvmm, rvmm_bin, Reap};

mod virtio_blk_common;
use virtio_blk_common::run_on_rvmm;

#[test]
fn virtio_blk_guest_on_rvmm_raw() {
    run_on_rvmm("raw", ",format=raw");
}

#[test]
fn virtio_blk_guest_on_rvmm_qcow2() {
    // Format detected from the qcow2 magic.
    run_on_rvmm("qcow2", "");
}

#[test]
fn virtio_blk_guest_on_rvmm_qcow2_cache_none_two_vcpus() {
    // Two vCPUs give two request queues (MQ); the guest uses queue 0.
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("d.qcow2");
    let disk_s = disk.to_str().unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", disk_s, "64M"]);
    let out = rvmm()
        .kernel(guest("virtio-blk"))
        .cpus(2)
        .cmdline("console=ttyS0 blk_writes=4")
        .arg("--disk")
        .arg(format!("{disk_s},format=qcow2,cache=none"))
        .run();
    out.assert_pass();
    assert_eq!(
        out.field_u64("virtio-blk: ", "num_queues"),
        Some(2),
        "{}",
        out.report()
    );
    qemu_img(&["check", "-q", disk_s]);
}

#[test]
fn a_second_rvmm_on_the_same_writable_image_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("shared.qcow2");
    let disk_s = disk.to_str().unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", disk_s, "16M"]);
    let mut first = Reap(
        Command::new(rvmm_bin())
            .arg("--kernel")
            .arg(guest("idle"))
            .args(["--serial", "stdio", "--disk", disk_s])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the first rvmm"),
    );
    let mut lines = BufReader::new(first.0.stdout.take().unwrap()).lines();
    let t = Instant::now();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("idle: ready") => break,
            Some(Ok(_)) => {}
            other => panic!("first rvmm ended before its guest was ready: {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(20), "first rvmm too slow");
    }
    let second = rvmm()
        .kernel(guest("virtio-blk"))
        .arg("--disk")
        .arg(disk_s)
        .timeout(Duration::from_secs(20))
        .run();
    assert_eq!(second.status, Some(1), "{}", second.report());
    assert!(
        second.stderr.contains(disk_s) && second.stderr.contains("in use by another process"),
        "{}",
        second.report()
    );
    assert!(
        !second.serial.contains("virtio-blk:"),
        "no guest may run: {}",
        second.report()
    );
    // Readers conflict with a writer too.
    let ro = rvmm()
        .kernel(guest("virtio-blk"))
        .arg("--disk")
        .arg(format!("{disk_s},readonly=on"))
        .timeout(Duration::from_secs(20))
        .run();
    assert_eq!(ro.status, Some(1), "{}", ro.report());
    assert!(
        first.0.try_wait().unwrap().is_none(),
        "first VM kept running"
    );
    drop(first);
    // Once the first VM is gone the image is free again.
    let again = rvmm()
        .kernel(guest("virtio-blk"))
        .cmdline("console=ttyS0 blk_writes=2")
        .arg("--disk")
        .arg(disk_s)
        .run();
    again.assert_pass();
}

#[test]
fn bad_disk_options_and_missing_images_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.qcow2");
    let out = rvmm()
        .kernel(guest("virtio-blk"))
        .arg("--disk")
        .arg(&missing)
        .timeout(Duration::from_secs(20))
        .run();
    assert_eq!(out.status, Some(1), "{}", out.report());
    assert!(
        out.stderr.contains("nope.qcow2") && out.stderr.contains("No such file"),
        "{}",
        out.report()
    );
    let img = dir.path().join("d.raw");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    for (opt, why) in [
        (",format=vmdk", "format= takes raw or qcow2"),
        (",cache=maybe", "cache= takes"),
        (",bogus=1", "unknown option 'bogus'"),
        (",readonly", "is not key=value"),
    ] {
        let out = rvmm()
            .kernel(guest("virtio-blk"))
            .arg("--disk")
            .arg(format!("{}{opt}", img.display()))
            .timeout(Duration::from_secs(20))
            .run();
        assert_eq!(out.status, Some(2), "{opt}: {}", out.report());
        assert!(out.stderr.contains(why), "{opt}: {}", out.report());
    }
}

#[test]
fn a_used_disk_without_kernel_says_it_needs_kernel_or_firmware() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("installed.qcow2");
    let img_s = img.to_str().unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", img_s, "64M"]);
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x55 0 4k", img_s])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = rvmm()
        .arg("--disk")
        .arg(img_s)
        .timeout(Duration::from_secs(20))
        .run();
    assert!(!out.timed_out, "{}", out.report());
    assert_eq!(out.status, Some(1), "{}", out.report());
    assert!(
        out.stderr.contains("needs firmware") && out.stderr.contains("--kernel"),
        "{}",
        out.report()
    );
}

#[test]
fn disks_are_reattached_on_every_guest_reboot() {
    // Each reboot rebuilds the machine; the disks (opened and locked once) go on the new PCI
    // bus again.
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("d.qcow2");
    let disk_s = disk.to_str().unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", disk_s, "16M"]);
    let out = rvmm()
        .kernel(guest("reboot"))
        .arg("--disk")
        .arg(disk_s)
        .arg("--disk")
        .arg(format!("{disk_s}.2,format=raw"))
        .timeout(Duration::from_secs(20))
        .run();
    // The second image does not exist: nothing boots.
    assert_eq!(out.status, Some(1), "{}", out.report());
    assert!(!out.serial.contains("reboot: boot"), "{}", out.report());
    std::fs::write(format!("{disk_s}.2"), vec![0u8; 1 << 20]).unwrap();
    let out = rvmm()
        .kernel(guest("reboot"))
        .arg("-v")
        .arg("--disk")
        .arg(disk_s)
        .arg("--disk")
        .arg(format!("{disk_s}.2,format=raw"))
        .stop_when(|s| s.matches("reboot: boot").count() >= 3)
        .timeout(Duration::from_secs(20))
        .run();
    assert!(out.stopped, "{}", out.report());
    // Two virtio-blk functions per boot, in --disk order.
    let attached = out.stderr.matches(": PCI 00:0").count();
    assert!(
        attached >= 6,
        "two disks on each of three boots\n{}",
        out.report()
    );
    assert!(
        out.stderr
            .contains(&format!("virtio-blk {disk_s}: PCI 00:01.0"))
            && out
                .stderr
                .contains(&format!("virtio-blk {disk_s}.2: PCI 00:02.0")),
        "{}",
        out.report()
    );
    assert!(!out.stderr.contains("rvmm: error"), "{}", out.report());
}
