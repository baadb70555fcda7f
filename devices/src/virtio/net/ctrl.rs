//! The control queue (VIRTIO_NET_F_CTRL_VQ): receive mode, MAC filter table, primary MAC,
//! announce acknowledgement and the number of queue pairs in use.

use std::sync::{Arc, Mutex};

use log::{debug, warn};
use net::MacAddr;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::features::*;
use crate::GuestMemoryMmap;

/// Largest control command accepted (a MAC table of a few thousand entries).
const MAX_CTRL_LEN: usize = 64 * 1024;

/// Which destination MACs the guest wants to receive.
#[derive(Clone, Debug)]
pub struct RxFilter {
    /// The NIC's own address.
    pub mac: MacAddr,
    /// Accept everything.
    pub promisc: bool,
    /// Accept every multicast frame.
    pub allmulti: bool,
    /// Extra unicast addresses (MAC table).
    pub unicast: Vec<[u8; 6]>,
    /// Multicast addresses (MAC table).
    pub multicast: Vec<[u8; 6]>,
}

impl RxFilter {
    /// The filter after reset: promiscuous, as the spec requires while the driver has not set a
    /// mode (and as a tap on a bridge only forwards what the bridge floods anyway).
    pub fn new(mac: MacAddr) -> RxFilter {
        RxFilter {
            mac,
            promisc: true,
            allmulti: true,
            unicast: Vec::new(),
            multicast: Vec::new(),
        }
    }

    /// Whether a frame for `dst` passes.
    pub fn accepts(&self, dst: [u8; 6]) -> bool {
        if self.promisc || dst == [0xff; 6] {
            return true;
        }
        if dst[0] & 1 != 0 {
            return self.allmulti || self.multicast.contains(&dst);
        }
        dst == self.mac.0 || self.unicast.contains(&dst)
    }
}

/// State the control queue changes and the device config space shows.
#[derive(Debug)]
pub struct NetControl {
    /// Receive filter shared with the rx handlers.
    pub filter: Arc<Mutex<RxFilter>>,
    /// Config `status` (LINK_UP, ANNOUNCE).
    pub status: u16,
    /// Queue pairs the driver asked for (1 without MQ).
    pub active_pairs: u16,
    /// Queue pairs the device has.
    pub max_pairs: u16,
}

impl NetControl {
    /// Control state for a NIC with address `mac` and `max_pairs` queue pairs.
    pub fn new(mac: MacAddr, max_pairs: u16) -> NetControl {
        NetControl {
            filter: Arc::new(Mutex::new(RxFilter::new(mac))),
            status: S_LINK_UP,
            active_pairs: 1,
            max_pairs,
        }
    }

    /// The NIC's current primary MAC.
    pub fn mac(&self) -> MacAddr {
        self.filter.lock().map(|f| f.mac).unwrap_or_default()
    }

    /// Back to the post-reset state (the configured MAC stays).
    pub fn reset(&mut self, mac: MacAddr) {
        if let Ok(mut f) = self.filter.lock() {
            *f = RxFilter::new(mac);
        }
        self.status = S_LINK_UP;
        self.active_pairs = 1;
    }

    /// Handle every command on the control queue. Returns whether the guest must be notified.
    pub fn process(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> bool {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let mut cmd = Vec::new();
            let mut ack: Option<GuestAddress> = None;
            let mut ok_chain = true;
            for desc in chain {
                if desc.is_write_only() {
                    if desc.len() > 0 {
                        ack = Some(desc.addr());
                    }
                } else if ack.is_some() || cmd.len() + desc.len() as usize > MAX_CTRL_LEN {
                    ok_chain = false;
                } else {
                    let start = cmd.len();
                    cmd.resize(start + desc.len() as usize, 0);
                    if mem.read_slice(&mut cmd[start..], desc.addr()).is_err() {
                        ok_chain = false;
                    }
                }
            }
            let reply = if ok_chain && cmd.len() >= 2 {
                self.command(cmd[0], cmd[1], &cmd[2..])
            } else {
                warn!(
                    "virtio-net: malformed control command ({} bytes)",
                    cmd.len()
                );
                CTRL_ERR
            };
            let mut len = 0;
            if let Some(a) = ack {
                if mem.write_obj(reply, a).is_ok() {
                    len = 1;
                }
            }
            if queue.add_used(mem, head, len).is_err() {
                warn!("virtio-net: control queue used ring is invalid");
                return used;
            }
            used = true;
        }
        used && queue.needs_notification(mem).unwrap_or(true)
    }

