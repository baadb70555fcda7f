//! `rvmm-vhost net` against a real Linux guest: namespace `host` holds br0 with a veth
//! `uplink0` (standing in for bond0) whose peer is in namespace `lan` (10.0.0.2/24, the "other
//! machine"). A Debian kernel + busybox initramfs under QEMU TCG drives our backend with the stock
//! virtio-net driver: ping, a TCP download and upload with checksums. The tap must be a port of
//! br0 while the backend runs and vanish when it ends: frontend gone, SIGKILL of QEMU, Ctrl-C.
//! The namespaces are per-test and deleted on drop, so nothing survives a failing test.

#[path = "vhost_blk_common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assets, qemu_tcg, run_ok, wait_socket, Proc, Scratch, APPEND};

const GUEST_MAC: &str = "52:54:00:12:34:56";

/// The two namespaces of one test; deleted (with every interface in them) on drop.
struct Lan {
    host: String,
    lan: String,
}

impl Lan {
    fn new(tag: &str) -> Lan {
        let id = std::process::id();
        let l = Lan {
            host: format!("rvmm-host-{tag}-{id}"),
            lan: format!("rvmm-lan-{tag}-{id}"),
        };
        let (h, n) = (&l.host, &l.lan);
        for cmd in [
            format!("ip netns add {h}"),
            format!("ip netns add {n}"),
            format!("ip -n {h} link add br0 type bridge"),
            format!("ip -n {h} link add uplink0 type veth peer name eth0 netns {n}"),
            format!("ip -n {h} link set uplink0 master br0"),
            format!("ip -n {h} link set uplink0 up"),
            format!("ip -n {h} link set br0 up"),
            format!("ip -n {n} link set lo up"),
            format!("ip -n {n} link set eth0 up"),
            format!("ip -n {n} addr add 10.0.0.2/24 dev eth0"),
        ] {
            run_ok(Command::new("sh").arg("-c").arg(&cmd));
        }
        l
    }

    /// The rvmm taps that are ports of br0 in `host`, as `ip -o link` lines.
    fn bridge_taps(&self) -> Vec<String> {
        let out = run_ok(
            Command::new("ip").args(["-n", &self.host, "-o", "link", "show", "master", "br0"]),
        );
        rvmm_taps(&out)
    }

    /// Every rvmm tap in `host`, attached or not.
    fn all_taps(&self) -> Vec<String> {
        let out = run_ok(Command::new("ip").args(["-n", &self.host, "-o", "link"]));
        rvmm_taps(&out)
    }

    /// `rvmm-vhost net --bridge br0` inside `host`, serving `sock`, logging to `log`.
    fn backend(&self, sock: &Path, log: &Path) -> Proc {
        let log = std::fs::File::create(log).unwrap();
        Proc(
            Command::new("ip")
                .args(["netns", "exec", &self.host])
                .arg(env!("CARGO_BIN_EXE_rvmm-vhost"))
                .args([
                    "-v", "net", "--bridge", "br0", "--mac", GUEST_MAC, "--socket",
                ])
                .arg(sock)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start rvmm-vhost"),
        )
    }

