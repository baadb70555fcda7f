//! Ethernet MAC addresses: parsing, printing and the addresses rvmm derives for guests and taps.

use std::fmt;
use std::str::FromStr;

use crate::NetError;

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The KVM/QEMU locally administered prefix used for guest NICs.
    pub const GUEST_OUI: [u8; 3] = [0x52, 0x54, 0x00];

    /// A stable guest MAC `52:54:00:xx:xx:xx` derived from `name` (VM name or disk path) and the
    /// NIC index, so a guest keeps its address (and DHCP lease) across restarts.
    pub fn for_guest(name: &str, nic_index: u32) -> MacAddr {
        // FNV-1a: tiny, and unlike std's hasher its output is fixed forever.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes().chain(nic_index.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let b = h.to_le_bytes();
        MacAddr([0x52, 0x54, 0x00, b[0] ^ b[3], b[1] ^ b[4], b[2] ^ b[5]])
    }

    /// The host-side tap address for a guest MAC: the same with its first byte 0xFE. A bridge
    /// takes the lowest port MAC as its own, and 0xFE sorts above any real NIC, so adding a tap
    /// never changes the bridge's address (QEMU's bridge helper and libvirt do the same).
    pub fn tap_for(guest: MacAddr) -> MacAddr {
        let mut m = guest.0;
        m[0] = 0xFE;
        MacAddr(m)
    }

    /// The six bytes.
    pub fn bytes(&self) -> [u8; 6] {
        self.0
    }

    /// True for a unicast address (group bit clear).
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NetError::BadMac(s.to_string());
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut m = [0u8; 6];
        for (dst, p) in m.iter_mut().zip(parts) {
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *dst = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        let mac = MacAddr(m);
        if !mac.is_unicast() || m == [0; 6] {
            return Err(bad());
        }
        Ok(mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let m: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(m.0, [0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f]);
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!("52-54-00-ab-cd-0f".parse::<MacAddr>().unwrap(), m);
    }

    #[test]
    fn rejects_bad_strings() {
        for s in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:00",
            "52:54:00:ab:cd:0g",
            "5:54:00:ab:cd:0f",
            "01:00:5e:00:00:01", // multicast
            "00:00:00:00:00:00",
            "52:54:00:ab:cd:+f",
        ] {
            assert!(s.parse::<MacAddr>().is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn guest_mac_is_stable_local_and_distinct() {
        let a = MacAddr::for_guest("vm1", 0);
        assert_eq!(a, MacAddr::for_guest("vm1", 0));
        assert_eq!(&a.0[..3], &MacAddr::GUEST_OUI);
        assert!(a.is_unicast());
        assert_ne!(a, MacAddr::for_guest("vm2", 0));
        assert_ne!(a, MacAddr::for_guest("vm1", 1));
    }

    #[test]
    fn tap_mac_has_fe_prefix_and_guest_tail() {
        let g: MacAddr = "52:54:00:01:02:03".parse().unwrap();
        assert_eq!(MacAddr::tap_for(g).to_string(), "fe:54:00:01:02:03");
    }
}
