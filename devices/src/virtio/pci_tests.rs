//! virtio-pci transport tests, driven through the PCI root's bus devices as a guest would.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::GuestAddress;

use super::*;
use crate::bus::BusDevice;
use crate::pci::config::{COMMAND_INTX_DISABLE, COMMAND_MEMORY};
use crate::pci::msix::tests::RecordingMsi;
use crate::pci::{PciRoot, PciWindows};

#[derive(Default)]
struct Probe {
    acked: Mutex<u64>,
    activated: Mutex<Vec<(u16, u16, bool)>>,
    interrupt: Mutex<Option<Arc<dyn VirtioInterrupt>>>,
    resets: AtomicUsize,
}

struct Dummy(Arc<Probe>);

impl VirtioDevice for Dummy {
    fn device_type(&self) -> u32 {
        2
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![256, 256]
    }
    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX | 1 << 9
    }
    fn ack_features(&mut self, features: u64) {
        *self.0.acked.lock().unwrap() = features;
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let cfg = 0x1122_3344_5566_7788u64.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = cfg.get(offset as usize + i).copied().unwrap_or(0);
        }
    }
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    fn activate(
        &mut self,
        _mem: GuestMemoryAtomic,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), super::super::ActivateError> {
        let mut a = self.0.activated.lock().unwrap();
        for q in queues {
            a.push((q.index, q.queue.size(), q.queue.event_idx_enabled()));
        }
        *self.0.interrupt.lock().unwrap() = Some(interrupt);
        Ok(())
    }
    fn reset(&mut self) -> bool {
        self.0.resets.fetch_add(1, Ordering::SeqCst);
        true
    }
}

#[derive(Default)]
struct Pin(AtomicBool);
impl IntxPin for Pin {
    fn set_level(&self, asserted: bool) -> std::io::Result<()> {
        self.0.store(asserted, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Default)]
struct IoEvents(Mutex<Vec<u64>>);
impl IoEventRegistrar for IoEvents {
    fn register(&self, addr: u64, _len: u32, _fd: &EventFd) -> std::io::Result<()> {
        self.0.lock().unwrap().push(addr);
        Ok(())
    }
    fn unregister(&self, addr: u64, _len: u32, _fd: &EventFd) -> std::io::Result<()> {
        self.0.lock().unwrap().retain(|a| *a != addr);
        Ok(())
    }
}

struct Rig {
    probe: Arc<Probe>,
    msi: Arc<RecordingMsi>,
    pin: Arc<Pin>,
    ioev: Arc<IoEvents>,
    ecam: crate::pci::root::PciConfigMmio,
    win: crate::pci::root::PciMmioWindow,
    slot: u8,
    dev: Arc<Mutex<VirtioPciDevice>>,
}

const BAR: u64 = 0xc000_0000;

impl Rig {
    fn new() -> Self {
        let mem = crate::GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let probe = Arc::new(Probe::default());
        let msi = Arc::new(RecordingMsi::default());
        let pin = Arc::new(Pin::default());
        let ioev = Arc::new(IoEvents::default());
        let host = VirtioPciHost {
            mem: GuestMemoryAtomic::new(mem),
            msi: msi.clone(),
            intx: pin.clone(),
            ioevents: ioev.clone(),
        };
        let dev = Arc::new(Mutex::new(
            VirtioPciDevice::new(Box::new(Dummy(probe.clone())), host, 17).unwrap(),
        ));
        let root = Arc::new(Mutex::new(PciRoot::new(PciWindows::standard(1 << 30))));
        let slot = root.lock().unwrap().add_device(dev.clone()).unwrap();
        let mut r = Rig {
            probe,
            msi,
            pin,
            ioev,
            ecam: PciRoot::ecam(&root),
            win: PciRoot::mmio_window(&root, BAR),
            slot,
            dev,
        };
        r.cfg_w16(4, COMMAND_MEMORY);
        r
    }
    fn cfg_r(&mut self, reg: u64, n: usize) -> u32 {
        let mut b = [0u8; 4];
        self.ecam
            .read((u64::from(self.slot) << 15) | reg, &mut b[..n]);
        u32::from_le_bytes(b)
    }
    fn cfg_w16(&mut self, reg: u64, v: u16) {
        self.ecam
            .write((u64::from(self.slot) << 15) | reg, &v.to_le_bytes());
    }
    fn r(&mut self, off: u64, n: usize) -> u32 {
        let mut b = [0u8; 4];
        self.win.read(off, &mut b[..n]);
        u32::from_le_bytes(b)
    }
    fn w(&mut self, off: u64, n: usize, v: u32) {
        self.win.write(off, &v.to_le_bytes()[..n]);
    }
    /// Walk the capability list: (cfg_type or 0x11 for MSI-X, offset in config space).
    fn caps(&mut self) -> Vec<(u8, u64)> {
        let mut out = Vec::new();
        let mut p = u64::from(self.cfg_r(0x34, 1) as u8);
        while p != 0 && out.len() < 16 {
            let id = self.cfg_r(p, 1) as u8;
            let kind = if id == 9 {
                self.cfg_r(p + 3, 1) as u8
            } else {
                id
            };
            out.push((kind, p));
            p = u64::from(self.cfg_r(p + 1, 1) as u8);
        }
        out
    }
    fn setup_queue(&mut self, q: u16, size: u16, base: u64) {
        self.w(0x16, 2, q.into());
        self.w(0x18, 2, size.into());
        self.w(0x20, 4, base as u32);
        self.w(0x24, 4, 0);
        self.w(0x28, 4, (base + 0x1000) as u32);
        self.w(0x2c, 4, 0);
        self.w(0x30, 4, (base + 0x2000) as u32);
        self.w(0x34, 4, 0);
        self.w(0x1c, 2, 1);
    }
    fn negotiate(&mut self, feats: u64) -> u8 {
        self.w(0x14, 1, u32::from(status::ACKNOWLEDGE | status::DRIVER));
        self.w(0x08, 4, 0);
        self.w(0x0c, 4, feats as u32);
        self.w(0x08, 4, 1);
        self.w(0x0c, 4, (feats >> 32) as u32);
        self.w(
            0x14,
            1,
            u32::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK),
        );
        self.r(0x14, 1) as u8
    }
}

