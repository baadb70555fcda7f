//! The root complex: host bridge, bus-0 slots, configuration access and BAR routing.

use std::sync::{Arc, Mutex, MutexGuard};

use super::config::{PciConfig, PciIdentity};
use super::{PciBarDef, PciBarKind, PciBarRegion, PciDevice};
use crate::bus::BusDevice;

/// Slots on bus 0.
pub const SLOTS: usize = 32;
const CONFIG_ENABLE: u32 = 1 << 31;

/// A device as shared between the root and whoever else keeps a handle on it.
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// Errors of PCI set-up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    /// Every slot of bus 0 is taken.
    #[error("no free PCI slot on bus 0 (32 devices maximum)")]
    NoFreeSlot,
    /// A BAR does not fit in what is left of its MMIO window.
    #[error("PCI BAR {index} of {size:#x} bytes does not fit in the MMIO window; use fewer or smaller devices")]
    NoBarSpace {
        /// BAR index.
        index: u8,
        /// BAR size.
        size: u64,
    },
}

/// Guest-physical windows that BARs are allocated from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciWindows {
    /// 32-bit window (base, size).
    pub mmio32: (u64, u64),
    /// 64-bit window above RAM (base, size), if any.
    pub mmio64: Option<(u64, u64)>,
}

impl PciWindows {
    /// The windows of `docs/guest-interface.md`: 0xC000_0000–0xDFFF_FFFF, and 64 GiB starting
    /// at the first 1 GiB boundary above `ram_top` (the end of guest RAM).
    pub fn standard(ram_top: u64) -> Self {
        let base64 = ram_top.max(1 << 32).div_ceil(1 << 30) * (1 << 30);
        Self {
            mmio32: (0xc000_0000, 0x2000_0000),
            mmio64: Some((base64, 64 << 30)),
        }
    }
}

fn lock(dev: &SharedPciDevice) -> MutexGuard<'_, dyn PciDevice + 'static> {
    dev.lock().unwrap_or_else(|p| p.into_inner())
}

/// The host bridge at 00:00.0 (no BARs; identifies the root complex to the guest).
pub struct HostBridge {
    config: PciConfig,
}

impl HostBridge {
    /// A host bridge (class 06:00).
    pub fn new() -> Self {
        let id = PciIdentity {
            vendor: 0x1b36, // Red Hat, as QEMU's generic PCIe host bridge
            device: 0x0008,
            class: 0x06_00_00,
            revision: 0,
            subsystem_vendor: 0x1b36,
            subsystem: 0x0008,
        };
        Self {
            config: PciConfig::new(id, 0, 0, 0),
        }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for HostBridge {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.config.read(offset, data)
    }
    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.config.write(offset, data)
    }
    fn bar_defs(&self) -> Vec<PciBarDef> {
        Vec::new()
    }
    fn bar_regions(&self) -> Vec<PciBarRegion> {
        Vec::new()
    }
    fn bar_read(&mut self, _bar: u8, _offset: u64, data: &mut [u8]) {
        data.fill(0xff)
    }
    fn bar_write(&mut self, _bar: u8, _offset: u64, _data: &[u8]) {}
}

struct Route {
    start: u64,
    end: u64,
    slot: usize,
    bar: u8,
}

/// Bus 0 with its devices, the 0xCF8 address latch and the BAR allocator.
pub struct PciRoot {
    slots: Vec<Option<SharedPciDevice>>,
    config_address: u32,
    windows: PciWindows,
    next32: u64,
    next64: u64,
    routes: Vec<Route>,
}

impl PciRoot {
    /// A root bus holding the host bridge, allocating BARs from `windows`.
    pub fn new(windows: PciWindows) -> Self {
        let mut slots: Vec<Option<SharedPciDevice>> = vec![None; SLOTS];
        slots[0] = Some(Arc::new(Mutex::new(HostBridge::new())));
        Self {
            slots,
            config_address: 0,
            next32: windows.mmio32.0,
            next64: windows.mmio64.map_or(0, |w| w.0),
            windows,
            routes: Vec::new(),
        }
    }

    /// The windows BARs come from (for the DSDT `_CRS`).
    pub fn windows(&self) -> PciWindows {
        self.windows
    }

