//! Tap devices from `/dev/net/tun`: frames with a virtio-net header in front
//! (`IFF_VNET_HDR`), optional multi-queue, offloads following what the guest accepted.
//!
//! rvmm never makes a tap persistent: a tap it creates exists exactly as long as one of its queue
//! fds is open, so the kernel deletes it (and its bridge port) on every exit path, SIGKILL
//! included. [`Tap`] is that guard.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use crate::ifreq::{self, CtlSocket};
use crate::{MacAddr, NetError, Result};

/// Size of the virtio-net header in front of every frame (`struct virtio_net_hdr_v1`, used
/// whenever VIRTIO_F_VERSION_1 or MRG_RXBUF is negotiated, which rvmm always does).
pub const VNET_HDR_LEN: usize = 12;

/// `TUNGETIFF`: read back the name and flags of the tap behind an fd.
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
/// `TUNSETQUEUE`: attach or detach one queue of a multi-queue tap.
const TUNSETQUEUE: libc::c_ulong = 0x4004_54d9;
const IFF_ATTACH_QUEUE: libc::c_short = 0x0200;
const IFF_DETACH_QUEUE: libc::c_short = 0x0400;

/// Which offloads the tap may use when handing frames to us (i.e. what the guest can receive).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Frames may carry a partial checksum (guest accepted GUEST_CSUM).
    pub csum: bool,
    /// TCPv4 segmentation offload (GUEST_TSO4).
    pub tso4: bool,
    /// TCPv6 segmentation offload (GUEST_TSO6).
    pub tso6: bool,
    /// TSO with ECN (GUEST_ECN).
    pub ecn: bool,
    /// UDP fragmentation offload (GUEST_UFO).
    pub ufo: bool,
}

impl Offloads {
    /// The `TUN_F_*` bits for TUNSETOFFLOAD; segmentation offloads require checksum offload.
    pub fn tun_flags(&self) -> libc::c_uint {
        if !self.csum {
            return 0;
        }
        let mut f = libc::TUN_F_CSUM;
        if self.tso4 {
            f |= libc::TUN_F_TSO4;
        }
        if self.tso6 {
            f |= libc::TUN_F_TSO6;
        }
        if self.ecn && (self.tso4 || self.tso6) {
            f |= libc::TUN_F_TSO_ECN;
        }
        if self.ufo {
            f |= libc::TUN_F_UFO;
        }
        f
    }
}

/// One queue of a tap (one fd): reads and writes whole frames, each preceded by a
/// [`VNET_HDR_LEN`]-byte virtio-net header. Non-blocking.
#[derive(Debug)]
pub struct TapQueue {
    fd: OwnedFd,
    is_tap: bool,
}

impl TapQueue {
    /// Wrap a datagram socket that carries frames with a virtio-net header in front, exactly as a
    /// tap with `IFF_VNET_HDR` does (one datagram per frame). Used by tests and userspace switches;
    /// offload settings are no-ops on it.
    pub fn from_socket(fd: OwnedFd) -> io::Result<TapQueue> {
        set_nonblocking(fd.as_raw_fd())?;
        Ok(TapQueue { fd, is_tap: false })
    }

    /// Read one frame (header included) into `buf`; `WouldBlock` when none is queued.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid writable memory of the given length for the call's duration.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Write one frame (header included); `WouldBlock` when the tap's queue is full.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid readable memory of the given length for the call's duration.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Tell the tap which offloads the guest can take (TUNSETOFFLOAD).
    pub fn set_offloads(&self, offloads: Offloads) -> io::Result<()> {
        if !self.is_tap {
            return Ok(());
        }
        ifreq::ioctl_int(
            self.fd.as_raw_fd(),
            libc::TUNSETOFFLOAD as libc::c_ulong,
            offloads.tun_flags().into(),
        )
    }

    /// Attach (`true`) or detach this queue from a multi-queue tap (TUNSETQUEUE), so the kernel
    /// stops steering frames to queue pairs the guest does not use.
    pub fn set_enabled(&self, enabled: bool) -> io::Result<()> {
        if !self.is_tap {
            return Ok(());
        }
        let mut ifr = ifreq::ifreq_for("x").map_err(io::Error::other)?;
        ifr.ifr_ifru.ifru_flags = if enabled {
            IFF_ATTACH_QUEUE
        } else {
            IFF_DETACH_QUEUE
        };
        match ifreq::ioctl_ifreq(self.fd.as_raw_fd(), TUNSETQUEUE, &mut ifr) {
            // Single-queue taps refuse the request; they have nothing to steer.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && enabled => Ok(()),
            other => other,
        }
    }

    fn set_vnet_hdr_len(&self, len: usize) -> io::Result<()> {
        let mut l = len as libc::c_int;
        ifreq::ioctl_int_ptr(
            self.fd.as_raw_fd(),
            libc::TUNSETVNETHDRSZ as libc::c_ulong,
            &mut l,
        )
    }
}