    fn command(&mut self, class: u8, cmd: u8, data: &[u8]) -> u8 {
        let ok = match (class, cmd) {
            (CTRL_RX, CTRL_RX_PROMISC) | (CTRL_RX, CTRL_RX_ALLMULTI) if data.len() == 1 => {
                let on = data[0] != 0;
                self.with_filter(|f| {
                    if cmd == CTRL_RX_PROMISC {
                        f.promisc = on
                    } else {
                        f.allmulti = on
                    }
                })
            }
            (CTRL_MAC, CTRL_MAC_TABLE_SET) => match parse_mac_table(data) {
                Some((uc, mc)) => self.with_filter(|f| {
                    f.unicast = uc;
                    f.multicast = mc;
                }),
                None => false,
            },
            (CTRL_MAC, CTRL_MAC_ADDR_SET) if data.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(data);
                m[0] & 1 == 0 && self.with_filter(|f| f.mac = MacAddr(m))
            }
            (CTRL_ANNOUNCE, CTRL_ANNOUNCE_ACK) if data.is_empty() => {
                self.status &= !S_ANNOUNCE;
                true
            }
            (CTRL_MQ, CTRL_MQ_VQ_PAIRS_SET) if data.len() == 2 => {
                let n = u16::from_le_bytes([data[0], data[1]]);
                if (1..=self.max_pairs).contains(&n) {
                    self.active_pairs = n;
                    true
                } else {
                    false
                }
            }
            _ => false,
        };
        debug!(
            "virtio-net: control class {class} cmd {cmd}: {}",
            if ok { "ok" } else { "refused" }
        );
        if ok {
            CTRL_OK
        } else {
            CTRL_ERR
        }
    }

    fn with_filter(&self, f: impl FnOnce(&mut RxFilter)) -> bool {
        match self.filter.lock() {
            Ok(mut g) => {
                f(&mut g);
                true
            }
            Err(_) => false,
        }
    }
}

/// A list of MAC addresses.
type MacList = Vec<[u8; 6]>;

/// `struct virtio_net_ctrl_mac` twice (unicast, then multicast): le32 count + count MACs each.
fn parse_mac_table(data: &[u8]) -> Option<(MacList, MacList)> {
    let (uc, rest) = parse_mac_list(data)?;
    let (mc, rest) = parse_mac_list(rest)?;
    rest.is_empty().then_some((uc, mc))
}

fn parse_mac_list(data: &[u8]) -> Option<(MacList, &[u8])> {
    let n = u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let bytes = n.checked_mul(6)?;
    let list = data.get(4..4usize.checked_add(bytes)?)?;
    let macs = list
        .chunks_exact(6)
        .map(|c| {
            let mut m = [0u8; 6];
            m.copy_from_slice(c);
            m
        })
        .collect();
    Some((macs, &data[4 + bytes..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_follows_mode_and_table() {
        let me = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let mut f = RxFilter::new(me);
        let other = [0x52, 0x54, 0, 0, 0, 2];
        let mcast = [0x01, 0, 0x5e, 0, 0, 1];
        assert!(f.accepts(other), "promiscuous after reset");
        f.promisc = false;
        f.allmulti = false;
        assert!(f.accepts(me.0));
        assert!(f.accepts([0xff; 6]));
        assert!(!f.accepts(other));
        assert!(!f.accepts(mcast));
        f.unicast.push(other);
        f.multicast.push(mcast);
        assert!(f.accepts(other) && f.accepts(mcast));
    }

    #[test]
    fn mac_table_parsing_checks_lengths() {
        let mut t = 1u32.to_le_bytes().to_vec();
        t.extend_from_slice(&[0x52, 0x54, 0, 0, 0, 9]);
        t.extend_from_slice(&0u32.to_le_bytes());
        let (uc, mc) = parse_mac_table(&t).unwrap();
        assert_eq!((uc.len(), mc.len()), (1, 0));
        assert!(parse_mac_table(&t[..t.len() - 1]).is_none());
        let mut extra = t.clone();
        extra.push(0);
        assert!(parse_mac_table(&extra).is_none());
        let huge = u32::MAX.to_le_bytes();
        assert!(parse_mac_table(&huge).is_none());
    }

    #[test]
    fn commands_change_state() {
        let mut c = NetControl::new(MacAddr([0x52, 0x54, 0, 0, 0, 1]), 4);
        assert_eq!(c.command(CTRL_RX, CTRL_RX_PROMISC, &[0]), CTRL_OK);
        assert!(!c.filter.lock().unwrap().promisc);
        assert_eq!(c.command(CTRL_RX, CTRL_RX_PROMISC, &[0, 0]), CTRL_ERR);
        assert_eq!(
            c.command(CTRL_MAC, CTRL_MAC_ADDR_SET, &[0x52, 0, 0, 0, 0, 7]),
            CTRL_OK
        );
        assert_eq!(c.mac().0, [0x52, 0, 0, 0, 0, 7]);
        assert_eq!(
            c.command(CTRL_MAC, CTRL_MAC_ADDR_SET, &[1, 0, 0, 0, 0, 7]),
            CTRL_ERR
        );
        assert_eq!(
            c.command(CTRL_MQ, CTRL_MQ_VQ_PAIRS_SET, &3u16.to_le_bytes()),
            CTRL_OK
        );
        assert_eq!(c.active_pairs, 3);
        assert_eq!(
            c.command(CTRL_MQ, CTRL_MQ_VQ_PAIRS_SET, &5u16.to_le_bytes()),
            CTRL_ERR
        );
        assert_eq!(
            c.command(CTRL_MQ, CTRL_MQ_VQ_PAIRS_SET, &0u16.to_le_bytes()),
            CTRL_ERR
        );
        c.status |= S_ANNOUNCE;
        assert_eq!(c.command(CTRL_ANNOUNCE, CTRL_ANNOUNCE_ACK, &[]), CTRL_OK);
        assert_eq!(c.status, S_LINK_UP);
        assert_eq!(c.command(9, 9, &[]), CTRL_ERR);
    }
}
