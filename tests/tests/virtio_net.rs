//! The virtio-net test guest (a virtio-pci network driver written from the virtio 1.2 spec that
//! answers ARP and ICMP and sends UDP) on a LAN made of network namespaces: `host` holds br0
//! with a veth `uplink0` (standing in for bond0) whose peer is in `lan` (10.0.0.2/24). The lan
//! side pings the guest and counts its UDP datagrams. Run under QEMU TCG against QEMU's own
//! `-netdev tap` (proves the guest driver follows the spec) and against `rvmm-vhost net
//! --bridge br0` (rvmm's virtio-net judged by that independent driver).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rvmm_tests::{bin_dir, guest};

const UDP: u32 = 5;
const PINGS: u32 = 3;

/// Kills the child on drop, so a failed assertion leaves nothing running.
struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The namespaces of one test; deleted, with all interfaces in them, on drop.
struct Lan {
    host: String,
    lan: String,
}

fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lan {
    fn new(tag: &str) -> Lan {
        let id = std::process::id();
        let l = Lan {
            host: format!("rvmm-ghost-{tag}-{id}"),
            lan: format!("rvmm-glan-{tag}-{id}"),
        };
        let (h, n) = (&l.host, &l.lan);
        sh(&format!(
            "ip netns add {h} && ip netns add {n} && ip -n {h} link add br0 type bridge && \
             ip -n {h} link add uplink0 type veth peer name eth0 netns {n} && \
             ip -n {h} link set uplink0 master br0 && ip -n {h} link set uplink0 up && \
             ip -n {h} link set br0 up && ip -n {n} link set lo up && \
             ip -n {n} link set eth0 up && ip -n {n} addr add 10.0.0.2/24 dev eth0"
        ));
        l
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in [&self.host, &self.lan] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Counts datagrams on 10.0.0.2:5555 that carry the guest's payload; prints the count when
/// `UDP` arrived or after 120 s.
const UDP_SINK: &str = r#"
import socket, sys
n = int(sys.argv[1]); s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.0.0.2", 5555)); s.settimeout(120)
print("READY", flush=True)
got = set()
try:
    while len(got) < n:
        d, _ = s.recvfrom(2048)
        if d.startswith(b"rvmm-udp "): got.add(d)
except socket.timeout:
    pass
print("GOT", len(got), flush=True)
"#;

fn qemu_cmd(ns: &str, serial: &Path) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "qemu-system-x86_64"])
        .args(["-accel", "tcg", "-M", "pc", "-m", "512", "-nodefaults"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x01"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-kernel")
        .arg(guest("virtio-net"))
        .arg("-append")
        .arg(format!(
            "console=ttyS0 ip=10.0.0.10 peer=10.0.0.2 udp={UDP} pings={PINGS} serve_ms=60000"
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Boot the guest with `nic` (QEMU NIC arguments), ping it from lan, check UDP and the result.
/// Returns the guest's count of receive headers whose num_buffers was not 1.
fn run(lan: &Lan, dir: &Path, nic: &[String]) -> u64 {
    let mut sink = Reap(
        Command::new("ip")
            .args(["netns", "exec", &lan.lan, "python3", "-c", UDP_SINK])
            .arg(UDP.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut sink_out = BufReader::new(sink.0.stdout.take().unwrap());
    let mut line = String::new();
    sink_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY");

    let serial = dir.join("serial.txt");
    let mut qemu = Reap(qemu_cmd(&lan.host, &serial).args(nic).spawn().unwrap());
    let read_serial = || std::fs::read_to_string(&serial).unwrap_or_default();
    let start = Instant::now();
    while !read_serial().contains("virtio-net: ready") {
        if let Some(st) = qemu.0.try_wait().unwrap() {
            panic!("guest ended before it was ready ({st}):\n{}", read_serial());
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "guest not ready:\n{}",
            read_serial()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lan.lan,
            "busybox",
            "ping",
            "-c",
            &PINGS.to_string(),
        ])
        .args(["-W", "5", "10.0.0.10"])
        .output()
        .unwrap();
    let ping_out = String::from_utf8_lossy(&ping.stdout).into_owned();

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = qemu.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "guest did not finish:\n{}",
            read_serial()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let console = read_serial();
    assert!(ping.status.success(), "ping failed:\n{ping_out}\n{console}");
    assert!(
        ping_out.contains(&format!("{PINGS} packets received")),
        "{ping_out}"
    );
    // isa-debug-exit: status (v << 1) | 1, v = 0x10 for RESULT: PASS.
    assert_eq!(status.code(), Some((0x10 << 1) | 1), "{console}");
    assert!(console.contains("RESULT: PASS"), "{console}");
    assert!(
        console.contains(&format!("icmp_replies={PINGS} udp_sent={UDP}")),
        "{console}"
    );
    line.clear();
    sink_out.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        format!("GOT {UDP}"),
        "UDP datagrams at lan\n{console}"
    );
    console
        .split("bad_num_buffers=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no bad_num_buffers count:\n{console}"))
}

#[test]
fn guest_driver_works_against_qemu_tap() {
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new("tap");
    // A tap in `host` on br0 for QEMU to open (vnet_hdr is negotiated by QEMU itself).
    sh(&format!(
        "ip -n {h} tuntap add dev qtap0 mode tap && ip -n {h} link set qtap0 master br0 && \
         ip -n {h} link set qtap0 up",
        h = lan.host
    ));
    let nic = [
        "-netdev".to_string(),
        "tap,id=n,ifname=qtap0,script=no,downscript=no".to_string(),
        "-device".to_string(),
        "virtio-net-pci,netdev=n,disable-legacy=on,mac=52:54:00:00:00:10".to_string(),
    ];
    // QEMU's device does not set num_buffers without MRG_RXBUF; not judged here.
    run(&lan, dir.path(), &nic);
}

#[test]
fn guest_driver_works_against_rvmm_vhost_net() {
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new("vu");
    let bin: PathBuf = bin_dir().join("rvmm-vhost");
    assert!(
        bin.is_file(),
        "build rvmm-vhost first: cargo build -p tools --bin rvmm-vhost"
    );
    let sock = dir.path().join("net.sock");
    let _backend = Reap(
        Command::new("ip")
            .args(["netns", "exec", &lan.host])
            .arg(&bin)
            .args([
                "net",
                "--bridge",
                "br0",
                "--mac",
                "52:54:00:00:00:11",
                "--socket",
            ])
            .arg(&sock)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while !sock.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "rvmm-vhost made no socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // vectors=0: QEMU 7.2 under TCG crashes starting vhost-user-net with MSI-X.
    let nic = [
        "-object".to_string(),
        "memory-backend-memfd,id=mem,size=512M,share=on".to_string(),
        "-numa".to_string(),
        "node,memdev=mem".to_string(),
        "-chardev".to_string(),
        format!("socket,id=c,path={}", sock.display()),
        "-netdev".to_string(),
        "vhost-user,id=n,chardev=c".to_string(),
        "-device".to_string(),
        "virtio-net-pci,netdev=n,disable-legacy=on,vectors=0,mac=52:54:00:00:00:11".to_string(),
    ];
    assert_eq!(
        run(&lan, dir.path(), &nic),
        0,
        "rvmm must set num_buffers = 1"
    );
}
