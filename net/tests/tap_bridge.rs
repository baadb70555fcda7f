//! Real-kernel tests of taps and bridge ports. Each test runs on a thread moved into a fresh,
//! anonymous network namespace, so whatever it creates (bridge, veth, taps) disappears with
//! the thread, even when an assertion fails.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;

use net::{MacAddr, NetConfig, NetError, Offloads, Tap, VNET_HDR_LEN};

/// Run `f` on a new thread inside a new network namespace; panics propagate.
fn in_new_netns<F: FnOnce() + Send + 'static>(f: F) {
    std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespace membership.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        f();
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

/// Run a shell command in the current thread's namespace; returns stdout, panics on failure.
fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .unwrap()
        .status
        .success()
}

/// Poll until link `name` disappears; false if it is still there after `limit`.
fn gone_within(name: &str, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while link_exists(name) {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

/// br0 with MTU 9000 and a veth `uplink0` (standing in for bond0) as its first port.
fn make_bridge() {
    sh(
        "ip link add br0 type bridge && ip link add uplink0 mtu 9000 type veth peer name peer0 \
        mtu 9000 && ip link set uplink0 master br0 && ip link set br0 mtu 9000 && \
        ip link set uplink0 up && ip link set peer0 up && ip link set br0 up",
    );
}

fn mac_of(dev: &str) -> String {
    let out = sh(&format!("ip -o link show dev {dev}"));
    let i = out.find("link/ether ").unwrap() + "link/ether ".len();
    out[i..i + 17].to_string()
}

#[test]
fn bridge_port_is_attached_configured_and_removed_on_drop() {
    in_new_netns(|| {
        make_bridge();
        let br_mac = mac_of("br0");
        let guest: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        let tap = Tap::create_on_bridge("br0", guest, 1).unwrap();
        let name = tap.name().to_string();
        assert!(name.starts_with("rvmm"), "{name}");
        assert_eq!(tap.bridge(), Some("br0"));
        let link = sh(&format!("ip -d -o link show dev {name}"));
        assert!(link.contains("master br0"), "{link}");
        assert!(link.contains("mtu 9000"), "{link}");
        assert!(link.contains("fe:54:00:12:34:56"), "{link}");
        assert!(link.contains(",UP"), "{link}");
        assert!(link.contains("vnet_hdr on"), "{link}");
        assert!(!link.contains("persist on"), "{link}");
        assert_eq!(mac_of("br0"), br_mac, "bridge MAC changed by the tap");
        drop(tap);
        // Other test threads spawn commands: a child between fork and exec holds a copy of the
        // (O_CLOEXEC) tap fd until its exec, so the kernel may delete the tap a moment later.
        assert!(
            gone_within(&name, std::time::Duration::from_secs(10)),
            "{name} still exists 10 s after drop"
        );
    });
}

#[test]
fn frames_flow_between_tap_and_bridge() {
    in_new_netns(|| {
        make_bridge();
        sh("ip addr add 10.0.0.1/24 dev br0");
        let guest: MacAddr = "52:54:00:00:00:02".parse().unwrap();
        let tap = Tap::create_on_bridge("br0", guest, 1).unwrap();
        tap.set_offloads(Offloads::default()).unwrap();
        let q = &tap.queues()[0];
        // ARP who-has 10.0.0.1 tell 10.0.0.2, behind an all-zero virtio-net header.
        let mut frame = vec![0u8; VNET_HDR_LEN];
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&guest.bytes());
        frame.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        frame.extend_from_slice(&guest.bytes());
        frame.extend_from_slice(&[10, 0, 0, 2]);
        frame.extend_from_slice(&[0; 6]);
        frame.extend_from_slice(&[10, 0, 0, 1]);
        // The tap only forwards once the bridge port left the listening state; retry for a bit.
        let mut buf = vec![0u8; 2048];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "no ARP reply from br0"
            );
            q.write(&frame).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(50));
            let mut got_reply = false;
            while let Ok(n) = q.read(&mut buf) {
                let eth = &buf[VNET_HDR_LEN..n];
                if eth.len() >= 42 && eth[12..14] == [0x08, 0x06] && eth[20..22] == [0, 2] {
                    assert_eq!(
                        &eth[0..6],
                        &guest.bytes(),
                        "reply not addressed to the guest"
                    );
                    assert_eq!(&eth[28..32], &[10, 0, 0, 1]);
                    got_reply = true;
                }
            }
            if got_reply {
                break;
            }
        }
    });
}

