//! One guest NIC as the command line describes it (`--bridge`, `--tap`, `--net-fd`, `--net none`,
//! `--mac`), validated once and opened into a [`Tap`].

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::str::FromStr;

use crate::{MacAddr, NetError, Result, Tap};

/// Most queue pairs one NIC may ask for.
pub const MAX_QUEUE_PAIRS: u16 = 16;

/// Where a NIC's frames go on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetBackendConfig {
    /// Create a tap and make it a port of this bridge (`--bridge br0`; needs CAP_NET_ADMIN).
    Bridge(String),
    /// Use the existing tap of this name (`--tap tap0`; no privileges if the user owns it).
    Tap(String),
    /// Use these already-open tap fds, one per queue pair (`--net-fd 3` or `fd=3:4`).
    Fd(Vec<RawFd>),
    /// No NIC (`--net none`).
    None,
}

/// One NIC: backend, guest MAC (derived from the VM name when absent) and queue pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Host side of the NIC.
    pub backend: NetBackendConfig,
    /// Guest MAC; `None` means [`MacAddr::for_guest`].
    pub mac: Option<MacAddr>,
    /// Number of rx/tx queue pairs (multi-queue when > 1).
    pub queues: u16,
}

impl NetConfig {
    /// Parse the value of a flag: `kind` is `bridge`, `tap`, `net-fd` or `net`, and `value` its
    /// argument, e.g. (`bridge`, `br0,mac=52:54:00:00:00:01,queues=2`) or (`net`, `none`).
    pub fn from_flag(kind: &str, value: &str) -> Result<NetConfig> {
        let key = match kind.trim_start_matches('-') {
            "bridge" => "bridge",
            "tap" => "tap",
            "net-fd" | "fd" => "fd",
            "net" => return value.parse(),
            other => {
                return Err(NetError::BadConfig(
                    other.into(),
                    "unknown flag; use --bridge, --tap, --net-fd or --net".into(),
                ))
            }
        };
        format!("{key}={value}").parse()
    }

    /// The guest MAC for NIC number `index` of the VM called `vm_name`.
    pub fn guest_mac(&self, vm_name: &str, index: u32) -> MacAddr {
        self.mac
            .unwrap_or_else(|| MacAddr::for_guest(vm_name, index))
    }

    /// Open the host side: `Ok(None)` for `--net none`. For `fd=` it takes ownership of the
    /// descriptors, so call it once per configuration.
    pub fn open(&self, guest_mac: MacAddr) -> Result<Option<Tap>> {
        let tap = match &self.backend {
            NetBackendConfig::None => return Ok(None),
            NetBackendConfig::Bridge(br) => Tap::create_on_bridge(br, guest_mac, self.queues)?,
            NetBackendConfig::Tap(name) => {
                let tap = Tap::open(name, self.queues)?;
                // A user-owned tap may still be down; bringing it up needs CAP_NET_ADMIN, so
                // failure is only worth a warning (the admin may bring it up).
                if let Err(e) = tap.set_up() {
                    log::warn!(
                        "tap {name}: could not bring it up ({e}); run `ip link set {name} up`"
                    );
                }
                tap
            }
            NetBackendConfig::Fd(fds) => {
                // Owning a descriptor that is closed, or owning one twice, would make the
                // process abort when the second owner closes it: refuse both up front.
                for (i, &fd) in fds.iter().enumerate() {
                    if fds[..i].contains(&fd) {
                        return Err(NetError::BadConfig(
                            format!("fd={fd}"),
                            "the same descriptor is named twice".into(),
                        ));
                    }
                    // SAFETY: F_GETFD only reads the descriptor table entry; no memory involved.
                    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                        return Err(NetError::BadConfig(
                            format!("fd={fd}"),
                            "no such open file descriptor (pass it from the parent process)".into(),
                        ));
                    }
                }
                let owned = fds
                    .iter()
                    .map(|&fd| {
                        // SAFETY: the caller passed these descriptors to us (inherited fds named
                        // on the command line) and they are used by nothing else in rvmm.
                        unsafe { OwnedFd::from_raw_fd(fd) }
                    })
                    .collect();
                Tap::from_fds(owned)?
            }
        };
        Ok(Some(tap))
    }
}

impl FromStr for NetConfig {
    type Err = NetError;

