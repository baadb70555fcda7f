//! virtio-net feature bits, config-space layout and control-queue codes (virtio 1.2 §5.1).

/// Device handles packets with partial checksum (guest → host checksum offload).
pub const F_CSUM: u64 = 1 << 0;
/// Driver handles packets with partial checksum (host → guest).
pub const F_GUEST_CSUM: u64 = 1 << 1;
/// Device reports the maximum MTU in config space.
pub const F_MTU: u64 = 1 << 3;
/// Device has a MAC address in config space.
pub const F_MAC: u64 = 1 << 5;
/// Driver can receive TSOv4.
pub const F_GUEST_TSO4: u64 = 1 << 7;
/// Driver can receive TSOv6.
pub const F_GUEST_TSO6: u64 = 1 << 8;
/// Driver can receive TSO with ECN.
pub const F_GUEST_ECN: u64 = 1 << 9;
/// Device can receive TSOv4.
pub const F_HOST_TSO4: u64 = 1 << 11;
/// Device can receive TSOv6.
pub const F_HOST_TSO6: u64 = 1 << 12;
/// Device can receive TSO with ECN.
pub const F_HOST_ECN: u64 = 1 << 13;
/// Driver can merge receive buffers.
pub const F_MRG_RXBUF: u64 = 1 << 15;
/// Config `status` field is valid.
pub const F_STATUS: u64 = 1 << 16;
/// Control channel is available.
pub const F_CTRL_VQ: u64 = 1 << 17;
/// Control channel rx mode support.
pub const F_CTRL_RX: u64 = 1 << 18;
/// Driver can send gratuitous packets when asked (`ANNOUNCE`).
pub const F_GUEST_ANNOUNCE: u64 = 1 << 21;
/// Device supports multiple queue pairs.
pub const F_MQ: u64 = 1 << 22;
/// MAC address can be set through the control channel.
pub const F_CTRL_MAC_ADDR: u64 = 1 << 23;
/// Indirect descriptor tables.
pub const F_RING_INDIRECT_DESC: u64 = 1 << 28;
/// used_event / avail_event notification suppression.
pub const F_RING_EVENT_IDX: u64 = 1 << 29;
/// Virtio 1.x (modern) device.
pub const F_VERSION_1: u64 = 1 << 32;

/// Config space: `mac` (6 bytes), `status` (u16), `max_virtqueue_pairs` (u16), `mtu` (u16).
pub const CONFIG_LEN: usize = 12;
/// `status`: the link is up.
pub const S_LINK_UP: u16 = 1;
/// `status`: the driver should announce itself (gratuitous ARP) and then ACK.
pub const S_ANNOUNCE: u16 = 2;

/// Control class: receive filtering mode.
pub const CTRL_RX: u8 = 0;
/// `CTRL_RX` command: promiscuous on/off.
pub const CTRL_RX_PROMISC: u8 = 0;
/// `CTRL_RX` command: all-multicast on/off.
pub const CTRL_RX_ALLMULTI: u8 = 1;
/// Control class: MAC filter table.
pub const CTRL_MAC: u8 = 1;
/// `CTRL_MAC` command: set unicast + multicast tables.
pub const CTRL_MAC_TABLE_SET: u8 = 0;
/// `CTRL_MAC` command: set the primary MAC.
pub const CTRL_MAC_ADDR_SET: u8 = 1;
/// Control class: announcements.
pub const CTRL_ANNOUNCE: u8 = 3;
/// `CTRL_ANNOUNCE` command: the driver announced itself.
pub const CTRL_ANNOUNCE_ACK: u8 = 0;
/// Control class: multi-queue.
pub const CTRL_MQ: u8 = 4;
/// `CTRL_MQ` command: number of queue pairs to use.
pub const CTRL_MQ_VQ_PAIRS_SET: u8 = 0;
/// Control reply: success.
pub const CTRL_OK: u8 = 0;
/// Control reply: failure.
pub const CTRL_ERR: u8 = 1;

/// The features a device with `pairs` queue pairs and an optional MTU offers.
pub fn offered(pairs: u16, mtu: Option<u16>) -> u64 {
    let mut f = F_VERSION_1
        | F_RING_EVENT_IDX
        | F_RING_INDIRECT_DESC
        | F_MAC
        | F_STATUS
        | F_CSUM
        | F_GUEST_CSUM
        | F_HOST_TSO4
        | F_HOST_TSO6
        | F_HOST_ECN
        | F_GUEST_TSO4
        | F_GUEST_TSO6
        | F_GUEST_ECN
        | F_MRG_RXBUF
        | F_CTRL_VQ
        | F_CTRL_RX
        | F_CTRL_MAC_ADDR
        | F_GUEST_ANNOUNCE;
    if mtu.is_some() {
        f |= F_MTU;
    }
    if pairs > 1 {
        f |= F_MQ;
    }
    f
}

/// The tap offloads that match what the driver accepted.
pub fn tap_offloads(acked: u64) -> net::Offloads {
    net::Offloads {
        csum: acked & F_GUEST_CSUM != 0,
        tso4: acked & F_GUEST_TSO4 != 0,
        tso6: acked & F_GUEST_TSO6 != 0,
        ecn: acked & F_GUEST_ECN != 0,
        ufo: false,
    }
}
