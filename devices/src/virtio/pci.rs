//! The virtio-pci modern (virtio 1.x) transport: any [`VirtioDevice`] as a PCI function.
//!
//! BAR 0 (32-bit memory, [`BAR_SIZE`] bytes) holds every structure: common configuration at
//! [`COMMON_OFF`], ISR at [`ISR_OFF`], device configuration at [`DEVICE_OFF`], queue notify
//! registers at [`NOTIFY_OFF`] (4 bytes apart, one per queue; registered as ioeventfds
//! whenever the BAR is decoded), the MSI-X table at [`MSIX_TABLE_OFF`] and the PBA at
//! [`MSIX_PBA_OFF`]. The capability list also carries the `VIRTIO_PCI_CAP_PCI_CFG` window.

use std::sync::{Arc, Mutex, MutexGuard};

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestAddressSpace};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{ActiveQueue, VirtioDevice, VirtioInterrupt, VirtioInterruptType};
use crate::pci::config::{
    PciConfig, PciIdentity, COMMAND_INTX_DISABLE, STATUS_INTERRUPT, STATUS_REG,
};
use crate::pci::msix::{Msix, CAP_LEN as MSIX_CAP_LEN};
use crate::pci::{
    IntxPin, IoEventRegistrar, MsiController, PciBarDef, PciBarKind, PciBarRegion, PciDevice,
};
use crate::GuestMemoryAtomic;

/// Size of BAR 0.
pub const BAR_SIZE: u64 = 0x8000;
/// Offset of the common configuration structure in BAR 0.
pub const COMMON_OFF: u64 = 0x0000;
/// Length of the common configuration structure.
pub const COMMON_LEN: u64 = 0x38;
/// Offset of the ISR status byte.
pub const ISR_OFF: u64 = 0x1000;
/// Offset of the device-specific configuration.
pub const DEVICE_OFF: u64 = 0x2000;
/// Length reserved for device-specific configuration.
pub const DEVICE_LEN: u64 = 0x1000;
/// Offset of the first queue notify register.
pub const NOTIFY_OFF: u64 = 0x3000;
/// Bytes between two queues' notify registers (`notify_off_multiplier`).
pub const NOTIFY_MULTIPLIER: u32 = 4;
/// Offset of the MSI-X table.
pub const MSIX_TABLE_OFF: u64 = 0x4000;
/// Offset of the MSI-X pending-bit array.
pub const MSIX_PBA_OFF: u64 = 0x6000;
/// "No MSI-X vector" in the vector registers.
pub const NO_VECTOR: u16 = 0xffff;

/// Device status bits (virtio 1.x §2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready: queues are live.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const NEEDS_RESET: u8 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 0x80;
}

const VIRTIO_F_VERSION_1: u64 = 1 << 32;
const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
const CAP_ISR: u8 = 3;
const CAP_DEVICE: u8 = 4;
const CAP_PCI_CFG: u8 = 5;
const MAX_QUEUES: usize = ((MSIX_TABLE_OFF - NOTIFY_OFF) / NOTIFY_MULTIPLIER as u64) as usize;

/// PCI class code for a virtio device type.
fn class_of(device_type: u32) -> u32 {
    match device_type {
        1 => 0x02_00_00,  // network controller
        2 => 0x01_80_00,  // mass storage, other
        8 => 0x01_00_00,  // SCSI controller
        16 => 0x03_80_00, // display, other
        18 => 0x09_80_00, // input, other
        _ => 0xff_00_00,
    }
}

#[derive(Clone, Copy, Default)]
struct QueueRegs {
    size: u16,
    vector: u16,
    enabled: bool,
    desc: u64,
    driver: u64,
    device: u64,
}

/// State the interrupt path shares with register accesses.
struct IrqState {
    msix: Mutex<Msix>,
    /// ISR status (bit 0 queue, bit 1 config) and the command register's INTx-disable bit,
    /// under one lock with the INTx level so that a read-to-clear or a toggle of the disable
    /// bit cannot lose a concurrent assertion.
    isr: Mutex<Isr>,
    intx: Arc<dyn IntxPin>,
    config_vector: Mutex<u16>,
    queue_vectors: Mutex<Vec<u16>>,
}

/// The ISR bits and whether the guest has disabled INTx (PCI command bit 10).
#[derive(Default)]
struct Isr {
    bits: u8,
    intx_disabled: bool,
}