#[test]
fn identity_and_capabilities() {
    let mut r = Rig::new();
    assert_eq!(r.cfg_r(0, 4), 0x1042_1af4);
    assert_eq!(r.cfg_r(8, 1), 1, "modern devices have revision >= 1");
    assert_eq!(r.cfg_r(0x3d, 1), 1, "INTA");
    assert_eq!(r.cfg_r(0x3c, 1), 17);
    let caps = r.caps();
    let kinds: Vec<u8> = caps.iter().map(|c| c.0).collect();
    assert_eq!(kinds, vec![1, 3, 4, 2, 0x11, 5]);
    // The notify capability carries the multiplier; the common one points into BAR 0.
    let notify = caps.iter().find(|c| c.0 == 2).unwrap().1;
    assert_eq!(r.cfg_r(notify + 16, 4), NOTIFY_MULTIPLIER);
    assert_eq!(r.cfg_r(notify + 8, 4), NOTIFY_OFF as u32);
    let msix = caps.iter().find(|c| c.0 == 0x11).unwrap().1;
    assert_eq!(r.cfg_r(msix + 2, 2), 2, "3 vectors: 2 queues + config");
    // Device features through the select window; device config at its offset.
    r.w(0x00, 4, 1);
    assert_eq!(r.r(0x04, 4), 1);
    r.w(0x00, 4, 0);
    assert_eq!(r.r(0x04, 4), (1 << 29) | (1 << 9));
    assert_eq!(r.r(0x12, 2), 2);
    assert_eq!(r.r(DEVICE_OFF + 2, 2), 0x5566);
    // ioeventfds registered at the notify registers of the decoded BAR.
    assert_eq!(
        *r.ioev.0.lock().unwrap(),
        vec![BAR + NOTIFY_OFF, BAR + NOTIFY_OFF + 4]
    );
    r.cfg_w16(4, 0);
    assert!(
        r.ioev.0.lock().unwrap().is_empty(),
        "decode off drops ioeventfds"
    );
}

