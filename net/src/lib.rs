//! Host side of rvmm networking: tap devices (`IFF_VNET_HDR`, offloads, multi-queue), attaching
//! them to a bridge such as `br0` and removing them again, and MAC address helpers. It knows
//! nothing about virtio; the virtio-net device in `devices` moves frames between these taps and
//! guest memory.

mod bridge;
mod config;
mod error;
mod ifreq;
mod mac;
mod tap;

pub use bridge::{bridge_mtu, BridgePort};
pub use config::{NetBackendConfig, NetConfig, MAX_QUEUE_PAIRS};
pub use error::NetError;
pub use mac::MacAddr;
pub use tap::{Offloads, Tap, TapQueue, VNET_HDR_LEN};

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, NetError>;