fn lk<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl IrqState {
    fn isr_read_clear(&self) -> u8 {
        let mut isr = lk(&self.isr);
        let v = std::mem::take(&mut isr.bits);
        if v != 0 && !isr.intx_disabled {
            self.set_line(false);
        }
        v
    }

    /// Whether an interrupt is pending on INTx (the PCI status register's bit 3).
    fn intx_pending(&self) -> bool {
        lk(&self.isr).bits != 0
    }

    /// Follow the command register's INTx-disable bit: a pending interrupt leaves the line
    /// while disabled and returns to it when enabled again (PCI 3.0 §6.2.2).
    fn set_intx_disabled(&self, disabled: bool) {
        let mut isr = lk(&self.isr);
        if isr.intx_disabled != disabled {
            isr.intx_disabled = disabled;
            if isr.bits != 0 {
                self.set_line(!disabled);
            }
        }
    }

    fn set_line(&self, asserted: bool) {
        if let Err(e) = self.intx.set_level(asserted) {
            log::error!("virtio-pci: setting INTx to {asserted} failed: {e}");
        }
    }
}

struct PciInterrupt(Arc<IrqState>);

impl VirtioInterrupt for PciInterrupt {
    fn trigger(&self, int_type: VirtioInterruptType) -> std::io::Result<()> {
        let s = &self.0;
        let (vector, bit) = match int_type {
            VirtioInterruptType::Config => (*lk(&s.config_vector), 2),
            VirtioInterruptType::Queue(q) => (
                lk(&s.queue_vectors)
                    .get(q as usize)
                    .copied()
                    .unwrap_or(NO_VECTOR),
                1,
            ),
        };
        {
            let mut msix = lk(&s.msix);
            if msix.enabled() {
                if vector != NO_VECTOR {
                    msix.notify(vector);
                }
                return Ok(());
            }
        }
        let mut isr = lk(&s.isr);
        let was = isr.bits;
        isr.bits |= bit;
        // A non-zero ISR means the line is already asserted (reading the ISR lowers it):
        // no need to raise it again for every completion of a polling driver. With INTx
        // disabled the interrupt only shows in the ISR and the status register.
        if was != 0 || isr.intx_disabled {
            return Ok(());
        }
        s.intx.set_level(true)
    }
}

/// Host-side services a virtio-pci function needs; the VMM implements them over KVM.
pub struct VirtioPciHost {
    /// Guest memory handed to the device at activation.
    pub mem: GuestMemoryAtomic,
    /// MSI-X delivery.
    pub msi: Arc<dyn MsiController>,
    /// The INTx line ([`crate::pci::intx_gsi`] of the slot, pin INTA).
    pub intx: Arc<dyn IntxPin>,
    /// Queue-notify ioeventfds.
    pub ioevents: Arc<dyn IoEventRegistrar>,
}

/// A [`VirtioDevice`] behind the virtio-pci modern transport.
pub struct VirtioPciDevice {
    config: PciConfig,
    device: Box<dyn VirtioDevice>,
    host: VirtioPciHost,
    irq: Arc<IrqState>,
    msix_cap: usize,
    pci_cfg_cap: usize,
    kicks: Vec<EventFd>,
    registered: Option<u64>,
    max_sizes: Vec<u16>,
    queues: Vec<QueueRegs>,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    queue_select: u16,
    active: bool,
}

fn vcap(cfg_type: u8, bar: u8, offset: u32, length: u32, extra: &[u8]) -> Vec<u8> {
    let len = 16 + extra.len();
    let mut c = vec![0x09, 0, len as u8, cfg_type, bar, 0, 0, 0];
    c.extend_from_slice(&offset.to_le_bytes());
    c.extend_from_slice(&length.to_le_bytes());
    c.extend_from_slice(extra);
    c
}