#[test]
fn negotiation_activation_msix_and_reset() {
    let mut r = Rig::new();
    // Features the device did not offer are refused.
    let st = r.negotiate(VIRTIO_F_VERSION_1 | 1 << 5);
    assert_eq!(st & status::FEATURES_OK, 0);
    r.w(0x14, 1, 0);
    assert_eq!(r.r(0x14, 1), 0);
    // Without VERSION_1 too.
    assert_eq!(r.negotiate(1 << 9) & status::FEATURES_OK, 0);
    r.w(0x14, 1, 0);
    let st = r.negotiate(VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX);
    assert_ne!(st & status::FEATURES_OK, 0);
    assert_eq!(
        *r.probe.acked.lock().unwrap(),
        VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX
    );
    // Vectors: config 0, queue 0 → 1; out-of-range vector reads back NO_VECTOR.
    r.w(0x10, 2, 0);
    r.setup_queue(0, 128, 0x1_0000);
    r.w(0x1a, 2, 1);
    assert_eq!(r.r(0x1a, 2), 1);
    r.w(0x16, 2, 1);
    r.w(0x1a, 2, 9);
    assert_eq!(r.r(0x1a, 2), u32::from(NO_VECTOR));
    r.w(0x16, 2, 0);
    assert_eq!(r.r(0x1e, 2), 0, "queue_notify_off");
    assert_eq!(r.r(0x20, 4), 0x1_0000);
    r.w(0x14, 1, 0xf);
    assert_eq!(r.r(0x14, 1), 0xf);
    assert_eq!(*r.probe.activated.lock().unwrap(), vec![(0, 128, true)]);
    // Enabled queues cannot be reconfigured.
    r.w(0x18, 2, 64);
    assert_eq!(r.r(0x18, 2), 128);

    // INTx while MSI-X is off: ISR bit + line, cleared by reading ISR.
    let irq = r.probe.interrupt.lock().unwrap().clone().unwrap();
    irq.trigger(VirtioInterruptType::Queue(0)).unwrap();
    assert!(r.pin.0.load(Ordering::SeqCst));
    assert_eq!(r.r(ISR_OFF, 1), 1);
    assert!(!r.pin.0.load(Ordering::SeqCst));
    assert_eq!(r.r(ISR_OFF, 1), 0);
    // Completions while the line is up keep it up; one ISR read collects them all.
    irq.trigger(VirtioInterruptType::Queue(0)).unwrap();
    irq.trigger(VirtioInterruptType::Config).unwrap();
    irq.trigger(VirtioInterruptType::Queue(0)).unwrap();
    assert!(r.pin.0.load(Ordering::SeqCst));
    assert_eq!(r.r(ISR_OFF, 1), 3);
    assert!(!r.pin.0.load(Ordering::SeqCst));
    irq.trigger(VirtioInterruptType::Config).unwrap();
    assert!(
        r.pin.0.load(Ordering::SeqCst),
        "raised again after the ISR read"
    );
    assert_eq!(r.r(ISR_OFF, 1), 2);

    // INTx disable (command bit 10): a pending interrupt leaves the line but shows in the
    // status register; enabling INTx again raises the line for it.
    irq.trigger(VirtioInterruptType::Queue(0)).unwrap();
    assert!(r.pin.0.load(Ordering::SeqCst));
    assert_ne!(r.cfg_r(6, 2) & 0x08, 0, "status: interrupt pending");
    r.cfg_w16(4, COMMAND_MEMORY | COMMAND_INTX_DISABLE);
    assert!(
        !r.pin.0.load(Ordering::SeqCst),
        "disabled INTx drops the line"
    );
    assert_ne!(r.cfg_r(4, 4) & (0x08 << 16), 0, "still pending in status");
    r.cfg_w16(4, COMMAND_MEMORY);
    assert!(
        r.pin.0.load(Ordering::SeqCst),
        "re-enabled INTx raises it again"
    );
    r.cfg_w16(4, COMMAND_MEMORY | COMMAND_INTX_DISABLE);
    assert_eq!(r.r(ISR_OFF, 1), 1);
    assert_eq!(
        r.cfg_r(6, 1) & 0x08,
        0,
        "no longer pending after the ISR read"
    );
    irq.trigger(VirtioInterruptType::Config).unwrap();
    assert!(!r.pin.0.load(Ordering::SeqCst), "no INTx while disabled");
    assert_eq!(r.r(ISR_OFF, 1), 2, "the ISR still records it");
    r.cfg_w16(4, COMMAND_MEMORY);
    assert!(
        !r.pin.0.load(Ordering::SeqCst),
        "nothing pending, nothing raised"
    );

    // MSI-X on: program vector 1, unmask, and the queue interrupt goes there.
    let msix = r.caps().iter().find(|c| c.0 == 0x11).unwrap().1;
    r.cfg_w16(msix + 2, 1 << 15);
    r.w(MSIX_TABLE_OFF + 16, 4, 0xfee0_0000);
    r.w(MSIX_TABLE_OFF + 24, 4, 0x45);
    irq.trigger(VirtioInterruptType::Queue(0)).unwrap();
    assert!(r.msi.sent.lock().unwrap().is_empty(), "masked → pending");
    assert_eq!(r.r(MSIX_PBA_OFF, 1), 2);
    r.w(MSIX_TABLE_OFF + 28, 4, 0);
    assert_eq!(*r.msi.sent.lock().unwrap(), vec![1]);
    assert!(!r.pin.0.load(Ordering::SeqCst), "no INTx while MSI-X is on");

    // A notify write that exits is forwarded to the kick eventfd.
    r.w(NOTIFY_OFF, 2, 0);
    assert_eq!(r.dev.lock().unwrap().kick_fds()[0].read().unwrap(), 1);

    // Reset: status 0, queues cleared, device reset once.
    r.w(0x14, 1, 0);
    assert_eq!(r.r(0x14, 1), 0);
    // queue_size reads as the device's maximum again (virtio 1.2 §4.1.4.3).
    assert_eq!(r.r(0x18, 2), 256);
    assert_eq!(r.r(0x1c, 2), 0);
    assert_eq!(r.probe.resets.load(Ordering::SeqCst), 1);
}

