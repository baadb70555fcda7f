//! Interrupt lines handed to devices, so that devices never touch KVM.

use std::io;

/// An edge-triggered interrupt a device can raise (an irqfd, an MSI vector, a vhost-user call
/// eventfd, or a test counter).
pub trait Interrupt: Send + Sync {
    /// Deliver the interrupt to the guest.
    fn trigger(&self) -> io::Result<()>;
}

impl Interrupt for vmm_sys_util::eventfd::EventFd {
    fn trigger(&self) -> io::Result<()> {
        self.write(1)
    }
}
