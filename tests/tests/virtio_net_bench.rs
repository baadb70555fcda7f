//! Benchmark: the virtio-net test guest's ring-3 UDP loop (guest→lan and lan→guest) through
//! rvmm's virtio-net device (`rvmm-vhost net --bridge br0`, vhost-user) and through QEMU's own
//! virtio-net on `-netdev tap` (no vhost), both on br0 in the same namespace LAN, both under
//! `qemu-system-x86_64 -accel kvm` when /dev/kvm is usable, else TCG (`RVMM_BENCH_ACCEL=tcg`
//! forces TCG). Prints packets/s and Gbit/s of each and the ratio rvmm/QEMU. Not a test (no
//! timed assertions):
//!
//! ```text
//! cargo build --release -p tools --bin rvmm-vhost
//! cargo test --release -p rvmm-tests --test virtio_net_bench -- --ignored --nocapture
//! ```

mod virtio_net_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use virtio_net_common::{
    qemu_cmd_accel, tap_nic, vhost_nic, wait_serial, Lan, Reap, BENCH_FLOOD, BENCH_SINK,
};

const TX_FRAMES: u64 = 20_000;
const PAYLOAD: u64 = 1024;
const RX_SECONDS: u64 = 3;

/// KVM when /dev/kvm opens (and RVMM_BENCH_ACCEL is not `tcg`), else TCG.
fn accel() -> &'static [&'static str] {
    let tcg = std::env::var("RVMM_BENCH_ACCEL").is_ok_and(|v| v == "tcg");
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if kvm && !tcg {
        &["-accel", "kvm", "-cpu", "host"]
    } else {
        &["-accel", "tcg"]
    }
}

/// One direction's result.
#[derive(Clone, Copy, Default)]
struct Rate {
    pps: f64,
    gbps: f64,
}

impl Rate {
    fn new(frames: u64, frame_bytes: u64, us: u64) -> Rate {
        let s = us.max(1) as f64 / 1e6;
        Rate {
            pps: frames as f64 / s,
            gbps: (frames * frame_bytes * 8) as f64 / s / 1e9,
        }
    }
}

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// Run the guest's benchmark on `nic`; returns (guest→lan, lan→guest, frames lan received).
fn measure(lan: &Lan, dir: &Path, nic: &[String]) -> (Rate, Rate, u64) {
    let mut sink = Reap(
        Command::new("ip")
            .args(["netns", "exec", &lan.lan, "python3", "-c", BENCH_SINK])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut sink_out = BufReader::new(sink.0.stdout.take().unwrap());
    let mut line = String::new();
    sink_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY");
    let serial = dir.join("serial.txt");
    let cmdline = format!(
        "udp=0 pings=0 serve_ms=0 bench=1 bench_tx={TX_FRAMES} bench_size={PAYLOAD} \
         bench_rx_ms={}",
        RX_SECONDS * 1000
    );
    let mut qemu = Reap(
        qemu_cmd_accel(&lan.host, &serial, &cmdline, accel())
            .args(nic)
            .spawn()
            .unwrap(),
    );
    wait_serial(
        &serial,
        "bench_rx_ready",
        &mut qemu,
        Duration::from_secs(120),
    );
    // A static neighbour entry: the blast must not depend on ARP keeping up under load.
    let mac = nic
        .iter()
        .find_map(|a| a.split(',').find_map(|kv| kv.strip_prefix("mac=")))
        .expect("NIC arguments name the guest MAC");
    virtio_net_common::sh(&format!(
        "ip -n {} neigh replace 10.0.0.10 lladdr {mac} dev eth0 nud permanent",
        lan.lan
    ));
    let blast = Command::new("ip")
        .args(["netns", "exec", &lan.lan, "python3", "-c", BENCH_FLOOD])
        .args([PAYLOAD.to_string(), (RX_SECONDS + 1).to_string()])
        .output()
        .unwrap();
    assert!(blast.status.success());
    wait_serial(
        &serial,
        "bench_rx frames",
        &mut qemu,
        Duration::from_secs(60),
    );
    let _ = qemu.0.wait();
    let console = std::fs::read_to_string(&serial).unwrap();
    let tx = console
        .lines()
        .find(|l| l.starts_with("virtio-net: bench_tx "))
        .unwrap_or_else(|| panic!("{console}"));
    let rx = console
        .lines()
        .find(|l| l.starts_with("virtio-net: bench_rx "))
        .unwrap_or_else(|| panic!("{console}"));
    let frame = field(tx, "frame_bytes=");
    let tx_rate = Rate::new(field(tx, "frames="), frame, field(tx, "us="));
    let rx_frames = field(rx, "frames=");
    let rx_rate = Rate::new(
        rx_frames,
        field(rx, "bytes=") / rx_frames.max(1),
        field(rx, "us="),
    );
    line.clear();
    sink_out.read_line(&mut line).unwrap();
    let got = line
        .trim()
        .strip_prefix("GOT ")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (tx_rate, rx_rate, got)
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn virtio_net_rvmm_vs_qemu_tap() {
    let dir = tempfile::tempdir().unwrap();
    let ours = {
        let lan = Lan::new("bvu");
        let (_backend, nic) = vhost_nic(&lan, dir.path());
        measure(&lan, dir.path(), &nic)
    };
    let theirs = {
        let lan = Lan::new("btap");
        let nic = tap_nic(&lan);
        measure(&lan, dir.path(), &nic)
    };
    println!(
        "virtio-net, test guest ring-3 UDP loop, {PAYLOAD}-byte payload, QEMU {}; \
         rvmm = rvmm-vhost net (vhost-user) on br0, QEMU = virtio-net-pci + -netdev tap on br0",
        accel().join(" ")
    );
    println!(
        "{:<14} {:>12} {:>10} {:>12} {:>10} {:>8} {:>8}",
        "direction", "rvmm pps", "rvmm Gb/s", "QEMU pps", "QEMU Gb/s", "pps x", "lan rx"
    );
    let row = |name: &str, a: Rate, b: Rate, extra: String| {
        // A direction where either side moved nothing (e.g. the sender lost the race with the
        // guest's idle timeout) has no meaningful ratio.
        let ratio = if a.pps > 0.0 && b.pps > 0.0 {
            format!("{:.2}", a.pps / b.pps)
        } else {
            "n/a".to_string()
        };
        println!(
            "{name:<14} {:>12.0} {:>10.3} {:>12.0} {:>10.3} {ratio:>8} {extra:>8}",
            a.pps, a.gbps, b.pps, b.gbps
        );
    };
    row(
        "guest->lan",
        ours.0,
        theirs.0,
        format!("{}/{}", ours.2, theirs.2),
    );
    row("lan->guest", ours.1, theirs.1, String::new());
}
