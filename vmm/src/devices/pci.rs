//! Putting a virtio device on the VM's PCI bus with KVM-backed MSI-X, INTx and ioeventfds.

use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result};
use kvm_ioctls::VmFd;

use ::devices::pci::{intx_gsi, IntxPin, PciDevice};
use ::devices::virtio::pci::{VirtioPciDevice, VirtioPciHost};
use ::devices::virtio::VirtioDevice;
use ::devices::GuestMemoryAtomic;

use crate::pci::{KvmIntx, KvmIoEvents, KvmMsi};
use crate::vm::Vm;

/// The INTx pin of a function whose slot is only known once the root bus placed it.
struct SlotIntx(OnceLock<KvmIntx>);

impl IntxPin for SlotIntx {
    fn set_level(&self, asserted: bool) -> io::Result<()> {
        match self.0.get() {
            Some(pin) => pin.set_level(asserted),
            None => Err(io::Error::other("INTx raised before the device had a slot")),
        }
    }
}

/// Wrap `dev` in the virtio-pci transport and add it to `vm`'s root bus; returns its slot.
pub fn add_virtio(vm: &Vm, dev: Box<dyn VirtioDevice>, what: &str) -> Result<u8> {
    let vectors = u16::try_from(dev.queue_max_sizes().len() + 1).unwrap_or(u16::MAX);
    let intx = Arc::new(SlotIntx(OnceLock::new()));
    let host = VirtioPciHost {
        mem: GuestMemoryAtomic::new(vm.memory.clone()),
        msi: Arc::new(KvmMsi::new(vm.irq.clone(), vectors)),
        intx: intx.clone(),
        ioevents: Arc::new(KvmIoEvents(vm.irq.clone())),
    };
    let pdev = VirtioPciDevice::new(dev, host, 0)
        .with_context(|| format!("cannot create the virtio-pci function of {what}"))?;
    let shared = Arc::new(Mutex::new(pdev));
    let slot = vm
        .pci
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .add_device(shared.clone())
        .with_context(|| format!("cannot put {what} on the PCI bus"))?;
    let vmfd: Arc<VmFd> = vm.fd.clone();
    let _ = intx.0.set(KvmIntx::new(vmfd, slot, 0));
    // The interrupt-line register tells the guest which IOAPIC input INTA raises.
    let gsi = intx_gsi(slot, 0);
    shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .config_write(0x3c, &[gsi as u8]);
    log::info!("{what}: PCI 00:{slot:02x}.0, INTA on GSI {gsi}");
    Ok(slot)
}