impl AsRawFd for TapQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Mark `fd` close-on-exec. Our own opens already are, but `--net-fd` descriptors come from
/// the parent without it; any child rvmm spawned would then keep the tap alive after rvmm.
fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; F_GETFD/F_SETFD take integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; F_GETFL/F_SETFL take integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A tap interface with one or more queues, optionally a port of a bridge. Dropping it (closing
/// every queue) deletes a tap rvmm created; a pre-existing tap (`--tap`) is left in place.
#[derive(Debug)]
pub struct Tap {
    name: String,
    queues: Vec<Arc<TapQueue>>,
    bridge: Option<String>,
}

/// How [`Tap::attach`] explains EPERM: creating needs CAP_NET_ADMIN, opening someone else's tap
/// needs ownership.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Create,
    OpenExisting,
}

impl Tap {
    /// Create a new tap (name may be a template such as `rvmm%d`) with `queues` queues.
    /// Needs CAP_NET_ADMIN.
    pub fn create(name: &str, queues: u16) -> Result<Tap> {
        Self::attach(name, queues, Purpose::Create)
    }

    /// Open an existing tap `name` (for example one made with
    /// `ip tuntap add dev NAME mode tap user $USER`), which needs no privileges when the caller
    /// owns it. If it does not exist and the caller may create taps, a fresh one is created.
    pub fn open(name: &str, queues: u16) -> Result<Tap> {
        Self::attach(name, queues, Purpose::OpenExisting)
    }

