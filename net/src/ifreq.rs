//! Thin wrappers around the `struct ifreq` ioctls (interface index, MTU, MAC, flags, bridge
//! ports). All `unsafe` of the crate's interface handling lives here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::{MacAddr, NetError, Result};

/// Linux `SIOCBRADDIF`: add the interface with `ifr_ifindex` to the bridge named in `ifr_name`.
const SIOCBRADDIF: libc::c_ulong = 0x89a2;
/// Linux `SIOCBRDELIF`: remove it again.
const SIOCBRDELIF: libc::c_ulong = 0x89a3;

/// Checks that `name` is a valid Linux interface name (the kernel's `dev_valid_name`).
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(NetError::BadName(name.to_string()))
    }
}

/// An all-zero `ifreq` carrying `name`.
pub(crate) fn ifreq_for(name: &str) -> Result<libc::ifreq> {
    check_name(name)?;
    // SAFETY: ifreq is plain old data (a name array and a union of integers/pointers); all-zero
    // is a valid value for every member.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(ifr)
}

/// The interface name stored in an `ifreq` (after the kernel filled it in).
pub(crate) fn ifreq_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Issue an ioctl that takes a `struct ifreq *` on `fd`.
pub(crate) fn ioctl_ifreq(fd: RawFd, req: libc::c_ulong, ifr: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: every request used with this helper reads/writes at most one `struct ifreq`, and
    // `ifr` is a valid, exclusively borrowed one for the duration of the call.
    let rc = unsafe { libc::ioctl(fd, req as _, ifr as *mut libc::ifreq) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Issue an ioctl that takes a plain integer argument (TUNSETOFFLOAD) on `fd`.
pub(crate) fn ioctl_int(fd: RawFd, req: libc::c_ulong, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the request takes its argument by value; no memory is passed to the kernel.
    let rc = unsafe { libc::ioctl(fd, req as _, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Issue an ioctl that takes a `int *` argument (TUNSETVNETHDRSZ) on `fd`.
pub(crate) fn ioctl_int_ptr(
    fd: RawFd,
    req: libc::c_ulong,
    arg: &mut libc::c_int,
) -> io::Result<()> {
    // SAFETY: the request reads or writes exactly one int through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(fd, req as _, arg as *mut libc::c_int) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A datagram socket used only as a handle for interface ioctls.
pub(crate) struct CtlSocket(OwnedFd);

impl CtlSocket {
    /// Open one (`AF_UNIX` needs no network address family and works in every namespace).
    pub(crate) fn new() -> io::Result<CtlSocket> {
        // SAFETY: plain socket(2) call; the result is checked before being wrapped.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        Ok(CtlSocket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn run(
        &self,
        op: &'static str,
        name: &str,
        req: libc::c_ulong,
        ifr: &mut libc::ifreq,
    ) -> Result<()> {
        ioctl_ifreq(self.0.as_raw_fd(), req, ifr).map_err(|source| {
            if source.raw_os_error() == Some(libc::EPERM) {
                NetError::NoNetAdmin {
                    what: format!("{op} on {name}"),
                }
            } else {
                NetError::Interface {
                    op,
                    name: name.to_string(),
                    source,
                }
            }
        })
    }

    /// The interface index of `name`.
    pub(crate) fn index(&self, name: &str) -> Result<i32> {
        let mut ifr = ifreq_for(name)?;
        self.run("SIOCGIFINDEX", name, libc::SIOCGIFINDEX, &mut ifr)?;
        // SAFETY: SIOCGIFINDEX filled the ifindex member of the union.
        Ok(unsafe { ifr.ifr_ifru.ifru_ifindex })
    }

    /// The MTU of `name`.
    pub(crate) fn mtu(&self, name: &str) -> Result<u32> {
        let mut ifr = ifreq_for(name)?;
        self.run("SIOCGIFMTU", name, libc::SIOCGIFMTU, &mut ifr)?;
        // SAFETY: SIOCGIFMTU filled the mtu member of the union.
        let mtu = unsafe { ifr.ifr_ifru.ifru_mtu };
        Ok(mtu.max(0) as u32)
    }

    /// Set the MTU of `name`.
    pub(crate) fn set_mtu(&self, name: &str, mtu: u32) -> Result<()> {
        let mut ifr = ifreq_for(name)?;
        ifr.ifr_ifru.ifru_mtu = mtu.min(i32::MAX as u32) as i32;
        self.run("SIOCSIFMTU", name, libc::SIOCSIFMTU, &mut ifr)
    }

    /// Set the Ethernet address of `name`.
    pub(crate) fn set_mac(&self, name: &str, mac: MacAddr) -> Result<()> {
        let mut ifr = ifreq_for(name)?;
        // SAFETY: sockaddr is plain old data; all-zero is valid.
        let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
        sa.sa_family = libc::ARPHRD_ETHER;
        for (dst, src) in sa.sa_data.iter_mut().zip(mac.bytes()) {
            *dst = src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_hwaddr = sa;
        self.run("SIOCSIFHWADDR", name, libc::SIOCSIFHWADDR, &mut ifr)
    }

    /// Bring `name` administratively up.
    pub(crate) fn set_up(&self, name: &str) -> Result<()> {
        let mut ifr = ifreq_for(name)?;
        self.run("SIOCGIFFLAGS", name, libc::SIOCGIFFLAGS, &mut ifr)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let flags = unsafe { ifr.ifr_ifru.ifru_flags };
        ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        self.run("SIOCSIFFLAGS", name, libc::SIOCSIFFLAGS, &mut ifr)
    }

    /// Make interface `ifindex` a port of `bridge`.
    pub(crate) fn bridge_add(&self, bridge: &str, ifindex: i32) -> Result<()> {
        let mut ifr = ifreq_for(bridge)?;
        ifr.ifr_ifru.ifru_ifindex = ifindex;
        self.run("SIOCBRADDIF", bridge, SIOCBRADDIF, &mut ifr)
    }

    /// Remove interface `ifindex` from `bridge`.
    pub(crate) fn bridge_del(&self, bridge: &str, ifindex: i32) -> Result<()> {
        let mut ifr = ifreq_for(bridge)?;
        ifr.ifr_ifru.ifru_ifindex = ifindex;
        self.run("SIOCBRDELIF", bridge, SIOCBRDELIF, &mut ifr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked() {
        for ok in ["br0", "tap0", "rvmm%d", "a", "fifteen-chars-x"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "sixteen-chars-xx", "a/b", "a:b", "a b", ".", ".."] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ifreq_round_trips_name() {
        let ifr = ifreq_for("br0").unwrap();
        assert_eq!(ifreq_name(&ifr), "br0");
    }

    #[test]
    fn loopback_is_visible() {
        let s = CtlSocket::new().unwrap();
        assert!(s.index("lo").unwrap() > 0);
        assert!(s.mtu("lo").unwrap() > 0);
        assert!(matches!(
            s.index("nosuchif0"),
            Err(NetError::Interface { .. })
        ));
    }
}
