//! The virtio device model shared by the virtio-pci transport and the vhost-user backends.
//!
//! A device splits in two layers:
//! - a *queue handler* that turns the requests in one virtqueue into backend I/O and used-ring
//!   entries (`fn process_queue(&mut self, mem, queue) -> bool` returning whether the guest must be
//!   notified). It knows neither threads nor transports, so `rvmm` (worker threads woken by
//!   ioeventfds) and `rvmm-vhost` (vhost-user-backend's event loop) drive the very same code;
//! - a [`VirtioDevice`] that the transport configures (features, config space, queues) and then
//!   activates, handing it guest memory, the queues with their notification eventfds, and an
//!   interrupt line.

mod activation;
pub mod block;
pub mod input;
pub mod net;
pub mod pci;
pub mod scsi;

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemory;
use vmm_sys_util::eventfd::EventFd;

use crate::GuestMemoryAtomic;

/// Whether the driver makes a new buffer available on `queue` within `budget` (spinning on the
/// avail index). Workers call it after serving a queue: catching the driver's next request here
/// saves a thread wake-up and, while the device's notifications stay suppressed, a guest exit.
pub(crate) fn poll_avail<M: GuestMemory>(mem: &M, queue: &Queue, budget: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < budget {
        match queue.avail_idx(mem, Ordering::Acquire) {
            Ok(i) if i.0 != queue.next_avail() => return true,
            Ok(_) => std::hint::spin_loop(),
            // A broken ring is reported when the queue is served next.
            Err(_) => return false,
        }
    }
    false
}

/// Why a device asks the transport to interrupt the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioInterruptType {
    /// The device configuration space changed.
    Config,
    /// Used buffers were added to the queue with this index.
    Queue(u16),
}

/// How a device interrupts the guest; the transport maps it to MSI-X vectors or INTx + ISR.
pub trait VirtioInterrupt: Send + Sync {
    /// Deliver an interrupt of the given kind.
    fn trigger(&self, int_type: VirtioInterruptType) -> io::Result<()>;
}

/// Errors a device reports when it cannot be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver set up the device in a way it cannot run (wrong queue count, bad features).
    #[error("virtio device cannot activate: {0}")]
    BadConfig(String),
    /// A host resource (thread, eventfd, backend) could not be set up.
    #[error("virtio device activation failed: {0}")]
    Io(#[from] io::Error),
}

/// One queue handed to a device at activation: its index, its state as the driver programmed
/// it, and the eventfd the transport signals when the driver notifies it.
pub struct ActiveQueue {
    /// Queue index within the device.
    pub index: u16,
    /// Ring addresses, size and ready state as set by the driver.
    pub queue: Queue,
    /// Signalled on each driver notification (ioeventfd in rvmm).
    pub kick: EventFd,
}

/// A virtio device as seen by a transport.
pub trait VirtioDevice: Send {
    /// Virtio device ID (1 = net, 2 = block, 8 = scsi, 18 = input, …).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Feature bits the device offers (including `VIRTIO_F_VERSION_1`).
    fn features(&self) -> u64;
    /// The driver accepted `features` (a subset of [`VirtioDevice::features`]).
    fn ack_features(&mut self, features: u64);
    /// Read device configuration space at `offset`; bytes past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Write device configuration space; writes to read-only fields are ignored (and logged).
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// DRIVER_OK: start serving `queues` (only those the driver enabled).
    fn activate(
        &mut self,
        mem: GuestMemoryAtomic,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError>;
    /// Device reset by the driver: stop workers and return to the pre-activation state.
    /// Returns false when the device cannot be reset (the transport then sets NEEDS_RESET).
    fn reset(&mut self) -> bool;
}