    fn attach(name: &str, queues: u16, purpose: Purpose) -> Result<Tap> {
        ifreq::check_name(name)?;
        if queues == 0 {
            return Err(NetError::BadConfig(
                name.into(),
                "queues must be at least 1".into(),
            ));
        }
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        if queues > 1 {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        let mut actual = name.to_string();
        let mut qs = Vec::with_capacity(queues.into());
        for _ in 0..queues {
            let file = open_tun()?;
            let mut ifr = ifreq::ifreq_for(&actual)?;
            ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
            if let Err(source) =
                ifreq::ioctl_ifreq(file.as_raw_fd(), libc::TUNSETIFF as libc::c_ulong, &mut ifr)
            {
                return Err(tunsetiff_error(name, purpose, source));
            }
            actual = ifreq::ifreq_name(&ifr);
            qs.push(Self::queue_from_file(file, &actual)?);
        }
        log::debug!("tap {actual}: opened {queues} queue(s)");
        Ok(Tap {
            name: actual,
            queues: qs,
            bridge: None,
        })
    }

    fn queue_from_file(file: File, name: &str) -> Result<Arc<TapQueue>> {
        // SAFETY: into_raw_fd hands over sole ownership of the open descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(file.into_raw_fd()) };
        let q = TapQueue { fd, is_tap: true };
        let err = |source| NetError::Tap {
            name: name.to_string(),
            source,
        };
        q.set_vnet_hdr_len(VNET_HDR_LEN).map_err(err)?;
        set_nonblocking(q.as_raw_fd()).map_err(err)?;
        set_cloexec(q.as_raw_fd()).map_err(err)?;
        Ok(Arc::new(q))
    }

    /// Adopt pre-opened tap fds (`--net-fd`, as libvirt passes them). Each must be a tap opened
    /// with `IFF_VNET_HDR` and `IFF_NO_PI`.
    pub fn from_fds(fds: Vec<OwnedFd>) -> Result<Tap> {
        let mut name = String::new();
        let mut qs = Vec::with_capacity(fds.len());
        for fd in fds {
            let raw = fd.as_raw_fd();
            let mut ifr = ifreq::ifreq_for("x")?;
            ifreq::ioctl_ifreq(raw, TUNGETIFF, &mut ifr).map_err(|e| NetError::BadFd {
                fd: raw,
                reason: format!("TUNGETIFF failed ({e}); pass an fd opened on /dev/net/tun"),
            })?;
            // SAFETY: TUNGETIFF filled the flags member of the union.
            let flags = i32::from(unsafe { ifr.ifr_ifru.ifru_flags });
            let want = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
            if flags & want != want {
                return Err(NetError::BadFd {
                    fd: raw,
                    reason: format!(
                        "tap flags {flags:#x} lack IFF_TAP|IFF_NO_PI|IFF_VNET_HDR; open it in tap \
                         mode with vnet_hdr"
                    ),
                });
            }
            name = ifreq::ifreq_name(&ifr);
            qs.push(Self::queue_from_file(File::from(fd), &name)?);
        }
        if qs.is_empty() {
            return Err(NetError::BadConfig(
                "fd=".into(),
                "no file descriptor given".into(),
            ));
        }
        Ok(Tap {
            name,
            queues: qs,
            bridge: None,
        })
    }

    /// Create a tap for a guest with MAC `guest_mac` and make it a port of `bridge`: the tap
    /// gets the 0xFE-prefixed MAC ([`MacAddr::tap_for`]), the bridge's MTU, and is brought up.
    pub fn create_on_bridge(bridge: &str, guest_mac: MacAddr, queues: u16) -> Result<Tap> {
        let ctl = CtlSocket::new().map_err(|source| NetError::Tap {
            name: bridge.to_string(),
            source,
        })?;
        let mtu = crate::bridge::bridge_mtu_with(&ctl, bridge)?;
        let mut tap = Tap::create("rvmm%d", queues)?;
        ctl.set_mac(&tap.name, MacAddr::tap_for(guest_mac))?;
        ctl.set_mtu(&tap.name, mtu)?;
        let index = ctl.index(&tap.name)?;
        ctl.bridge_add(bridge, index).map_err(|e| match e {
            NetError::Interface { source, .. }
                if source.raw_os_error() == Some(libc::EOPNOTSUPP)
                    || source.raw_os_error() == Some(libc::EINVAL) =>
            {
                NetError::NoBridge {
                    name: bridge.to_string(),
                    source,
                }
            }
            other => other,
        })?;
        tap.bridge = Some(bridge.to_string());
        ctl.set_up(&tap.name)?;
        log::info!(
            "tap {} (mac {}, mtu {mtu}) attached to bridge {bridge}",
            tap.name,
            MacAddr::tap_for(guest_mac)
        );
        Ok(tap)
    }

    /// Bring the tap up (for `--tap` taps that are still down).
    pub fn set_up(&self) -> Result<()> {
        let ctl = CtlSocket::new().map_err(|source| NetError::Tap {
            name: self.name.clone(),
            source,
        })?;
        ctl.set_up(&self.name)
    }

    /// Interface name chosen by the kernel (or given).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tap's MTU (copied from the bridge for bridge ports).
    pub fn mtu(&self) -> Result<u32> {
        let ctl = CtlSocket::new().map_err(|source| NetError::Tap {
            name: self.name.clone(),
            source,
        })?;
        ctl.mtu(&self.name)
    }

    /// The bridge this tap was attached to by [`Tap::create_on_bridge`].
    pub fn bridge(&self) -> Option<&str> {
        self.bridge.as_deref()
    }

    /// The queues, one per virtio-net queue pair.
    pub fn queues(&self) -> &[Arc<TapQueue>] {
        &self.queues
    }

    /// Apply `offloads` (TUNSETOFFLOAD) to the tap.
    pub fn set_offloads(&self, offloads: Offloads) -> Result<()> {
        for q in &self.queues {
            q.set_offloads(offloads).map_err(|source| NetError::Tap {
                name: self.name.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        // The tap is not persistent: the kernel deletes it, and so its bridge port, once the
        // last queue fd closes. Detaching first makes that immediate even if a queue Arc is
        // still held elsewhere for a moment.
        if let Some(bridge) = &self.bridge {
            if let Ok(ctl) = CtlSocket::new() {
                if let Ok(index) = ctl.index(&self.name) {
                    if let Err(e) = ctl.bridge_del(bridge, index) {
                        log::debug!("detaching tap {} from {bridge}: {e}", self.name);
                    }
                }
            }
            log::info!("tap {} removed from bridge {bridge}", self.name);
        }
    }
}

fn open_tun() -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(NetError::OpenTun)
}

fn tunsetiff_error(name: &str, purpose: Purpose, source: io::Error) -> NetError {
    match (source.raw_os_error(), purpose) {
        (Some(libc::EPERM), Purpose::Create) => NetError::NoNetAdmin {
            what: "creating a tap for the bridge".into(),
        },
        (Some(libc::EPERM), Purpose::OpenExisting) => NetError::Tap {
            name: name.to_string(),
            source: io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{source}: the tap does not exist or belongs to another user; have root run \
                     `ip tuntap add dev {name} mode tap vnet_hdr user $USER`"
                ),
            ),
        },
        (Some(libc::EINVAL), _) => NetError::Tap {
            name: name.to_string(),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{source}: an interface of that name exists but is not a tap, or its \
                     multi_queue setting differs from the queues= requested"
                ),
            ),
        },
        _ => NetError::Tap {
            name: name.to_string(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_flags_follow_guest_features() {
        assert_eq!(Offloads::default().tun_flags(), 0);
        let tso_without_csum = Offloads {
            tso4: true,
            ..Default::default()
        };
        assert_eq!(tso_without_csum.tun_flags(), 0);
        let all = Offloads {
            csum: true,
            tso4: true,
            tso6: true,
            ecn: true,
            ufo: true,
        };
        assert_eq!(
            all.tun_flags(),
            libc::TUN_F_CSUM
                | libc::TUN_F_TSO4
                | libc::TUN_F_TSO6
                | libc::TUN_F_TSO_ECN
                | libc::TUN_F_UFO
        );
    }

    #[test]
    fn socket_queue_moves_datagrams() {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two descriptors into the array.
        let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, fds.as_mut_ptr()) };
        assert_eq!(rc, 0);
        // SAFETY: both are fresh descriptors we own.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let a = TapQueue::from_socket(a).unwrap();
        let b = TapQueue::from_socket(b).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(
            b.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        a.write(b"hello").unwrap();
        assert_eq!(b.read(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        a.set_offloads(Offloads::default()).unwrap();
    }

    #[test]
    fn non_tap_fd_is_rejected() {
        let f = File::open("/dev/null").unwrap();
        let err = Tap::from_fds(vec![OwnedFd::from(f)]).unwrap_err();
        assert!(matches!(err, NetError::BadFd { .. }), "{err}");
    }
}
