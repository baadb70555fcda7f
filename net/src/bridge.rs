//! Linux bridges as seen by rvmm: their MTU, and the tap ports rvmm adds to them (the port
//! itself is a [`Tap`] made by [`Tap::create_on_bridge`]).

use crate::ifreq::CtlSocket;
use crate::{NetError, Result, Tap};

/// A tap that is a port of a bridge; deleting it (drop) removes the port.
pub type BridgePort = Tap;

/// The MTU of `bridge`, which every tap added to it copies so guests can use jumbo frames when
/// the LAN does.
pub fn bridge_mtu(bridge: &str) -> Result<u32> {
    let ctl = CtlSocket::new().map_err(|source| NetError::Tap {
        name: bridge.to_string(),
        source,
    })?;
    bridge_mtu_with(&ctl, bridge)
}

pub(crate) fn bridge_mtu_with(ctl: &CtlSocket, bridge: &str) -> Result<u32> {
    ctl.mtu(bridge).map_err(|e| match e {
        NetError::Interface { source, .. } => NetError::NoBridge {
            name: bridge.to_string(),
            source,
        },
        other => other,
    })
}
