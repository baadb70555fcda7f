//! `rvmm --bridge/--tap/--net-fd/--mac` with the virtio-net test guest (a spec-written
//! virtio-pci driver answering ARP/ICMP and sending UDP) under KVM, on a LAN of network
//! namespaces this test creates and always deletes: `host` holds br0 and a veth `uplink0`
//! (standing in for bond0) whose peer is the "other machine" in `lan` (10.0.0.2/24). rvmm runs
//! inside `host`; `lan` pings the guest and counts its UDP datagrams. The tap rvmm creates for
//! `--bridge` must be a port of br0 while rvmm runs and gone once it exits, however it exits.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rvmm_tests::{guest, rvmm_bin};

mod virtio_net_common;
use virtio_net_common::{sh, wait_serial, Lan, Reap};

const UDP: u32 = 5;
const PINGS: u32 = 3;
/// The guest's debug-exit value for RESULT: PASS, which rvmm returns as its exit status.
const PASS: i32 = 0x10;

/// Counts datagrams on 10.0.0.2:5555 that carry the guest's payload; prints the count when
/// argv[1] distinct ones arrived or after 60 s.
const UDP_SINK: &str = r#"
import socket, sys
n = int(sys.argv[1]); s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.0.0.2", 5555)); s.settimeout(60)
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

/// Creates tap argv[1] (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, not persistent), makes it a port of
/// br0, puts its fd at 5 and execs the rest of argv: rvmm gets the tap as `--net-fd 5`.
const WITH_TAP_FD: &str = r#"
import fcntl, os, struct, subprocess, sys
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH22x", sys.argv[1].encode(), 0x0002 | 0x1000 | 0x4000))
subprocess.run(["ip", "link", "set", sys.argv[1], "master", "br0", "up"], check=True)
os.dup2(fd, 5)
os.execvp(sys.argv[2], sys.argv[2:])
"#;