impl VirtioPciDevice {
    /// Wrap `device`; `line` is the value for the interrupt-line register (its INTx GSI).
    pub fn new(
        device: Box<dyn VirtioDevice>,
        host: VirtioPciHost,
        line: u8,
    ) -> std::io::Result<Self> {
        let dtype = device.device_type();
        let max_sizes: Vec<u16> = device
            .queue_max_sizes()
            .into_iter()
            .take(MAX_QUEUES)
            .collect();
        let nq = max_sizes.len();
        let id = PciIdentity {
            vendor: 0x1af4,
            device: 0x1040 + dtype as u16,
            class: class_of(dtype),
            revision: 1,
            subsystem_vendor: 0x1af4,
            subsystem: 0x40,
        };
        let mut config = PciConfig::new(id, 0, 1, line);
        config.add_bar(PciBarDef {
            index: 0,
            size: BAR_SIZE,
            kind: PciBarKind::Mem32,
            prefetchable: false,
        });
        let msix = Msix::new(nq as u16 + 1, host.msi.clone());
        let (mcap, mmask) = msix.capability(0, MSIX_TABLE_OFF as u32, MSIX_PBA_OFF as u32);
        let caps = [
            vcap(CAP_COMMON, 0, COMMON_OFF as u32, COMMON_LEN as u32, &[]),
            vcap(CAP_ISR, 0, ISR_OFF as u32, 1, &[]),
            vcap(CAP_DEVICE, 0, DEVICE_OFF as u32, DEVICE_LEN as u32, &[]),
            vcap(
                CAP_NOTIFY,
                0,
                NOTIFY_OFF as u32,
                (nq.max(1) as u32) * NOTIFY_MULTIPLIER,
                &NOTIFY_MULTIPLIER.to_le_bytes(),
            ),
        ];
        let full = || std::io::Error::other("virtio-pci: capability list does not fit");
        for c in &caps {
            config.add_capability(c, &[]).ok_or_else(full)?;
        }
        let msix_cap = config.add_capability(&mcap, &mmask).ok_or_else(full)?;
        debug_assert_eq!(mcap.len(), MSIX_CAP_LEN);
        // PCI_CFG window: bar, offset, length and data are guest-writable.
        let pcfg = vcap(CAP_PCI_CFG, 0, 0, 0, &[0; 4]);
        let mut pmask = vec![0u8; pcfg.len()];
        pmask[4] = 0xff;
        pmask[8..20].fill(0xff);
        let pci_cfg_cap = config.add_capability(&pcfg, &pmask).ok_or_else(full)?;
        let kicks = (0..nq)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<std::io::Result<Vec<_>>>()?;
        let irq = Arc::new(IrqState {
            msix: Mutex::new(msix),
            isr: Mutex::new(Isr::default()),
            intx: host.intx.clone(),
            config_vector: Mutex::new(NO_VECTOR),
            queue_vectors: Mutex::new(vec![NO_VECTOR; nq]),
        });
        Ok(Self {
            config,
            device,
            host,
            irq,
            msix_cap,
            pci_cfg_cap,
            kicks,
            registered: None,
            queues: max_sizes
                .iter()
                .map(|&size| QueueRegs {
                    vector: NO_VECTOR,
                    size,
                    ..QueueRegs::default()
                })
                .collect(),
            max_sizes,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            queue_select: 0,
            active: false,
        })
    }

    /// The device status register as the driver last left it.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// The notification eventfd of each queue (also written on notify exits).
    pub fn kick_fds(&self) -> &[EventFd] {
        &self.kicks
    }

    fn sync_ioevents(&mut self) {
        let want = self
            .config
            .bar_regions()
            .iter()
            .find(|r| r.index == 0)
            .map(|r| r.addr + NOTIFY_OFF);
        if want == self.registered {
            return;
        }
        if let Some(old) = self.registered.take() {
            for (i, fd) in self.kicks.iter().enumerate() {
                let addr = old + i as u64 * u64::from(NOTIFY_MULTIPLIER);
                if let Err(e) = self.host.ioevents.unregister(addr, 0, fd) {
                    log::warn!("virtio-pci: removing ioeventfd at {addr:#x} failed: {e}");
                }
            }
        }
        if let Some(new) = want {
            for (i, fd) in self.kicks.iter().enumerate() {
                let addr = new + i as u64 * u64::from(NOTIFY_MULTIPLIER);
                if let Err(e) = self.host.ioevents.register(addr, 0, fd) {
                    // Notify writes still exit and are forwarded by bar_write.
                    log::warn!("virtio-pci: ioeventfd at {addr:#x} failed: {e}");
                }
            }
            self.registered = Some(new);
        }
    }

    fn selected(&self) -> Option<usize> {
        let q = self.queue_select as usize;
        (q < self.queues.len()).then_some(q)
    }

