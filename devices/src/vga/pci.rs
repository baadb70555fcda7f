//! The std-VGA as a PCI function (1234:1111, class 0x0300, as QEMU's `-vga std`): VRAM in
//! BAR0 (32-bit, prefetchable) and the DISPI/VGA register block in BAR2.
//!
//! The VMM normally maps BAR0 as a KVM memory slot, so guest VRAM accesses never reach
//! [`PciDevice::bar_read`]; when the guest moves BAR0 (or turns memory decoding on or off) the
//! `on_vram_move` callback tells the VMM where the slot belongs now.

use crate::bus::BusDevice;
use crate::pci::config::{PciConfig, PciIdentity};
use crate::pci::{PciBarDef, PciBarKind, PciBarRegion, PciDevice};

use super::{MmioBar, Vga, VramBar, MMIO_BAR_LEN};

/// Bochs/QEMU VGA vendor ID.
pub const VGA_VENDOR: u16 = 0x1234;
/// Bochs/QEMU VGA device ID.
pub const VGA_DEVICE: u16 = 0x1111;
/// Display controller, VGA compatible.
pub const VGA_CLASS: u32 = 0x03_00_00;
/// BAR index of the VRAM.
pub const VRAM_BAR: u8 = 0;
/// BAR index of the register block.
pub const MMIO_BAR: u8 = 2;

/// Called with BAR0's decoded address (`None` while not decoded) whenever it changes.
pub type VramMoveHook = Box<dyn FnMut(Option<u64>) + Send>;

/// The PCI function of a [`Vga`].
pub struct VgaPci {
    config: PciConfig,
    vram: VramBar,
    mmio: MmioBar,
    vram_at: Option<u64>,
    on_vram_move: VramMoveHook,
}

impl VgaPci {
    /// The function for `vga`, whose VRAM is `vram_size` bytes (a power of two), reporting
    /// BAR0 moves to `on_vram_move`.
    pub fn new(vga: &Vga, vram_size: u64, on_vram_move: VramMoveHook) -> Self {
        let mut config = PciConfig::new(
            PciIdentity {
                vendor: VGA_VENDOR,
                device: VGA_DEVICE,
                class: VGA_CLASS,
                revision: 2,
                subsystem_vendor: 0x1af4,
                subsystem: 0x1100,
            },
            0,
            0,
            0,
        );
        config.add_bar(PciBarDef {
            index: VRAM_BAR,
            size: vram_size.next_power_of_two(),
            kind: PciBarKind::Mem32,
            prefetchable: true,
        });
        config.add_bar(PciBarDef {
            index: MMIO_BAR,
            size: MMIO_BAR_LEN,
            kind: PciBarKind::Mem32,
            prefetchable: false,
        });
        VgaPci {
            config,
            vram: vga.vram_bar(),
            mmio: vga.mmio_bar(),
            vram_at: None,
            on_vram_move,
        }
    }

    /// Where BAR0 is decoded now.
    pub fn vram_address(&self) -> Option<u64> {
        self.region(VRAM_BAR).map(|r| r.addr)
    }

    fn region(&self, bar: u8) -> Option<PciBarRegion> {
        self.config
            .bar_regions()
            .into_iter()
            .find(|r| r.index == bar)
    }
}

impl PciDevice for VgaPci {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.config.write(offset, data);
        let now = self.vram_address();
        if now != self.vram_at {
            self.vram_at = now;
            (self.on_vram_move)(now);
        }
    }

    fn bar_defs(&self) -> Vec<PciBarDef> {
        self.config.bar_defs()
    }

    fn bar_regions(&self) -> Vec<PciBarRegion> {
        self.config.bar_regions()
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        match bar {
            VRAM_BAR => self.vram.read(offset, data),
            MMIO_BAR => self.mmio.read(offset, data),
            _ => data.fill(0xff),
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        match bar {
            VRAM_BAR => self.vram.write(offset, data),
            MMIO_BAR => self.mmio.write(offset, data),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vga::HeapVram;
    use std::sync::{Arc, Mutex};

    fn rd32(d: &mut VgaPci, off: u16) -> u32 {
        let mut b = [0u8; 4];
        d.config_read(off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn identity_bars_and_move_hook() {
        let vga = Vga::new(Box::new(HeapVram::new(1 << 20)));
        let moves = Arc::new(Mutex::new(Vec::new()));
        let m = moves.clone();
        let mut d = VgaPci::new(&vga, 1 << 20, Box::new(move |a| m.lock().unwrap().push(a)));
        assert_eq!(rd32(&mut d, 0), 0x1111_1234);
        assert_eq!(rd32(&mut d, 8) >> 8, VGA_CLASS);
        // Sizing BAR0: 1 MiB, prefetchable memory.
        d.config_write(0x10, &u32::MAX.to_le_bytes());
        assert_eq!(rd32(&mut d, 0x10), 0xfff0_0008);
        d.config_write(0x18, &u32::MAX.to_le_bytes());
        assert_eq!(rd32(&mut d, 0x18), 0xffff_f000);
        d.config_write(0x10, &0xc000_0000u32.to_le_bytes());
        d.config_write(0x18, &0xc010_0000u32.to_le_bytes());
        assert!(moves.lock().unwrap().is_empty(), "decoding is still off");
        d.config_write(4, &2u16.to_le_bytes());
        assert_eq!(*moves.lock().unwrap(), vec![Some(0xc000_0000)]);
        d.config_write(0x10, &0xc800_0000u32.to_le_bytes());
        d.config_write(4, &0u16.to_le_bytes());
        assert_eq!(
            *moves.lock().unwrap(),
            vec![Some(0xc000_0000), Some(0xc800_0000), None]
        );
        // BAR accesses reach VRAM and the DISPI registers (ID register at 0x500).
        d.bar_write(VRAM_BAR, 0x10, &[1, 2, 3, 4]);
        let mut b = [0u8; 4];
        d.bar_read(VRAM_BAR, 0x10, &mut b);
        assert_eq!(b, [1, 2, 3, 4]);
        let mut id = [0u8; 2];
        d.bar_read(MMIO_BAR, 0x500, &mut id);
        assert_eq!(u16::from_le_bytes(id) & 0xfff0, 0xb0c0);
        d.bar_read(3, 0, &mut b);
        assert_eq!(b, [0xff; 4]);
    }
}
