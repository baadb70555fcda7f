//! A type-0 PCI configuration header with capabilities, write masks and BAR sizing.

use super::{PciBarDef, PciBarKind, PciBarRegion};

/// Size of the conventional configuration space this model implements; the PCIe extended space
/// above it reads as zero (no extended capabilities).
pub const CONFIG_SPACE_SIZE: usize = 256;
/// Command register: memory space decoding enabled.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command register: bus mastering enabled.
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command register: INTx assertion disabled.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Status register: the capabilities list is valid.
/// Offset of the status register.
pub const STATUS_REG: u16 = 0x06;
/// Status bit 3 (in the register's low byte): the function has an INTx interrupt pending.
pub const STATUS_INTERRUPT: u8 = 1 << 3;
const STATUS_CAP_LIST: u16 = 1 << 4;
/// First byte after the standard header, where capabilities start.
const FIRST_CAP: usize = 0x40;
const BAR0: usize = 0x10;

/// Identity of a function as written to its header.
#[derive(Clone, Copy, Debug)]
pub struct PciIdentity {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Class code (base class << 16 | subclass << 8 | prog-if).
    pub class: u32,
    /// Revision ID.
    pub revision: u8,
    /// Subsystem vendor ID.
    pub subsystem_vendor: u16,
    /// Subsystem ID.
    pub subsystem: u16,
}

/// Configuration space of one function: register contents plus which bits the guest may write.
pub struct PciConfig {
    regs: [u8; CONFIG_SPACE_SIZE],
    wmask: [u8; CONFIG_SPACE_SIZE],
    bars: [Option<PciBarDef>; 6],
    last_cap: Option<usize>,
    next_cap: usize,
}

impl PciConfig {
    /// A header for `id`, with INTx `pin` (0 = none, 1 = INTA …) and interrupt `line`.
    pub fn new(id: PciIdentity, header_type: u8, pin: u8, line: u8) -> Self {
        let mut c = Self {
            regs: [0; CONFIG_SPACE_SIZE],
            wmask: [0; CONFIG_SPACE_SIZE],
            bars: [None; 6],
            last_cap: None,
            next_cap: FIRST_CAP,
        };
        c.set16(0x00, id.vendor);
        c.set16(0x02, id.device);
        c.regs[0x08] = id.revision;
        c.regs[0x09] = id.class as u8;
        c.regs[0x0a] = (id.class >> 8) as u8;
        c.regs[0x0b] = (id.class >> 16) as u8;
        c.regs[0x0e] = header_type;
        c.set16(0x2c, id.subsystem_vendor);
        c.set16(0x2e, id.subsystem);
        c.regs[0x3c] = line;
        c.regs[0x3d] = pin;
        let cmd_mask = 0x0007 | COMMAND_INTX_DISABLE | (1 << 6) | (1 << 8);
        c.wmask[0x04..0x06].copy_from_slice(&cmd_mask.to_le_bytes());
        c.wmask[0x0c] = 0xff; // cache line size
        c.wmask[0x0d] = 0xff; // latency timer
        c.wmask[0x3c] = 0xff; // interrupt line is scratch for the OS
        c
    }

    fn set16(&mut self, off: usize, v: u16) {
        self.regs[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn get32(&self, off: usize) -> u32 {
        u32::from_le_bytes([
            self.regs[off],
            self.regs[off + 1],
            self.regs[off + 2],
            self.regs[off + 3],
        ])
    }

    /// Declare BAR `def.index` (and its upper half for 64-bit BARs) with an initial address.
    ///
    /// Sizes must be powers of two of at least 16 bytes (at most 2 GiB for 32-bit BARs).
    pub fn add_bar(&mut self, def: PciBarDef) {
        let idx = def.index as usize;
        let size = def.size.next_power_of_two().max(16);
        let off = BAR0 + 4 * idx;
        let mut low_flags: u32 = 0;
        if def.prefetchable {
            low_flags |= 1 << 3;
        }
        let mask = !(size - 1);
        match def.kind {
            PciBarKind::Mem32 => {
                self.wmask[off..off + 4].copy_from_slice(&((mask as u32) & !0xf).to_le_bytes());
            }
            PciBarKind::Mem64 => {
                low_flags |= 0b10 << 1;
                self.wmask[off..off + 4].copy_from_slice(&((mask as u32) & !0xf).to_le_bytes());
                self.wmask[off + 4..off + 8].copy_from_slice(&((mask >> 32) as u32).to_le_bytes());
            }
        }
        self.regs[off..off + 4].copy_from_slice(&low_flags.to_le_bytes());
        self.bars[idx] = Some(PciBarDef { size, ..def });
    }

    /// Append a capability: `body` starts with the capability ID byte; its second byte (the
    /// next pointer) is filled in here. `wmask` (same length, or empty for read-only) says which
    /// bits the guest may write. Returns the capability's offset, or None when space is full.
    pub fn add_capability(&mut self, body: &[u8], wmask: &[u8]) -> Option<usize> {
        let off = self.next_cap;
        let end = off.checked_add(body.len())?;
        if body.len() < 2 || end > CONFIG_SPACE_SIZE {
            return None;
        }
        self.regs[off..end].copy_from_slice(body);
        self.regs[off + 1] = 0;
        if !wmask.is_empty() {
            self.wmask[off..off + wmask.len().min(body.len())]
                .copy_from_slice(&wmask[..wmask.len().min(body.len())]);
        }
        match self.last_cap {
            Some(prev) => self.regs[prev + 1] = off as u8,
            None => self.regs[0x34] = off as u8,
        }
        let status = u16::from_le_bytes([self.regs[6], self.regs[7]]) | STATUS_CAP_LIST;
        self.set16(0x06, status);
        self.last_cap = Some(off);
        self.next_cap = (end + 3) & !3;
        Some(off)
    }

    /// Guest read of `data.len()` bytes at `offset`.
    pub fn read(&self, offset: u16, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let o = offset as usize + i;
            *b = if o < CONFIG_SPACE_SIZE {
                self.regs[o]
            } else {
                0
            };
        }
    }

    /// Guest write of `data` at `offset`, honouring the write masks.
    pub fn write(&mut self, offset: u16, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            let o = offset as usize + i;
            if o >= CONFIG_SPACE_SIZE {
                return;
            }
            let m = self.wmask[o];
            self.regs[o] = (self.regs[o] & !m) | (b & m);
        }
    }