    fn common_image(&self) -> [u8; 0x40] {
        let mut b = [0u8; 0x40];
        let feats = self.device.features();
        let dfeat = match self.device_feature_select {
            0 => feats as u32,
            1 => (feats >> 32) as u32,
            _ => 0,
        };
        let gfeat = match self.driver_feature_select {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        };
        b[0x00..0x04].copy_from_slice(&self.device_feature_select.to_le_bytes());
        b[0x04..0x08].copy_from_slice(&dfeat.to_le_bytes());
        b[0x08..0x0c].copy_from_slice(&self.driver_feature_select.to_le_bytes());
        b[0x0c..0x10].copy_from_slice(&gfeat.to_le_bytes());
        b[0x10..0x12].copy_from_slice(&lk(&self.irq.config_vector).to_le_bytes());
        b[0x12..0x14].copy_from_slice(&(self.queues.len() as u16).to_le_bytes());
        b[0x14] = self.status;
        b[0x15] = 0; // config_generation: device config never changes under the driver
        b[0x16..0x18].copy_from_slice(&self.queue_select.to_le_bytes());
        if let Some(q) = self.selected() {
            let r = &self.queues[q];
            b[0x18..0x1a].copy_from_slice(&r.size.to_le_bytes());
            b[0x1a..0x1c].copy_from_slice(&r.vector.to_le_bytes());
            b[0x1c..0x1e].copy_from_slice(&u16::from(r.enabled).to_le_bytes());
            b[0x1e..0x20].copy_from_slice(&(q as u16).to_le_bytes());
            b[0x20..0x28].copy_from_slice(&r.desc.to_le_bytes());
            b[0x28..0x30].copy_from_slice(&r.driver.to_le_bytes());
            b[0x30..0x38].copy_from_slice(&r.device.to_le_bytes());
        }
        b
    }

