//! Interrupt plumbing: the GSI routing table (legacy ISA/IOAPIC pins plus MSI routes),
//! a GSI allocator for MSI, and irqfd/ioeventfd registration.

use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::{IoEventAddress, VmFd};
use vmm_sys_util::eventfd::EventFd;

/// GSIs 0..24 are the IOAPIC pins; MSI routes are allocated above them.
pub const FIRST_MSI_GSI: u32 = arch::layout::IOAPIC_PINS;
/// Size of KVM's routing table (KVM_MAX_IRQ_ROUTES is 4096).
pub const MAX_GSI: u32 = 4095;

/// The legacy routes: ISA IRQ `i` to the 8259 pin `i` and IOAPIC pin `i`, except that the
/// PIT's IRQ 0 arrives on IOAPIC pin 2 (as the MADT's interrupt source override says) and
/// IRQ 2 is the PIC cascade.
pub fn legacy_routes() -> Vec<kvm_irq_routing_entry> {
    let mut v = Vec::new();
    let chip = |gsi: u32, irqchip: u32, pin: u32| {
        let mut e = kvm_irq_routing_entry {
            gsi,
            type_: KVM_IRQ_ROUTING_IRQCHIP,
            ..Default::default()
        };
        e.u.irqchip.irqchip = irqchip;
        e.u.irqchip.pin = pin;
        e
    };
    for gsi in 0..16u32 {
        if gsi == 2 {
            continue;
        }
        let (pic, pin) = if gsi < 8 {
            (KVM_IRQCHIP_PIC_MASTER, gsi)
        } else {
            (KVM_IRQCHIP_PIC_SLAVE, gsi - 8)
        };
        v.push(chip(gsi, pic, pin));
    }
    for gsi in 0..arch::layout::IOAPIC_PINS {
        match gsi {
            0 => v.push(chip(0, KVM_IRQCHIP_IOAPIC, 2)),
            2 => {}
            _ => v.push(chip(gsi, KVM_IRQCHIP_IOAPIC, gsi)),
        }
    }
    v
}

#[derive(Default)]
struct Table {
    msi: Vec<kvm_irq_routing_entry>,
    next_gsi: u32,
    free: Vec<u32>,
}

/// The VM's interrupt routing, shared by everyone who wires up devices.
#[derive(Clone)]
pub struct IrqRouter {
    vm: Arc<VmFd>,
    table: Arc<Mutex<Table>>,
}

impl IrqRouter {
    /// Install the legacy routes on `vm`.
    pub fn new(vm: Arc<VmFd>) -> Result<Self> {
        let r = Self {
            vm,
            table: Arc::new(Mutex::new(Table {
                next_gsi: FIRST_MSI_GSI,
                ..Default::default()
            })),
        };
        r.commit(&r.lock())?;
        Ok(r)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn commit(&self, t: &Table) -> Result<()> {
        let mut all = legacy_routes();
        all.extend_from_slice(&t.msi);
        let routing = KvmIrqRouting::from_entries(&all)
            .map_err(|e| anyhow::anyhow!("cannot build the GSI routing table: {e:?}"))?;
        self.vm
            .set_gsi_routing(&routing)
            .context("KVM_SET_GSI_ROUTING failed")
    }

    /// Allocate a GSI for an MSI vector.
    pub fn alloc_gsi(&self) -> Result<u32> {
        let mut t = self.lock();
        if let Some(g) = t.free.pop() {
            return Ok(g);
        }
        if t.next_gsi > MAX_GSI {
            bail!(
                "out of GSIs for MSI vectors ({} in use)",
                MAX_GSI - FIRST_MSI_GSI + 1
            );
        }
        t.next_gsi += 1;
        Ok(t.next_gsi - 1)
    }

    /// Point `gsi` at the MSI message `(address, data)` (replacing an earlier route).
    pub fn set_msi_route(&self, gsi: u32, address: u64, data: u32) -> Result<()> {
        if gsi < FIRST_MSI_GSI {
            bail!("GSI {gsi} is a legacy IOAPIC pin, not an MSI route");
        }
        let mut e = kvm_irq_routing_entry {
            gsi,
            type_: KVM_IRQ_ROUTING_MSI,
            ..Default::default()
        };
        e.u.msi.address_lo = address as u32;
        e.u.msi.address_hi = (address >> 32) as u32;
        e.u.msi.data = data;
        let mut t = self.lock();
        t.msi.retain(|r| r.gsi != gsi);
        t.msi.push(e);
        self.commit(&t)
    }

    /// Drop the MSI route of `gsi` and return the GSI to the pool.
    pub fn free_gsi(&self, gsi: u32) -> Result<()> {
        let mut t = self.lock();
        t.msi.retain(|r| r.gsi != gsi);
        if gsi >= FIRST_MSI_GSI && !t.free.contains(&gsi) {
            t.free.push(gsi);
        }
        self.commit(&t)
    }

    /// Make writes to `fd` raise `gsi`.
    pub fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        self.vm
            .register_irqfd(fd, gsi)
            .with_context(|| format!("KVM_IRQFD for GSI {gsi} failed"))
    }

