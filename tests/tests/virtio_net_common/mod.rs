//! Helpers shared by the virtio-net guest tests and benchmark: a LAN of network namespaces and
//! QEMU running the virtio-net test guest inside it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rvmm_tests::{bin_dir, guest};

pub use rvmm_tests::Reap;

/// Counts datagrams on 10.0.0.2:5555 that carry the guest's payload; prints the count when
/// argv[1] distinct ones arrived or after argv[2] seconds.
pub const UDP_SINK: &str = r#"
import socket, sys
n = int(sys.argv[1]); s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.0.0.2", 5555)); s.settimeout(float(sys.argv[2]))
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

/// Benchmark sink: counts datagrams arriving on 10.0.0.2:5556 until 2 s of silence; prints
/// "GOT n".
pub const BENCH_SINK: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("10.0.0.2", 5556)); s.settimeout(120)
print("READY", flush=True)
n = 0
try:
    s.recv(4096); n = 1; s.settimeout(2)
    while True:
        s.recv(4096); n += 1
except socket.timeout:
    pass
print("GOT", n, flush=True)
"#;

/// Benchmark flood: sends datagrams of argv[1] payload bytes to 10.0.0.10:5557 for argv[2]
/// seconds, flat out; prints "SENT n".
pub const BENCH_FLOOD: &str = r#"
import socket, sys, time
size, secs = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
data = b"b" * size; end = time.time() + secs; n = 0
while time.time() < end:
    try:
        s.sendto(data, ("10.0.0.10", 5557)); n += 1
    except OSError:
        pass
print("SENT", n, flush=True)
"#;

/// The namespaces of one test; deleted, with all interfaces in them, on drop.
pub struct Lan {
    /// Namespace with br0 and uplink0.
    pub host: String,
    /// Namespace of the other machine (10.0.0.2/24).
    pub lan: String,
}

/// Run a shell command that must succeed.
pub fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lan {
    /// Create both namespaces, the bridge and the veth pair.
    pub fn new(tag: &str) -> Lan {
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

/// QEMU TCG in namespace `ns` booting the virtio-net guest with `cmdline`, serial to `serial`.
pub fn qemu_cmd(ns: &str, serial: &Path, cmdline: &str) -> Command {
    qemu_cmd_accel(ns, serial, cmdline, &["-accel", "tcg"])
}

/// As [`qemu_cmd`] with the accelerator arguments `accel` (e.g. `-accel kvm -cpu host`).
pub fn qemu_cmd_accel(ns: &str, serial: &Path, cmdline: &str, accel: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "qemu-system-x86_64"])
        .args(accel)
        .args(["-M", "pc", "-m", "512", "-nodefaults"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x01"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-kernel")
        .arg(guest("virtio-net"))
        .arg("-append")
        .arg(format!(
            "console=ttyS0 ip=10.0.0.10 peer=10.0.0.2 {cmdline}"
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// A tap `qtap0` on br0 in `host` and the QEMU arguments of a virtio-net NIC on it
/// (`-netdev tap`, QEMU's own device; vnet_hdr is negotiated by QEMU itself).
pub fn tap_nic(lan: &Lan) -> Vec<String> {
    sh(&format!(
        "ip -n {h} tuntap add dev qtap0 mode tap && ip -n {h} link set qtap0 master br0 && \
         ip -n {h} link set qtap0 up",
        h = lan.host
    ));
    [
        "-netdev",
        "tap,id=n,ifname=qtap0,script=no,downscript=no",
        "-device",
        "virtio-net-pci,netdev=n,disable-legacy=on,mac=52:54:00:00:00:10",
    ]
    .map(String::from)
    .to_vec()
}

/// `rvmm-vhost net --bridge br0` in `host` serving a socket in `dir`, and the QEMU arguments of
/// a vhost-user-net NIC on it. `vectors=0`: QEMU 7.2 under TCG crashes starting vhost-user-net
/// with MSI-X.
pub fn vhost_nic(lan: &Lan, dir: &Path) -> (Reap, Vec<String>) {
    let bin: PathBuf = bin_dir().join("rvmm-vhost");
    assert!(
        bin.is_file(),
        "build rvmm-vhost first: cargo build -p tools --bin rvmm-vhost"
    );
    let sock = dir.join("net.sock");
    let mut backend = Reap(
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
        if let Some(st) = backend.0.try_wait().unwrap() {
            panic!("rvmm-vhost exited: {st}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "rvmm-vhost made no socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let nic = vec![
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
    (backend, nic)
}

/// Wait until the serial log `serial` contains `what`; panics if `vm` ends first or after `limit`.
pub fn wait_serial(serial: &Path, what: &str, vm: &mut Reap, limit: Duration) {
    let start = Instant::now();
    let read = || std::fs::read_to_string(serial).unwrap_or_default();
    while !read().contains(what) {
        if let Some(st) = vm.0.try_wait().unwrap() {
            panic!("guest ended ({st}) before {what:?}:\n{}", read());
        }
        assert!(
            start.elapsed() < limit,
            "no {what:?} from the guest:\n{}",
            read()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