    /// `bridge=BR|tap=NAME|fd=N[:M…]|none` followed by optional `,mac=XX:…` and `,queues=N`.
    fn from_str(s: &str) -> Result<NetConfig> {
        let bad = |why: &str| NetError::BadConfig(s.to_string(), why.to_string());
        let mut parts = s.split(',');
        let first = parts.next().unwrap_or_default();
        let backend = match first.split_once('=') {
            None if first == "none" => NetBackendConfig::None,
            Some(("bridge", br)) => {
                crate::ifreq::check_name(br)?;
                NetBackendConfig::Bridge(br.to_string())
            }
            Some(("tap", name)) => {
                crate::ifreq::check_name(name)?;
                NetBackendConfig::Tap(name.to_string())
            }
            Some(("fd", list)) => {
                let fds = list
                    .split(':')
                    .map(|f| f.parse::<RawFd>().ok().filter(|&fd| fd > 2))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("fd= wants descriptor numbers above 2, e.g. fd=3:4"))?;
                NetBackendConfig::Fd(fds)
            }
            _ => return Err(bad("start with bridge=BR, tap=NAME, fd=N or none")),
        };
        let mut cfg = NetConfig {
            backend,
            mac: None,
            queues: 1,
        };
        let mut queues_given = false;
        for opt in parts {
            match opt.split_once('=') {
                Some(("mac", m)) => cfg.mac = Some(m.parse()?),
                Some(("queues", q)) => {
                    cfg.queues = q
                        .parse::<u16>()
                        .ok()
                        .filter(|q| (1..=MAX_QUEUE_PAIRS).contains(q))
                        .ok_or_else(|| bad("queues= must be 1 to 16"))?;
                    queues_given = true;
                }
                _ => return Err(bad("options are mac=XX:XX:XX:XX:XX:XX and queues=N")),
            }
        }
        if let NetBackendConfig::Fd(fds) = &cfg.backend {
            let n = fds.len() as u16;
            if queues_given && cfg.queues != n {
                return Err(bad("give one fd per queue pair"));
            }
            cfg.queues = n;
        }
        if cfg.backend == NetBackendConfig::None && (cfg.mac.is_some() || queues_given) {
            return Err(bad("none takes no options"));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_backend() {
        let c: NetConfig = "bridge=br0".parse().unwrap();
        assert_eq!(c.backend, NetBackendConfig::Bridge("br0".into()));
        assert_eq!((c.mac, c.queues), (None, 1));

        let c = NetConfig::from_flag("--tap", "tap7,mac=52:54:00:00:00:07,queues=4").unwrap();
        assert_eq!(c.backend, NetBackendConfig::Tap("tap7".into()));
        assert_eq!(c.mac, Some("52:54:00:00:00:07".parse().unwrap()));
        assert_eq!(c.queues, 4);

        let c = NetConfig::from_flag("net-fd", "5:6").unwrap();
        assert_eq!(c.backend, NetBackendConfig::Fd(vec![5, 6]));
        assert_eq!(c.queues, 2);

        let c = NetConfig::from_flag("net", "none").unwrap();
        assert_eq!(c.backend, NetBackendConfig::None);
    }

    #[test]
    fn closed_or_repeated_fds_are_refused_before_being_owned() {
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let closed = NetConfig::from_flag("net-fd", "999999").unwrap();
        assert!(matches!(closed.open(mac), Err(NetError::BadConfig(..))));
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::unix::io::AsRawFd::as_raw_fd(&file);
        let twice = NetConfig::from_flag("net-fd", &format!("{fd}:{fd}")).unwrap();
        assert!(matches!(twice.open(mac), Err(NetError::BadConfig(..))));
        drop(file); // still ours: nothing took ownership of it
    }

    #[test]
    fn rejects_bad_options() {
        for s in [
            "",
            "bridge=",
            "bridge=this-name-is-too-long",
            "tap=a/b",
            "fd=x",
            "fd=1",
            "fd=3:4,queues=3",
            "bridge=br0,queues=0",
            "bridge=br0,queues=17",
            "bridge=br0,mac=zz",
            "bridge=br0,speed=10",
            "none,queues=2",
            "vde=sw",
        ] {
            assert!(s.parse::<NetConfig>().is_err(), "{s:?} accepted");
        }
        assert!(NetConfig::from_flag("--vde", "x").is_err());
    }

    #[test]
    fn guest_mac_defaults_to_derived_one() {
        let c: NetConfig = "bridge=br0".parse().unwrap();
        assert_eq!(c.guest_mac("vm", 0), MacAddr::for_guest("vm", 0));
        let c: NetConfig = "bridge=br0,mac=52:54:00:aa:bb:cc".parse().unwrap();
        assert_eq!(c.guest_mac("vm", 0).to_string(), "52:54:00:aa:bb:cc");
    }

    #[test]
    fn none_opens_nothing() {
        let c: NetConfig = "none".parse().unwrap();
        assert!(c.open(MacAddr::for_guest("vm", 0)).unwrap().is_none());
    }
}
