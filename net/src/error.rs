//! Errors of the host networking layer.

use std::io;

/// What went wrong while setting up or using a host network interface.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Creating a tap or attaching it to a bridge needs CAP_NET_ADMIN, which this process lacks.
    #[error(
        "{what} needs CAP_NET_ADMIN: run rvmm as root, or grant the capability with \
         `setcap cap_net_admin+ep <path to rvmm>`, or have root pre-create a tap you own with \
         `ip tuntap add dev tap0 mode tap vnet_hdr user $USER && ip link set tap0 master <bridge> up` \
         and pass `--tap tap0` instead of `--bridge`"
    )]
    NoNetAdmin {
        /// The operation that was refused.
        what: String,
    },
    /// `/dev/net/tun` could not be opened.
    #[error("cannot open /dev/net/tun: {0} (load the tun module: `modprobe tun`)")]
    OpenTun(#[source] io::Error),
    /// A tap interface could not be created or attached.
    #[error("cannot set up tap {name:?}: {source}")]
    Tap {
        /// Interface name (or template) involved.
        name: String,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// An interface-level ioctl (MTU, MAC, flags, index) failed.
    #[error("{op} on interface {name:?} failed: {source}")]
    Interface {
        /// What was attempted.
        op: &'static str,
        /// Interface name.
        name: String,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// The named bridge does not exist or is not a bridge.
    #[error(
        "bridge {name:?} not found or not a bridge: {source} (create it with \
         `ip link add {name} type bridge`, see docs/networking.md)"
    )]
    NoBridge {
        /// Bridge name.
        name: String,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// An interface name is empty, too long (> 15 bytes) or contains forbidden characters.
    #[error("invalid interface name {0:?}: use 1-15 characters without '/', ':' or whitespace")]
    BadName(String),
    /// A file descriptor handed in is not usable as a tap queue.
    #[error("fd {fd} is not a usable tap: {reason}")]
    BadFd {
        /// The descriptor number.
        fd: i32,
        /// Why it was rejected.
        reason: String,
    },
    /// A MAC address string could not be parsed.
    #[error("invalid MAC address {0:?}: expected six hex bytes such as 52:54:00:12:34:56")]
    BadMac(String),
    /// A `--net`/`--bridge`/`--tap` option string could not be parsed.
    #[error("invalid network option {0:?}: {1}")]
    BadConfig(String, String),
}
