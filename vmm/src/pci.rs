//! The PCI root complex on this VM: config space at 0xCF8 and ECAM, the MMIO windows BARs are
//! routed through, its ACPI description, and the KVM-backed MSI, INTx and ioeventfd services
//! that PCI devices are handed (devices never call KVM themselves).

use std::io;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use kvm_ioctls::{IoEventAddress, VmFd};
use vmm_sys_util::eventfd::EventFd;

use devices::pci::{
    self, IntxPin, IoEventRegistrar, MsiController, MsiMessage, PciRoot, PciWindows,
};

use crate::irq::IrqRouter;
use crate::vcpu::Buses;

/// Extra ACPI content a platform component contributes.
#[derive(Default)]
pub struct AcpiExtras {
    /// AML appended to the DSDT.
    pub dsdt_aml: Vec<u8>,
    /// Complete tables listed in the XSDT.
    pub tables: Vec<Vec<u8>>,
}

fn io_err(e: anyhow::Error) -> io::Error {
    io::Error::other(format!("{e:#}"))
}

/// Create the PCI root for a guest whose RAM ends at `ram_end`, map it on the buses and
/// return it with its ACPI tables/AML.
pub fn setup(buses: &Buses, ram_end: u64) -> Result<(Arc<Mutex<PciRoot>>, AcpiExtras)> {
    let windows = PciWindows::standard(ram_end);
    let root = Arc::new(Mutex::new(PciRoot::new(windows)));
    buses
        .pio
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            Arc::new(Mutex::new(PciRoot::config_io(&root))),
            pci::CONFIG_IO_BASE,
            pci::CONFIG_IO_SIZE,
        )
        .context("cannot map PCI config ports 0xcf8-0xcff")?;
    let mut mmio = buses.mmio.write().unwrap_or_else(|p| p.into_inner());
    mmio.insert(
        Arc::new(Mutex::new(PciRoot::ecam(&root))),
        pci::ECAM_BASE,
        pci::ECAM_SIZE,
    )
    .context("cannot map the PCIe ECAM window")?;
    let mut wins = vec![windows.mmio32];
    wins.extend(windows.mmio64);
    for (base, size) in wins {
        mmio.insert(
            Arc::new(Mutex::new(PciRoot::mmio_window(&root, base))),
            base,
            size,
        )
        .with_context(|| format!("cannot map the PCI MMIO window at {base:#x}"))?;
    }
    let extras = AcpiExtras {
        dsdt_aml: pci::acpi::root_bridge_aml(windows),
        tables: vec![pci::acpi::mcfg(
            arch::acpi::OEM_ID,
            arch::acpi::OEM_TABLE_ID,
        )],
    };
    Ok((root, extras))
}

/// MSI-X delivery through one KVM MSI route and irqfd per vector, created on first use.
pub struct KvmMsi {
    router: IrqRouter,
    vectors: Mutex<Vec<Option<(u32, EventFd)>>>,
}

impl KvmMsi {
    /// A controller for a device with `vectors` MSI-X vectors.
    pub fn new(router: IrqRouter, vectors: u16) -> Self {
        Self {
            router,
            vectors: Mutex::new((0..vectors).map(|_| None).collect()),
        }
    }
}

impl MsiController for KvmMsi {
    fn configure(&self, vector: u16, msg: MsiMessage, _masked: bool) -> io::Result<()> {
        let mut v = self.vectors.lock().unwrap_or_else(|p| p.into_inner());
        let slot = v
            .get_mut(usize::from(vector))
            .ok_or_else(|| io::Error::other(format!("MSI-X vector {vector} out of range")))?;
        if slot.is_none() {
            let gsi = self.router.alloc_gsi().map_err(io_err)?;
            let fd = self.router.irqfd(gsi).map_err(io_err)?;
            *slot = Some((gsi, fd));
        }
        let (gsi, _) = slot.as_ref().ok_or_else(|| io::Error::other("no route"))?;
        self.router
            .set_msi_route(*gsi, msg.address, msg.data)
            .map_err(io_err)
    }

    fn trigger(&self, vector: u16) -> io::Result<()> {
        let v = self.vectors.lock().unwrap_or_else(|p| p.into_inner());
        match v.get(usize::from(vector)) {
            Some(Some((_, fd))) => fd.write(1),
            _ => Err(io::Error::other(format!(
                "MSI-X vector {vector} fired before the guest configured it"
            ))),
        }
    }
}

impl Drop for KvmMsi {
    fn drop(&mut self) {
        let v = self.vectors.get_mut().unwrap_or_else(|p| p.into_inner());
        for (gsi, fd) in v.iter().flatten() {
            let _ = self.router.unregister_irqfd(fd, *gsi);
            let _ = self.router.free_gsi(*gsi);
        }
    }
}

/// A PCI INTx pin as the level of an IOAPIC input (KVM_IRQ_LINE).
pub struct KvmIntx {
    vm: Arc<VmFd>,
    gsi: u32,
}

impl KvmIntx {
    /// The pin of `slot`/`pin` (0 = INTA).
    pub fn new(vm: Arc<VmFd>, slot: u8, pin: u8) -> Self {
        Self {
            vm,
            gsi: pci::intx_gsi(slot, pin),
        }
    }
}

impl IntxPin for KvmIntx {
    fn set_level(&self, asserted: bool) -> io::Result<()> {
        self.vm
            .set_irq_line(self.gsi, asserted)
            .map_err(|e| io::Error::other(format!("KVM_IRQ_LINE {}: {e}", self.gsi)))
    }
}

/// ioeventfds on MMIO addresses.
pub struct KvmIoEvents(pub IrqRouter);

impl IoEventRegistrar for KvmIoEvents {
    fn register(&self, addr: u64, _len: u32, fd: &EventFd) -> io::Result<()> {
        self.0
            .register_ioeventfd(fd, IoEventAddress::Mmio(addr), None)
            .map_err(io_err)
    }

    fn unregister(&self, addr: u64, _len: u32, fd: &EventFd) -> io::Result<()> {
        self.0
            .unregister_ioeventfd(fd, IoEventAddress::Mmio(addr), None)
            .map_err(io_err)
    }
}