    fn alloc(&mut self, def: &PciBarDef) -> Option<u64> {
        let size = def.size.next_power_of_two().max(16);
        let use64 = def.kind == PciBarKind::Mem64 && self.windows.mmio64.is_some();
        let (next, (base, len)) = if use64 {
            (&mut self.next64, self.windows.mmio64?)
        } else {
            (&mut self.next32, self.windows.mmio32)
        };
        let addr = next.checked_next_multiple_of(size)?;
        let end = addr.checked_add(size)?;
        if end > base + len {
            return None;
        }
        *next = end;
        Some(addr)
    }

    /// The slot [`PciRoot::add_device`] will use next (so the VMM can set up the device's
    /// INTx line, [`super::intx_gsi`] of that slot, before building it).
    pub fn next_slot(&self) -> Option<u8> {
        self.slots.iter().position(Option::is_none).map(|s| s as u8)
    }

    /// Put `dev` in the first free slot, program its BARs and interrupt line register (as
    /// firmware would) and return the slot number.
    pub fn add_device(&mut self, dev: SharedPciDevice) -> Result<u8, PciError> {
        let slot = self.next_slot().ok_or(PciError::NoFreeSlot)? as usize;
        let defs = lock(&dev).bar_defs();
        let mut addrs = Vec::new();
        for def in &defs {
            let addr = self.alloc(def).ok_or(PciError::NoBarSpace {
                index: def.index,
                size: def.size,
            })?;
            addrs.push((def, addr));
        }
        {
            let mut d = lock(&dev);
            for (def, addr) in addrs {
                let off = 0x10 + 4 * u16::from(def.index);
                d.config_write(off, &(addr as u32).to_le_bytes());
                if def.kind == PciBarKind::Mem64 {
                    d.config_write(off + 4, &((addr >> 32) as u32).to_le_bytes());
                }
            }
            let mut pin = [0u8];
            d.config_read(0x3d, &mut pin);
            if (1..=4).contains(&pin[0]) {
                let gsi = super::intx_gsi(slot as u8, pin[0] - 1);
                d.config_write(0x3c, &[gsi as u8]);
            }
        }
        self.slots[slot] = Some(dev);
        self.refresh_routes();
        Ok(slot as u8)
    }

    fn refresh_routes(&mut self) {
        self.routes.clear();
        for (slot, dev) in self.slots.iter().enumerate() {
            if let Some(dev) = dev {
                for r in lock(dev).bar_regions() {
                    self.routes.push(Route {
                        start: r.addr,
                        end: r.addr + r.size,
                        slot,
                        bar: r.index,
                    });
                }
            }
        }
    }

    fn device(&self, bus: u8, slot: u8, func: u8) -> Option<SharedPciDevice> {
        if bus != 0 || func != 0 {
            return None;
        }
        self.slots.get(slot as usize)?.clone()
    }

    /// Configuration read of function `bus:slot.func` at `reg` (byte offset < 4096).
    pub fn config_read(&self, bus: u8, slot: u8, func: u8, reg: u16, data: &mut [u8]) {
        match self.device(bus, slot, func) {
            Some(dev) => lock(&dev).config_read(reg, data),
            None => data.fill(0xff),
        }
    }

    /// Configuration write of function `bus:slot.func` at `reg`.
    pub fn config_write(&mut self, bus: u8, slot: u8, func: u8, reg: u16, data: &[u8]) {
        if let Some(dev) = self.device(bus, slot, func) {
            lock(&dev).config_write(reg, data);
            // A write may have moved a BAR or toggled decoding.
            self.refresh_routes();
        }
    }

    fn route(&self, addr: u64) -> Option<(SharedPciDevice, u8, u64)> {
        let r = self
            .routes
            .iter()
            .find(|r| addr >= r.start && addr < r.end)?;
        Some((self.slots[r.slot].clone()?, r.bar, addr - r.start))
    }

    /// The bus device for ports 0xCF8–0xCFF.
    pub fn config_io(root: &Arc<Mutex<PciRoot>>) -> PciConfigIo {
        PciConfigIo(root.clone())
    }

    /// The bus device for the ECAM window.
    pub fn ecam(root: &Arc<Mutex<PciRoot>>) -> PciConfigMmio {
        PciConfigMmio(root.clone())
    }

    /// The bus device for an MMIO window inserted at guest-physical `base`.
    pub fn mmio_window(root: &Arc<Mutex<PciRoot>>, base: u64) -> PciMmioWindow {
        PciMmioWindow {
            root: root.clone(),
            base,
        }
    }
}

fn lock_root(root: &Mutex<PciRoot>) -> MutexGuard<'_, PciRoot> {
    root.lock().unwrap_or_else(|p| p.into_inner())
}