#[test]
fn bad_rings_set_needs_reset_and_pci_cfg_window_works() {
    let mut r = Rig::new();
    r.negotiate(VIRTIO_F_VERSION_1);
    // Rings beyond the 1 MiB of guest memory.
    r.setup_queue(0, 128, 0x20_0000);
    r.w(0x14, 1, 0xf);
    assert_ne!(r.r(0x14, 1) as u8 & status::NEEDS_RESET, 0);
    assert!(r.probe.activated.lock().unwrap().is_empty());
    // Size that is not a power of two is also refused.
    r.w(0x14, 1, 0);
    r.negotiate(VIRTIO_F_VERSION_1);
    r.setup_queue(0, 100, 0x1_0000);
    r.w(0x14, 1, 0xf);
    assert_ne!(r.r(0x14, 1) as u8 & status::NEEDS_RESET, 0);

    // VIRTIO_PCI_CAP_PCI_CFG: read num_queues through config space.
    let p = r.caps().iter().find(|c| c.0 == 5).unwrap().1;
    let slot = u64::from(r.slot) << 15;
    r.ecam.write(slot | (p + 4), &[0]);
    r.ecam.write(slot | (p + 8), &0x12u32.to_le_bytes());
    r.ecam.write(slot | (p + 12), &2u32.to_le_bytes());
    assert_eq!(r.cfg_r(p + 16, 4), 2);
    // Junk accesses do not panic.
    r.w(0x7ff0, 4, 0xffff_ffff);
    r.w(0x37, 4, 0xffff_ffff);
    r.w(NOTIFY_OFF + 0x400, 2, 0);
    assert_eq!(r.r(0x5000_0000, 4), 0xffff_ffff);
}
