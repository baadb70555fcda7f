//! The headline command: `rvmm --disk vhost1.qcow2 --cdrom centos.iso --bridge br0 --vnc
//! 0.0.0.0 --memory 1024 --cpus 2` starts, boots the CD's installer with the disk, NIC and
//! display attached, and says where its VNC server listens. It runs in a network namespace
//! with its own br0 (so port 5900 of that namespace is free), deleted when the test ends.

use std::process::Command;
use std::time::Duration;

use iso::fixtures;
use rvmm_tests::{command, guest, rvmm_bin};

mod virtio_net_common;
use virtio_net_common::{sh, Lan};

#[test]
fn disk_cdrom_bridge_and_vnc_compose() {
    let lan = Lan::new("vnc");
    sh(&format!("ip -n {} link set lo up", lan.host));
    let dir = tempfile::tempdir().unwrap();
    let kernel = std::fs::read(guest("cdcheck")).unwrap();
    let initrd: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
    let fx = fixtures::centos7(dir.path(), &kernel, &initrd, true).unwrap();
    let disk = dir.path().join("vhost1.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("1G")
        .status()
        .unwrap();
    assert!(st.success());
    let out = command("ip")
        .args(["netns", "exec", &lan.host])
        .arg(rvmm_bin())
        .arg("--disk")
        .arg(&disk)
        .arg("--cdrom")
        .arg(&fx.path)
        .args([
            "--bridge", "br0", "--vnc", "0.0.0.0", "--memory", "1024", "--cpus", "2",
        ])
        .args(["--serial", "stdio"])
        .timeout(Duration::from_secs(60))
        .run();
    out.assert_pass();
    assert!(
        out.stderr
            .contains("rvmm: VNC server on 0.0.0.0:5900 (display :0)"),
        "{}",
        out.report()
    );
    assert!(
        out.line("cdcheck: label: ") == Some(fx.volume_id),
        "the CD is attached\n{}",
        out.report()
    );
}