/// Configuration mechanism #1: address latch at 0xCF8, data window at 0xCFC–0xCFF.
pub struct PciConfigIo(Arc<Mutex<PciRoot>>);

impl PciConfigIo {
    fn target(addr: u32, offset: u64, len: usize) -> Option<(u8, u8, u8, u16)> {
        let byte = (offset - 4) as u32;
        if addr & CONFIG_ENABLE == 0 || byte as usize + len > 4 {
            return None;
        }
        let reg = (addr & 0xfc) | ((addr >> 16) & 0xf00); // AMD-style extended register bits
        Some((
            (addr >> 16) as u8,
            ((addr >> 11) & 0x1f) as u8,
            ((addr >> 8) & 0x7) as u8,
            (reg + byte) as u16,
        ))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let root = lock_root(&self.0);
        if offset < 4 {
            let v = root.config_address.to_le_bytes();
            for (i, b) in data.iter_mut().enumerate() {
                *b = v.get(offset as usize + i).copied().unwrap_or(0xff);
            }
            return;
        }
        match Self::target(root.config_address, offset, data.len()) {
            Some((b, s, f, r)) => root.config_read(b, s, f, r, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut root = lock_root(&self.0);
        if offset < 4 {
            // Only whole-dword writes latch an address; byte writes to 0xCF8–0xCFB are other
            // chipset registers (e.g. 0xCF9 reset control) this bridge does not model.
            if offset == 0 && data.len() == 4 {
                root.config_address = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            }
            return;
        }
        if let Some((b, s, f, r)) = Self::target(root.config_address, offset, data.len()) {
            root.config_write(b, s, f, r, data);
        }
    }
}

/// ECAM: each function's 4 KiB of configuration space memory-mapped.
pub struct PciConfigMmio(Arc<Mutex<PciRoot>>);

fn ecam_target(offset: u64, len: usize) -> Option<(u8, u8, u8, u16)> {
    let reg = (offset & 0xfff) as u16;
    if len > 4 || (reg as usize % 4) + len > 4 || offset >= super::ECAM_SIZE {
        return None;
    }
    Some((
        (offset >> 20) as u8,
        ((offset >> 15) & 0x1f) as u8,
        ((offset >> 12) & 0x7) as u8,
        reg,
    ))
}

impl BusDevice for PciConfigMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let root = lock_root(&self.0);
        match ecam_target(offset, data.len()) {
            Some((b, s, f, r)) => root.config_read(b, s, f, r, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut root = lock_root(&self.0);
        if let Some((b, s, f, r)) = ecam_target(offset, data.len()) {
            root.config_write(b, s, f, r, data);
        }
    }
}

/// A PCI MMIO window: routes each access to the BAR decoding it.
pub struct PciMmioWindow {
    root: Arc<Mutex<PciRoot>>,
    base: u64,
}

impl BusDevice for PciMmioWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Resolve under the root lock, access under the device lock only: BAR accesses of
        // different devices do not serialise on the root.
        let target = lock_root(&self.root).route(self.base.wrapping_add(offset));
        match target {
            Some((dev, bar, off)) => lock(&dev).bar_read(bar, off, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let target = lock_root(&self.root).route(self.base.wrapping_add(offset));
        if let Some((dev, bar, off)) = target {
            lock(&dev).bar_write(bar, off, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::COMMAND_MEMORY;

    struct Scratch {
        config: PciConfig,
        mem: Vec<u8>,
    }

    impl PciDevice for Scratch {
        fn config_read(&mut self, offset: u16, data: &mut [u8]) {
            self.config.read(offset, data)
        }
        fn config_write(&mut self, offset: u16, data: &[u8]) {
            self.config.write(offset, data)
        }
        fn bar_defs(&self) -> Vec<PciBarDef> {
            self.config.bar_defs()
        }
        fn bar_regions(&self) -> Vec<PciBarRegion> {
            self.config.bar_regions()
        }
        fn bar_read(&mut self, _bar: u8, offset: u64, data: &mut [u8]) {
            let o = offset as usize;
            data.copy_from_slice(&self.mem[o..o + data.len()]);
        }
        fn bar_write(&mut self, _bar: u8, offset: u64, data: &[u8]) {
            let o = offset as usize;
            self.mem[o..o + data.len()].copy_from_slice(data);
        }
    }

    fn scratch(kind: PciBarKind) -> Arc<Mutex<Scratch>> {
        let mut config = PciConfig::new(
            PciIdentity {
                vendor: 0x1234,
                device: 0x5678,
                class: 0xff0000,
                revision: 0,
                subsystem_vendor: 0,
                subsystem: 0,
            },
            0,
            1,
            0,
        );
        config.add_bar(PciBarDef {
            index: 0,
            size: 0x1000,
            kind,
            prefetchable: false,
        });
        Arc::new(Mutex::new(Scratch {
            config,
            mem: vec![0; 0x1000],
        }))
    }

    fn cf8(io: &mut PciConfigIo, slot: u8, reg: u8) {
        let a = CONFIG_ENABLE | u32::from(slot) << 11 | u32::from(reg);
        io.write(0, &a.to_le_bytes());
    }

    #[test]
    fn conf1_ecam_and_bar_routing() {
        let root = Arc::new(Mutex::new(PciRoot::new(PciWindows::standard(1 << 30))));
        let dev = scratch(PciBarKind::Mem32);
        assert_eq!(root.lock().unwrap().next_slot(), Some(1));
        let slot = root.lock().unwrap().add_device(dev.clone()).unwrap();
        assert_eq!(slot, 1);
        assert_eq!(root.lock().unwrap().next_slot(), Some(2));
        let mut io = PciRoot::config_io(&root);
        let mut ecam = PciRoot::ecam(&root);
        let mut d = [0u8; 4];
        // Host bridge identity via 0xCF8/0xCFC.
        cf8(&mut io, 0, 0);
        io.read(4, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x0008_1b36);
        // Empty slot reads all ones, both ways.
        cf8(&mut io, 5, 0);
        io.read(4, &mut d);
        assert_eq!(d, [0xff; 4]);
        ecam.read(5 << 15, &mut d);
        assert_eq!(d, [0xff; 4]);
        // Device through ECAM; byte access at 0xCFE reads the device ID high half.
        ecam.read(1 << 15, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x5678_1234);
        cf8(&mut io, 1, 0);
        let mut w = [0u8; 2];
        io.read(6, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x5678);
        // BAR assigned at the window base; not decoded until memory is enabled.
        ecam.read((1 << 15) | 0x10, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0xc000_0000);
        // Interrupt line set like firmware would: slot 1, INTA → GSI 17.
        ecam.read((1 << 15) | 0x3c, &mut d);
        assert_eq!((d[0], d[1]), (17, 1));
        let mut win = PciRoot::mmio_window(&root, 0xc000_0000);
        win.write(0x10, &[0xaa]);
        assert_eq!(dev.lock().unwrap().mem[0x10], 0);
        ecam.write((1 << 15) | 4, &COMMAND_MEMORY.to_le_bytes());
        win.write(0x10, &[0xaa]);
        assert_eq!(dev.lock().unwrap().mem[0x10], 0xaa);
        // The guest moves the BAR; routing follows.
        cf8(&mut io, 1, 0x10);
        io.write(4, &0xc010_0000u32.to_le_bytes());
        let mut b = [0u8; 1];
        win.read(0x10, &mut b);
        assert_eq!(b, [0xff]);
        win.read(0x10_0010, &mut b);
        assert_eq!(b, [0xaa]);
        // Disabled address latch answers all ones.
        io.write(0, &0u32.to_le_bytes());
        io.read(4, &mut d);
        assert_eq!(d, [0xff; 4]);
    }

    #[test]
    fn bar64_goes_above_4g_and_windows_fill_up() {
        let mut root = PciRoot::new(PciWindows {
            mmio32: (0xc000_0000, 0x1000),
            mmio64: Some((0x1_0000_0000, 0x2000)),
        });
        root.add_device(scratch(PciBarKind::Mem64)).unwrap();
        let mut d = [0u8; 4];
        root.config_read(0, 1, 0, 0x14, &mut d);
        assert_eq!(u32::from_le_bytes(d), 1);
        root.add_device(scratch(PciBarKind::Mem32)).unwrap();
        assert_eq!(
            root.add_device(scratch(PciBarKind::Mem32)),
            Err(PciError::NoBarSpace {
                index: 0,
                size: 0x1000
            })
        );
        assert_eq!(PciWindows::standard(5 << 30).mmio64.unwrap().0, 5 << 30);
        assert_eq!(
            PciWindows::standard((5 << 30) + 1).mmio64.unwrap().0,
            6 << 30
        );
    }
}