    fn common_write(&mut self, offset: u64, data: &[u8]) {
        let start = offset as usize;
        let end = start + data.len();
        if end > COMMON_LEN as usize {
            log::warn!("virtio-pci: write past common config at {offset:#x}");
            return;
        }
        let mut img = self.common_image();
        img[start..end].copy_from_slice(data);
        let u16_at = |o: usize| u16::from_le_bytes([img[o], img[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([img[o], img[o + 1], img[o + 2], img[o + 3]]);
        const FIELDS: [(usize, usize); 15] = [
            (0x00, 4),
            (0x08, 4),
            (0x0c, 4),
            (0x10, 2),
            (0x14, 1),
            (0x16, 2),
            (0x18, 2),
            (0x1a, 2),
            (0x1c, 2),
            (0x20, 4),
            (0x24, 4),
            (0x28, 4),
            (0x2c, 4),
            (0x30, 4),
            (0x34, 4),
        ];
        for &(fo, fl) in FIELDS
            .iter()
            .filter(|(fo, fl)| *fo < end && fo + fl > start)
        {
            match fo {
                0x00 => self.device_feature_select = u32_at(fo),
                0x08 => self.driver_feature_select = u32_at(fo),
                0x0c => self.write_driver_features(u32_at(fo)),
                0x10 => {
                    let v = self.valid_vector(u16_at(fo));
                    *lk(&self.irq.config_vector) = v;
                }
                0x14 => self.write_status(img[fo]),
                0x16 => self.queue_select = u16_at(fo),
                _ => self.queue_write(fo, fl, &img),
            }
        }
    }

    fn valid_vector(&self, v: u16) -> u16 {
        if v < lk(&self.irq.msix).vectors() {
            v
        } else {
            NO_VECTOR
        }
    }

    fn write_driver_features(&mut self, v: u32) {
        if self.status & status::FEATURES_OK != 0 {
            log::warn!("virtio-pci: driver features written after FEATURES_OK; ignored");
            return;
        }
        match self.driver_feature_select {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | u64::from(v) << 32,
            _ => {}
        }
    }

    fn queue_write(&mut self, fo: usize, _fl: usize, img: &[u8; 0x40]) {
        let Some(q) = self.selected() else {
            log::warn!(
                "virtio-pci: write to queue {} that does not exist",
                self.queue_select
            );
            return;
        };
        let u16_at = |o: usize| u16::from_le_bytes([img[o], img[o + 1]]);
        let u64_at = |o: usize| u64::from_le_bytes(img[o..o + 8].try_into().unwrap_or([0; 8]));
        if fo == 0x1a {
            let v = self.valid_vector(u16_at(fo));
            self.queues[q].vector = v;
            if let Some(slot) = lk(&self.irq.queue_vectors).get_mut(q) {
                *slot = v;
            }
            return;
        }
        if self.queues[q].enabled {
            log::warn!("virtio-pci: queue {q} reconfigured while enabled; ignored");
            return;
        }
        let r = &mut self.queues[q];
        match fo {
            0x18 => r.size = u16_at(fo),
            0x1c => r.enabled = u16_at(fo) == 1,
            0x20 | 0x24 => r.desc = u64_at(0x20),
            0x28 | 0x2c => r.driver = u64_at(0x28),
            _ => r.device = u64_at(0x30),
        }
    }

    fn write_status(&mut self, v: u8) {
        if v == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        let mut new = v | (old & status::NEEDS_RESET);
        if new & status::FEATURES_OK != 0 && old & status::FEATURES_OK == 0 {
            let offered = self.device.features();
            let ok = self.driver_features & !offered == 0
                && self.driver_features & VIRTIO_F_VERSION_1 != 0;
            if ok {
                self.device.ack_features(self.driver_features);
            } else {
                log::warn!(
                    "virtio-pci: refusing driver features {:#x} (offered {offered:#x})",
                    self.driver_features
                );
                new &= !status::FEATURES_OK;
            }
        }
        if new & status::DRIVER_OK != 0 && !self.active {
            if new & status::FEATURES_OK == 0 {
                log::warn!("virtio-pci: DRIVER_OK without FEATURES_OK; device not started");
            } else if let Err(e) = self.activate() {
                log::error!("virtio-pci: {e}");
                new |= status::NEEDS_RESET;
            }
        }
        self.status = new;
    }

    fn activate(&mut self) -> Result<(), super::ActivateError> {
        let bad = |m: String| super::ActivateError::BadConfig(m);
        let mem = self.host.mem.memory();
        let event_idx = self.driver_features & VIRTIO_RING_F_EVENT_IDX != 0;
        let mut active = Vec::new();
        for (i, r) in self.queues.iter().enumerate().filter(|(_, r)| r.enabled) {
            let max = self.max_sizes[i];
            let mut q = Queue::new(max).map_err(|e| bad(format!("queue {i}: {e:?}")))?;
            q.try_set_size(r.size)
                .map_err(|e| bad(format!("queue {i} size {}: {e:?}", r.size)))?;
            q.try_set_desc_table_address(GuestAddress(r.desc))
                .map_err(|e| bad(format!("queue {i} descriptor table: {e:?}")))?;
            q.try_set_avail_ring_address(GuestAddress(r.driver))
                .map_err(|e| bad(format!("queue {i} driver area: {e:?}")))?;
            q.try_set_used_ring_address(GuestAddress(r.device))
                .map_err(|e| bad(format!("queue {i} device area: {e:?}")))?;
            q.set_event_idx(event_idx);
            q.set_ready(true);
            if !q.is_valid(&*mem) {
                return Err(bad(format!("queue {i} rings lie outside guest memory")));
            }
            active.push(ActiveQueue {
                index: i as u16,
                queue: q,
                kick: self.kicks[i].try_clone()?,
            });
        }
        let interrupt = Arc::new(PciInterrupt(self.irq.clone()));
        self.device
            .activate(self.host.mem.clone(), interrupt, active)?;
        self.active = true;
        Ok(())
    }

    fn reset(&mut self) {
        let ok = !self.active || self.device.reset();
        self.active = false;
        for (r, &max) in self.queues.iter_mut().zip(&self.max_sizes) {
            // queue_size reads as the maximum until the driver writes a smaller one (§4.1.4.3).
            *r = QueueRegs {
                vector: NO_VECTOR,
                size: max,
                ..QueueRegs::default()
            };
        }
        lk(&self.irq.queue_vectors).fill(NO_VECTOR);
        *lk(&self.irq.config_vector) = NO_VECTOR;
        self.irq.isr_read_clear();
        // Drain notifications of the old incarnation so a new one starts clean.
        for k in &self.kicks {
            let _ = k.read();
        }
        self.driver_features = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.queue_select = 0;
        self.status = if ok { 0 } else { status::NEEDS_RESET };
    }

    fn pci_cfg_window(&self) -> (u8, u64, usize) {
        let c = self.config.bytes(self.pci_cfg_cap, 20);
        let off = u32::from_le_bytes([c[8], c[9], c[10], c[11]]);
        let len = u32::from_le_bytes([c[12], c[13], c[14], c[15]]);
        (c[4], u64::from(off), len as usize)
    }
}

impl PciDevice for VirtioPciDevice {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        let data_off = (self.pci_cfg_cap + 16) as u16;
        if offset == data_off {
            let (bar, off, len) = self.pci_cfg_window();
            if bar == 0 && matches!(len, 1 | 2 | 4) && len <= data.len() {
                data.fill(0);
                self.bar_read(0, off, &mut data[..len]);
                return;
            }
        }
        self.config.read(offset, data);
        // Status register bit 3: INTx interrupt pending.
        if let Some(b) = (STATUS_REG as usize)
            .checked_sub(offset as usize)
            .and_then(|i| data.get_mut(i))
        {
            if self.irq.intx_pending() {
                *b |= STATUS_INTERRUPT;
            }
        }
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        let data_off = (self.pci_cfg_cap + 16) as u16;
        if offset == data_off {
            let (bar, off, len) = self.pci_cfg_window();
            if bar == 0 && matches!(len, 1 | 2 | 4) && len <= data.len() {
                self.bar_write(0, off, &data[..len]);
            }
            return;
        }
        self.config.write(offset, data);
        self.irq
            .set_intx_disabled(self.config.command() & COMMAND_INTX_DISABLE != 0);
        let ctrl_off = self.msix_cap + 2;
        let end = offset as usize + data.len();
        if (offset as usize) < ctrl_off + 2 && end > ctrl_off {
            let c = self.config.bytes(ctrl_off, 2);
            let ctrl = u16::from_le_bytes([c[0], c[1]]);
            lk(&self.irq.msix).set_control(ctrl);
        }
        self.sync_ioevents();
    }

    fn bar_defs(&self) -> Vec<PciBarDef> {
        self.config.bar_defs()
    }

    fn bar_regions(&self) -> Vec<PciBarRegion> {
        self.config.bar_regions()
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if bar != 0 || data.is_empty() {
            return;
        }
        let len = data.len() as u64;
        match offset {
            o if o + len <= COMMON_LEN => {
                let img = self.common_image();
                data.copy_from_slice(&img[o as usize..(o + len) as usize]);
            }
            ISR_OFF => data[0] = self.irq.isr_read_clear(),
            o if (DEVICE_OFF..DEVICE_OFF + DEVICE_LEN).contains(&o) => {
                self.device.read_config(o - DEVICE_OFF, data)
            }
            o if (MSIX_TABLE_OFF..MSIX_PBA_OFF).contains(&o) => {
                lk(&self.irq.msix).table_read(o - MSIX_TABLE_OFF, data)
            }
            o if (MSIX_PBA_OFF..BAR_SIZE).contains(&o) => {
                lk(&self.irq.msix).pba_read(o - MSIX_PBA_OFF, data)
            }
            _ => {}
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        if bar != 0 || data.is_empty() {
            return;
        }
        match offset {
            o if o < COMMON_LEN => self.common_write(o, data),
            o if (DEVICE_OFF..DEVICE_OFF + DEVICE_LEN).contains(&o) => {
                self.device.write_config(o - DEVICE_OFF, data)
            }
            o if (NOTIFY_OFF..MSIX_TABLE_OFF).contains(&o) => {
                let q = ((o - NOTIFY_OFF) / u64::from(NOTIFY_MULTIPLIER)) as usize;
                match self.kicks.get(q) {
                    Some(k) => {
                        if let Err(e) = k.write(1) {
                            log::error!("virtio-pci: queue {q} notify failed: {e}");
                        }
                    }
                    None => log::warn!("virtio-pci: notify for missing queue {q}"),
                }
            }
            o if (MSIX_TABLE_OFF..MSIX_PBA_OFF).contains(&o) => {
                lk(&self.irq.msix).table_write(o - MSIX_TABLE_OFF, data)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "pci_tests.rs"]
mod tests;