#[test]
fn multi_queue_tap_has_one_fd_per_queue() {
    in_new_netns(|| {
        make_bridge();
        let tap = Tap::create_on_bridge("br0", MacAddr::for_guest("mq", 0), 3).unwrap();
        assert_eq!(tap.queues().len(), 3);
        let fds: Vec<i32> = tap.queues().iter().map(|q| q.as_raw_fd()).collect();
        assert!(fds[0] != fds[1] && fds[1] != fds[2]);
        let link = sh(&format!("ip -d -o link show dev {}", tap.name()));
        assert!(link.contains("multi_queue numqueues 3"), "{link}");
        assert_eq!(tap.mtu().unwrap(), 9000);
        tap.queues()[2].set_enabled(false).unwrap();
        let link = sh(&format!("ip -d -o link show dev {}", tap.name()));
        assert!(link.contains("numqueues 2 numdisabled 1"), "{link}");
        tap.queues()[2].set_enabled(true).unwrap();
    });
}

#[test]
fn existing_tap_is_opened_and_kept() {
    in_new_netns(|| {
        sh("ip tuntap add dev keep0 mode tap vnet_hdr");
        let cfg: NetConfig = "tap=keep0".parse().unwrap();
        let tap = cfg.open(MacAddr::for_guest("t", 0)).unwrap().unwrap();
        assert_eq!(tap.name(), "keep0");
        assert!(sh("ip -o link show dev keep0").contains(",UP"));
        drop(tap);
        assert!(link_exists("keep0"), "a pre-existing tap must survive");
    });
}

#[test]
fn pre_opened_fd_is_adopted() {
    in_new_netns(|| {
        let tap = Tap::create("fdtap%d", 1).unwrap();
        // SAFETY: dup of a descriptor we hold; the copy is owned by the OwnedFd below.
        let dup = unsafe { libc::dup(tap.queues()[0].as_raw_fd()) };
        assert!(dup > 2);
        let cfg = NetConfig::from_flag("--net-fd", &dup.to_string()).unwrap();
        let adopted = cfg.open(MacAddr::for_guest("t", 0)).unwrap().unwrap();
        assert_eq!(adopted.name(), tap.name());
        assert_eq!(adopted.queues().len(), 1);
        // dup() gave a descriptor without FD_CLOEXEC; adopting it must set the flag.
        // SAFETY: F_GETFD on a descriptor `adopted` holds.
        let fd_flags = unsafe { libc::fcntl(adopted.queues()[0].as_raw_fd(), libc::F_GETFD) };
        assert!(
            fd_flags >= 0 && fd_flags & libc::FD_CLOEXEC != 0,
            "{fd_flags}"
        );
    });
}

#[test]
fn missing_bridge_is_reported_by_name() {
    in_new_netns(|| {
        let err = Tap::create_on_bridge("nobr0", MacAddr::for_guest("x", 0), 1).unwrap_err();
        assert!(matches!(err, NetError::NoBridge { .. }), "{err}");
        assert!(err.to_string().contains("nobr0"));
        // A bridge name that is an ordinary interface is refused too, and no tap is left over.
        sh("ip link add dum0 type veth peer name dum1");
        let err = Tap::create_on_bridge("dum0", MacAddr::for_guest("x", 0), 1).unwrap_err();
        assert!(matches!(err, NetError::NoBridge { .. }), "{err}");
        assert!(!sh("ip -o link").contains("rvmm"), "tap left behind");
    });
}

/// Remove CAP_NET_ADMIN from this thread's effective set (capabilities are per thread).
fn drop_net_admin() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut hdr = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset read/write one header and two data structs, which we pass.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()),
            0
        );
        data[0].effective &= !(1 << 12); // CAP_NET_ADMIN
        assert_eq!(libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()), 0);
    }
}

#[test]
fn without_cap_net_admin_bridge_fails_with_the_fixes() {
    in_new_netns(|| {
        make_bridge();
        drop_net_admin();
        let cfg: NetConfig = "bridge=br0".parse().unwrap();
        let err = cfg.open(MacAddr::for_guest("x", 0)).unwrap_err();
        assert!(matches!(err, NetError::NoNetAdmin { .. }), "{err}");
        let msg = err.to_string();
        for fix in ["root", "setcap cap_net_admin", "ip tuntap add", "--tap"] {
            assert!(msg.contains(fix), "message lacks {fix:?}: {msg}");
        }
    });
}

#[test]
fn socket_stand_in_is_not_a_tap() {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills two descriptors.
    assert_eq!(
        unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, fds.as_mut_ptr()) },
        0
    );
    // SAFETY: fresh descriptors owned from here on.
    let (a, _b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    assert!(matches!(
        Tap::from_fds(vec![a]),
        Err(NetError::BadFd { .. })
    ));
}