    /// Raw register bytes (for devices that keep state in their capabilities).
    pub fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        let end = (offset + len).min(CONFIG_SPACE_SIZE);
        &self.regs[offset.min(end)..end]
    }

    /// Set register bytes regardless of the write mask (device-side updates).
    pub fn set_bytes(&mut self, offset: usize, data: &[u8]) {
        if let Some(dst) = self.regs.get_mut(offset..offset + data.len()) {
            dst.copy_from_slice(data);
        }
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        u16::from_le_bytes([self.regs[4], self.regs[5]])
    }

    /// The BARs this function declares.
    pub fn bar_defs(&self) -> Vec<PciBarDef> {
        self.bars.iter().flatten().copied().collect()
    }

    /// The guest-physical address programmed into BAR `index`.
    pub fn bar_address(&self, index: u8) -> Option<u64> {
        let def = self.bars.get(index as usize).copied().flatten()?;
        let off = BAR0 + 4 * index as usize;
        let low = u64::from(self.get32(off) & !0xf);
        Some(match def.kind {
            PciBarKind::Mem32 => low,
            PciBarKind::Mem64 => low | u64::from(self.get32(off + 4)) << 32,
        })
    }

    /// The memory ranges this function decodes now: none while memory decoding is off, and
    /// none for a BAR the guest left at address 0 or mid-sizing (all ones).
    pub fn bar_regions(&self) -> Vec<PciBarRegion> {
        if self.command() & COMMAND_MEMORY == 0 {
            return Vec::new();
        }
        self.bars
            .iter()
            .flatten()
            .filter_map(|def| {
                let addr = self.bar_address(def.index)?;
                let mask = !(def.size - 1) & !0xf;
                let sizing = match def.kind {
                    PciBarKind::Mem32 => addr == (mask & 0xffff_ffff),
                    PciBarKind::Mem64 => addr == mask,
                };
                (addr != 0 && !sizing && addr.checked_add(def.size).is_some()).then_some(
                    PciBarRegion {
                        index: def.index,
                        addr,
                        size: def.size,
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> PciIdentity {
        PciIdentity {
            vendor: 0x1af4,
            device: 0x1042,
            class: 0x018000,
            revision: 1,
            subsystem_vendor: 0x1af4,
            subsystem: 0x40,
        }
    }

    fn rd32(c: &PciConfig, off: u16) -> u32 {
        let mut b = [0u8; 4];
        c.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn bar_sizing_and_decode() {
        let mut c = PciConfig::new(id(), 0, 1, 0);
        c.add_bar(PciBarDef {
            index: 0,
            size: 0x4000,
            kind: PciBarKind::Mem64,
            prefetchable: false,
        });
        c.write(0x10, &0xffff_ffffu32.to_le_bytes());
        c.write(0x14, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(rd32(&c, 0x10), 0xffff_c004);
        assert_eq!(rd32(&c, 0x14), 0xffff_ffff);
        c.write(0x04, &COMMAND_MEMORY.to_le_bytes());
        assert!(c.bar_regions().is_empty(), "mid-sizing BAR must not decode");
        c.write(0x10, &0xc000_0000u32.to_le_bytes());
        c.write(0x14, &0u32.to_le_bytes());
        assert_eq!(
            c.bar_regions(),
            vec![PciBarRegion {
                index: 0,
                addr: 0xc000_0000,
                size: 0x4000
            }]
        );
        c.write(0x04, &0u16.to_le_bytes());
        assert!(c.bar_regions().is_empty());
        // Read-only identity.
        c.write(0x00, &0u32.to_le_bytes());
        assert_eq!(rd32(&c, 0), 0x1042_1af4);
    }

    #[test]
    fn capability_chain() {
        let mut c = PciConfig::new(id(), 0, 1, 0);
        let a = c.add_capability(&[0x09, 0, 4, 0], &[]).unwrap();
        let b = c
            .add_capability(&[0x11, 0, 0, 0], &[0, 0, 0, 0xc0])
            .unwrap();
        assert_eq!(c.bytes(0x34, 1)[0] as usize, a);
        assert_eq!(c.bytes(a + 1, 1)[0] as usize, b);
        assert_eq!(c.bytes(b + 1, 1)[0], 0);
        assert_ne!(c.bytes(6, 1)[0] & 0x10, 0);
        c.write(b as u16 + 3, &[0xff]);
        assert_eq!(c.bytes(b + 3, 1)[0], 0xc0);
        let mut ext = [1u8; 4];
        c.read(0x100, &mut ext);
        assert_eq!(ext, [0; 4]);
    }
}