/// `rvmm` in namespace `ns` (through `prefix`, e.g. `ip netns exec NS`) booting the guest with
/// `guest_args` on its command line and `nic` flags, COM1 to `serial`.
fn rvmm(prefix: &[&str], serial: &Path, guest_args: &str, nic: &[&str]) -> Command {
    let mut c = Command::new(prefix[0]);
    c.args(&prefix[1..])
        .arg(rvmm_bin())
        .arg("--kernel")
        .arg(guest("virtio-net"))
        .arg("--serial")
        .arg(format!("file:{}", serial.display()))
        .args(["--no-reboot", "--cmdline"])
        .arg(format!(
            "console=ttyS0 ip=10.0.0.10 peer=10.0.0.2 {guest_args}"
        ))
        .args(nic)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Names of br0's ports in namespace `ns` other than uplink0.
fn tap_ports(ns: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", "master", "br0"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n != "uplink0")
        .collect()
}

/// The MAC of interface `dev` in `ns`, or None when it does not exist.
fn link_mac(ns: &str, dev: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", "dev", dev])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.split("link/ether ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .map(String::from)
}

/// Wait until interface `dev` no longer exists in `ns`; false after `limit`.
fn gone_within(ns: &str, dev: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while link_mac(ns, dev).is_some() {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Wait for the VM to end (at most `limit`), with what it printed on stderr.
fn finish(vm: &mut Reap, limit: Duration) -> (ExitStatus, String) {
    let start = Instant::now();
    let status = loop {
        if let Some(st) = vm.0.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < limit, "rvmm did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = vm.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    (status, err)
}

/// The guest MAC the test guest printed (`mac=…`).
fn guest_mac(console: &str) -> String {
    console
        .split("mac=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no mac= from the guest:\n{console}"))
        .to_string()
}

/// Start the UDP sink in `lan`; returns it and its output once it is listening.
fn udp_sink(lan: &Lan) -> (Reap, BufReader<std::process::ChildStdout>) {
    let mut sink = Reap(
        Command::new("ip")
            .args(["netns", "exec", &lan.lan, "python3", "-c", UDP_SINK])
            .arg(UDP.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(sink.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY");
    (sink, out)
}

/// Ping the guest from `lan`; asserts every echo was answered.
fn ping_guest(lan: &Lan, console: impl Fn() -> String) {
    let ping = Command::new("ip")
        .args(["netns", "exec", &lan.lan, "busybox", "ping"])
        .args(["-c", &PINGS.to_string(), "-W", "5", "10.0.0.10"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&ping.stdout);
    assert!(
        ping.status.success() && out.contains(&format!("{PINGS} packets received")),
        "ping from lan failed:\n{out}\n{}",
        console()
    );
}

/// Boot the guest with `nic`, ping it, count its UDP at lan; asserts the whole exchange and
/// returns the console.
fn exchange(lan: &Lan, dir: &Path, prefix: &[&str], nic: &[&str]) -> String {
    let (_sink, mut sink_out) = udp_sink(lan);
    let serial = dir.join("serial.txt");
    let args = format!("udp={UDP} pings={PINGS} serve_ms=30000");
    let mut vm = Reap(rvmm(prefix, &serial, &args, nic).spawn().unwrap());
    let console = || std::fs::read_to_string(&serial).unwrap_or_default();
    wait_serial(
        &serial,
        "virtio-net: ready",
        &mut vm,
        Duration::from_secs(30),
    );
    ping_guest(lan, console);
    let (status, err) = finish(&mut vm, Duration::from_secs(30));
    let console = console();
    assert_eq!(status.code(), Some(PASS), "{console}\n{err}");
    assert!(
        console.contains(&format!("icmp_replies={PINGS} udp_sent={UDP}")),
        "{console}"
    );
    assert!(console.contains("bad_num_buffers=0"), "{console}");
    let mut line = String::new();
    sink_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), format!("GOT {UDP}"), "UDP at lan\n{console}");
    console
}

#[test]
fn bridge_guest_answers_ping_sends_udp_and_its_tap_goes_with_rvmm() {
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new("rnb");
    let bridge_mac = link_mac(&lan.host, "br0").unwrap();
    let (_sink, mut sink_out) = udp_sink(&lan);
    let serial = dir.path().join("serial.txt");
    let prefix = ["ip", "netns", "exec", lan.host.as_str()];
    let args = format!("udp={UDP} pings={PINGS} serve_ms=30000");
    let mut vm = Reap(
        rvmm(&prefix, &serial, &args, &["--bridge", "br0"])
            .spawn()
            .unwrap(),
    );
    let console = || std::fs::read_to_string(&serial).unwrap_or_default();
    wait_serial(
        &serial,
        "virtio-net: ready",
        &mut vm,
        Duration::from_secs(30),
    );
    // While rvmm runs: one new port on br0, with the guest's MAC behind an FE byte, and the
    // bridge keeping its own address.
    let ports = tap_ports(&lan.host);
    assert_eq!(ports.len(), 1, "{ports:?}");
    let mac = guest_mac(&console());
    assert!(mac.starts_with("52:54:00:"), "{mac}");
    assert_eq!(
        link_mac(&lan.host, &ports[0]).unwrap(),
        format!("fe{}", &mac[2..])
    );
    assert_eq!(link_mac(&lan.host, "br0").unwrap(), bridge_mac);

    ping_guest(&lan, console);
    let (status, err) = finish(&mut vm, Duration::from_secs(30));
    let console = console();
    assert_eq!(status.code(), Some(PASS), "{console}\n{err}");
    assert!(
        console.contains(&format!("icmp_replies={PINGS} udp_sent={UDP}")),
        "{console}"
    );
    assert!(console.contains("bad_num_buffers=0"), "{console}");
    let mut line = String::new();
    sink_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), format!("GOT {UDP}"), "UDP at lan\n{console}");
    // The guest ended rvmm: the tap is gone right away, not just eventually.
    assert_eq!(link_mac(&lan.host, &ports[0]), None, "tap left behind");
    assert!(tap_ports(&lan.host).is_empty());
}

#[test]
fn bridge_tap_is_deleted_after_ctrl_c_sigterm_and_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new("rns");
    let prefix = ["ip", "netns", "exec", lan.host.as_str()];
    let mut macs = Vec::new();
    for (sig, code) in [
        (libc::SIGINT, Some(128 + libc::SIGINT)),
        (libc::SIGTERM, Some(128 + libc::SIGTERM)),
        (libc::SIGKILL, None),
    ] {
        let serial = dir.path().join(format!("serial{sig}.txt"));
        // The guest serves until it has answered 1000 pings: only the signal ends it.
        let mut vm = Reap(
            rvmm(
                &prefix,
                &serial,
                "udp=1 pings=1000 serve_ms=60000",
                &["--bridge", "br0"],
            )
            .spawn()
            .unwrap(),
        );
        wait_serial(
            &serial,
            "virtio-net: ready",
            &mut vm,
            Duration::from_secs(30),
        );
        let ports = tap_ports(&lan.host);
        assert_eq!(ports.len(), 1, "signal {sig}: {ports:?}");
        macs.push(guest_mac(&std::fs::read_to_string(&serial).unwrap()));
        // `ip netns exec` execs rvmm, so this pid is rvmm's.
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(vm.0.id() as i32, sig) }, 0);
        let (status, err) = finish(&mut vm, Duration::from_secs(20));
        if let Some(code) = code {
            assert_eq!(status.code(), Some(code), "signal {sig}: {err}");
            assert_eq!(
                link_mac(&lan.host, &ports[0]),
                None,
                "signal {sig}: tap left"
            );
        } else {
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(sig)
            );
            // The kernel deletes a non-persistent tap when its last fd closes.
            assert!(
                gone_within(&lan.host, &ports[0], Duration::from_secs(5)),
                "tap {} outlived a SIGKILLed rvmm",
                ports[0]
            );
        }
        assert!(tap_ports(&lan.host).is_empty());
    }
    // Same VM (same kernel path, no disk): the same derived MAC every time.
    assert!(macs.iter().all(|m| *m == macs[0]), "{macs:?}");
}