    /// Stop `fd` raising `gsi`.
    pub fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        self.vm
            .unregister_irqfd(fd, gsi)
            .with_context(|| format!("KVM_IRQFD deassign for GSI {gsi} failed"))
    }

    /// A new eventfd wired to `gsi`.
    pub fn irqfd(&self, gsi: u32) -> Result<EventFd> {
        let fd = EventFd::new(libc::EFD_NONBLOCK).context("cannot create an eventfd")?;
        self.register_irqfd(&fd, gsi)?;
        Ok(fd)
    }

    /// Signal `fd` when the guest writes `len` bytes at `addr` (a PIO port or MMIO address),
    /// optionally only when the value equals `datamatch`.
    pub fn register_ioeventfd(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u64>,
    ) -> Result<()> {
        let r = match datamatch {
            Some(v) => self.vm.register_ioevent(fd, &addr, v),
            None => self.vm.register_ioevent(fd, &addr, kvm_ioctls::NoDatamatch),
        };
        r.with_context(|| format!("KVM_IOEVENTFD at {addr:?} failed"))
    }

    /// Undo [`IrqRouter::register_ioeventfd`].
    pub fn unregister_ioeventfd(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u64>,
    ) -> Result<()> {
        let r = match datamatch {
            Some(v) => self.vm.unregister_ioevent(fd, &addr, v),
            None => self
                .vm
                .unregister_ioevent(fd, &addr, kvm_ioctls::NoDatamatch),
        };
        r.with_context(|| format!("KVM_IOEVENTFD deassign at {addr:?} failed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_routes_follow_the_madt_override() {
        let r = legacy_routes();
        let routes_of = |gsi: u32| -> Vec<(u32, u32)> {
            r.iter()
                .filter(|e| e.gsi == gsi)
                // SAFETY: every legacy route is an irqchip route.
                .map(|e| unsafe { (e.u.irqchip.irqchip, e.u.irqchip.pin) })
                .collect()
        };
        assert_eq!(
            routes_of(0),
            vec![(KVM_IRQCHIP_PIC_MASTER, 0), (KVM_IRQCHIP_IOAPIC, 2)]
        );
        assert_eq!(routes_of(2), vec![]);
        assert_eq!(
            routes_of(4),
            vec![(KVM_IRQCHIP_PIC_MASTER, 4), (KVM_IRQCHIP_IOAPIC, 4)]
        );
        assert_eq!(
            routes_of(9),
            vec![(KVM_IRQCHIP_PIC_SLAVE, 1), (KVM_IRQCHIP_IOAPIC, 9)]
        );
        assert_eq!(routes_of(20), vec![(KVM_IRQCHIP_IOAPIC, 20)]);
        assert!(r.iter().all(|e| e.gsi < FIRST_MSI_GSI));
    }
}