    /// Wait until the backend's tap is a port of br0 and return its `ip -o link` line.
    fn wait_attached(&self, backend: &mut Proc) -> String {
        let start = Instant::now();
        loop {
            if let Some(t) = self.bridge_taps().pop() {
                return t;
            }
            if let Some(st) = backend.0.try_wait().unwrap() {
                panic!("rvmm-vhost exited before attaching a tap: {st}");
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no tap on br0");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// After the backend ended, its tap must be gone within a moment.
    fn assert_tap_gone(&self) {
        let start = Instant::now();
        while !self.all_taps().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "tap left behind: {:?}",
                self.all_taps()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The lines of `ip -o link` output whose interface name is one of our taps (`rvmmN`).
fn rvmm_taps(ip_output: &str) -> Vec<String> {
    ip_output
        .lines()
        .filter(|l| {
            l.split(": ")
                .nth(1)
                .is_some_and(|name| name.starts_with("rvmm"))
        })
        .map(str::to_string)
        .collect()
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in [&self.host, &self.lan] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// QEMU TCG with a vhost-user-net NIC on `sock`. `vectors=0` (INTx): QEMU 7.2 under TCG crashes
/// in msix_set_vector_notifiers when starting a vhost-user-net device with MSI-X.
fn qemu_vhost_net(kernel: &Path, initrd: &Path, sock: &Path, serial: &Path) -> Proc {
    Proc(
        qemu_tcg(kernel, initrd, APPEND, serial)
            .arg("-chardev")
            .arg(format!("socket,id=c,path={}", sock.display()))
            .args(["-netdev", "vhost-user,id=n,chardev=c"])
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev=n,mac={GUEST_MAC},vectors=0"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu-system-x86_64"),
    )
}

/// The "other machine": sends 1 MiB of random data on port 5001 and receives it back on 5002,
/// printing both checksums.
const LAN_SERVER: &str = r#"
import hashlib, os, socket, sys
data = os.urandom(1 << 20)
def listen(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("10.0.0.2", port)); s.listen(1); s.settimeout(150); return s
dl, ul = listen(5001), listen(5002)
print("READY DL", hashlib.md5(data).hexdigest(), flush=True)
c, _ = dl.accept(); c.sendall(data); c.close()
c, _ = ul.accept(); got = b""
while len(got) < len(data):
    b = c.recv(65536)
    if not b: break
    got += b
c.close()
print("UL", len(got), hashlib.md5(got).hexdigest(), flush=True)
"#;

const GUEST_SCRIPT: &str = "
ip link set eth0 up
ip addr add 10.0.0.10/24 dev eth0
ping -c 3 -W 10 10.0.0.2
echo PING-STATUS=$?
nc 10.0.0.2 5001 > /tmp/dl
echo DL-SIZE=$(wc -c < /tmp/dl) DL-MD5=$(md5sum /tmp/dl)
nc 10.0.0.2 5002 < /tmp/dl
echo UL-DONE
";

#[test]
fn linux_guest_pings_and_transfers_over_the_bridge() {
    let dir = Scratch::new("vhost-net");
    let lan = Lan::new("io");
    let script = dir.path("test.sh");
    std::fs::write(&script, GUEST_SCRIPT).unwrap();
    let initrd = dir.path("initrd");
    let kernel = assets(&script, &initrd);

    let mut server = Proc(
        Command::new("ip")
            .args(["netns", "exec", &lan.lan, "python3", "-c", LAN_SERVER])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(server.0.stdout.take().unwrap());
    let mut ready = String::new();
    out.read_line(&mut ready).unwrap();
    let dl_md5 = ready
        .strip_prefix("READY DL ")
        .unwrap_or_else(|| panic!("lan server: {ready:?}"))
        .trim()
        .to_string();

    let sock = dir.path("net.sock");
    let log = dir.path("vhost.log");
    let mut backend = lan.backend(&sock, &log);
    wait_socket(&sock, &mut backend);
    let tap = lan.wait_attached(&mut backend);
    assert!(tap.contains("fe:54:00:12:34:56"), "tap MAC: {tap}");
    assert!(
        tap.contains("state UP") || tap.contains(",UP"),
        "tap not up: {tap}"
    );

    let serial = dir.path("serial.txt");
    let mut qemu = qemu_vhost_net(&kernel, &initrd, &sock, &serial);
    let st = qemu.wait_timeout(Duration::from_secs(150));
    let console = std::fs::read_to_string(&serial).unwrap_or_default();
    let vlog = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(st.is_some(), "guest did not finish:\n{console}\n{vlog}");
    assert!(console.contains("RVMM-TEST-EXIT=0"), "{console}\n{vlog}");
    assert!(console.contains("3 packets received"), "{console}\n{vlog}");
    assert!(console.contains("PING-STATUS=0"), "{console}");
    assert!(
        console.contains(&format!("DL-SIZE=1048576 DL-MD5={dl_md5}")),
        "download corrupted (want {dl_md5}):\n{console}\n{vlog}"
    );
    assert!(console.contains("UL-DONE"), "{console}");
    let mut rest = String::new();
    out.read_line(&mut rest).unwrap();
    assert_eq!(
        rest.trim(),
        format!("UL 1048576 {dl_md5}"),
        "upload corrupted"
    );

    // The frontend is gone: the backend ends and takes its tap with it.
    let st = backend.wait_timeout(Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "backend: {st:?}\n{vlog}");
    lan.assert_tap_gone();
}

#[test]
fn tap_goes_away_when_qemu_is_killed() {
    let dir = Scratch::new("vhost-net-kill");
    let lan = Lan::new("kill");
    let script = dir.path("test.sh");
    std::fs::write(&script, "sleep 600\n").unwrap();
    let initrd = dir.path("initrd");
    let kernel = assets(&script, &initrd);
    let sock = dir.path("net.sock");
    let log = dir.path("vhost.log");
    let mut backend = lan.backend(&sock, &log);
    wait_socket(&sock, &mut backend);
    lan.wait_attached(&mut backend);
    let mut qemu = qemu_vhost_net(&kernel, &initrd, &sock, &dir.path("serial.txt"));
    // Wait for the vhost-user connection, then SIGKILL QEMU.
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("frontend connected")
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "QEMU never connected"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        lan.bridge_taps().len(),
        1,
        "tap must stay attached while QEMU runs"
    );
    qemu.0.kill().unwrap();
    qemu.0.wait().unwrap();
    let st = backend.wait_timeout(Duration::from_secs(10));
    assert!(st.is_some(), "backend kept running after its frontend died");
    lan.assert_tap_gone();
}

#[test]
fn tap_goes_away_on_ctrl_c() {
    let dir = Scratch::new("vhost-net-int");
    let lan = Lan::new("int");
    let sock = dir.path("net.sock");
    let mut backend = lan.backend(&sock, &dir.path("vhost.log"));
    wait_socket(&sock, &mut backend);
    lan.wait_attached(&mut backend);
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(backend.0.id() as i32, libc::SIGINT) },
        0
    );
    let st = backend.wait_timeout(Duration::from_secs(10));
    assert!(st.is_some(), "backend ignored SIGINT");
    lan.assert_tap_gone();
}

#[test]
fn bridge_without_cap_net_admin_names_the_fixes() {
    let dir = Scratch::new("vhost-net-cap");
    let lan = Lan::new("cap");
    // setpriv drops CAP_NET_ADMIN from every set, as for an unprivileged user.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lan.host,
            "setpriv",
            "--inh-caps=-net_admin",
            "--bounding-set=-net_admin",
        ])
        .arg(env!("CARGO_BIN_EXE_rvmm-vhost"))
        .args(["net", "--bridge", "br0", "--socket"])
        .arg(dir.path("net.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for fix in ["CAP_NET_ADMIN", "setcap", "ip tuntap add", "--tap"] {
        assert!(err.contains(fix), "error lacks {fix:?}: {err}");
    }
    assert!(lan.all_taps().is_empty());
}

#[test]
fn existing_tap_is_used_and_left_in_place() {
    let dir = Scratch::new("vhost-net-tap");
    let lan = Lan::new("tap");
    run_ok(Command::new("sh").arg("-c").arg(format!(
        "ip -n {h} tuntap add dev rvmmkeep mode tap vnet_hdr && ip -n {h} link set rvmmkeep master br0",
        h = lan.host
    )));
    let sock = dir.path("net.sock");
    let log = dir.path("vhost.log");
    let mut backend = Proc(
        Command::new("ip")
            .args(["netns", "exec", &lan.host])
            .arg(env!("CARGO_BIN_EXE_rvmm-vhost"))
            .args(["-v", "net", "--tap", "rvmmkeep", "--socket"])
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_socket(&sock, &mut backend);
    let link = lan.wait_attached(&mut backend);
    assert!(link.contains("rvmmkeep") && link.contains(",UP"), "{link}");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(backend.0.id() as i32, libc::SIGINT) },
        0
    );
    assert!(backend.wait_timeout(Duration::from_secs(10)).is_some());
    assert_eq!(
        lan.all_taps().len(),
        1,
        "a pre-existing tap must survive rvmm-vhost"
    );
}