#[test]
fn bridge_without_cap_net_admin_fails_naming_the_fixes() {
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new("rnc");
    let serial = dir.path().join("serial.txt");
    // Root without CAP_NET_ADMIN: dropped from the bounding set, so rvmm never has it.
    let prefix = [
        "ip",
        "netns",
        "exec",
        lan.host.as_str(),
        "setpriv",
        "--bounding-set",
        "-net_admin",
    ];
    let mut vm = Reap(
        rvmm(&prefix, &serial, "", &["--bridge", "br0"])
            .spawn()
            .unwrap(),
    );
    let (status, err) = finish(&mut vm, Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{err}");
    for fix in [
        "CAP_NET_ADMIN",
        "run rvmm as root",
        "setcap",
        "--tap",
        "--bridge br0",
    ] {
        assert!(err.contains(fix), "no {fix:?} in: {err}");
    }
    assert!(tap_ports(&lan.host).is_empty());
    assert!(
        !Path::new(&serial).exists() || std::fs::read_to_string(&serial).unwrap().is_empty(),
        "the guest must not boot"
    );
}

#[test]
fn tap_with_mac_reaches_the_guest_and_the_users_tap_stays() {
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new("rnt");
    sh(&format!(
        "ip -n {h} tuntap add dev rntap0 mode tap vnet_hdr && \
         ip -n {h} link set rntap0 master br0 && ip -n {h} link set rntap0 up",
        h = lan.host
    ));
    let prefix = ["ip", "netns", "exec", lan.host.as_str()];
    let console = exchange(
        &lan,
        dir.path(),
        &prefix,
        &["--tap", "rntap0", "--mac", "52:54:00:12:34:56"],
    );
    assert_eq!(guest_mac(&console), "52:54:00:12:34:56");
    // A tap rvmm did not create is left as it was: still there, still a port of br0.
    assert_eq!(tap_ports(&lan.host), vec!["rntap0".to_string()]);
}

#[test]
fn net_fd_tap_reaches_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new("rnf");
    let prefix = [
        "ip",
        "netns",
        "exec",
        lan.host.as_str(),
        "python3",
        "-c",
        WITH_TAP_FD,
        "rnfd0",
    ];
    let console = exchange(
        &lan,
        dir.path(),
        &prefix,
        &["--net-fd", "5,mac=52:54:00:00:0f:d5"],
    );
    assert_eq!(guest_mac(&console), "52:54:00:00:0f:d5");
    // rvmm held the only fd of the non-persistent tap.
    assert!(gone_within(&lan.host, "rnfd0", Duration::from_secs(5)));
}
