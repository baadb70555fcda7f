//! virtio-blk: a disk image as a virtio block device (virtio 1.2 §5.2).
//!
//! [`request::BlockQueueHandler`] is the queue handler shared with `rvmm-vhost blk`;
//! [`Block`] is the in-VMM [`VirtioDevice`] that runs one worker thread per queue, woken by the
//! queue's notification eventfd, so vCPU threads never wait for disk I/O. After serving requests
//! a worker briefly polls the avail ring before it sleeps again.

pub mod disk;
pub mod request;

use std::sync::Arc;
use std::time::Duration;

use vm_memory::GuestAddressSpace;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub use disk::{Disk, DiskCache, DiskConfig, DiskDiscard, DiskError, DiskFormat, ImageLock};
pub use request::{BlockQueueHandler, BlockSettings};

use super::{
    poll_avail, ActivateError, ActiveQueue, VirtioDevice, VirtioInterrupt, VirtioInterruptType,
};
use crate::virtio::activation::{read_config_bytes, WorkerThread};
use crate::GuestMemoryAtomic;

/// Feature bits (virtio 1.2 §5.2.3 and §6).
pub mod features {
    /// Maximum segment size in `size_max`.
    pub const SIZE_MAX: u64 = 1 << 1;
    /// Maximum segment count in `seg_max`.
    pub const SEG_MAX: u64 = 1 << 2;
    /// Read-only disk.
    pub const RO: u64 = 1 << 5;
    /// Block size in `blk_size`.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// Flush command.
    pub const FLUSH: u64 = 1 << 9;
    /// Topology fields.
    pub const TOPOLOGY: u64 = 1 << 10;
    /// Multiple queues.
    pub const MQ: u64 = 1 << 12;
    /// Discard command.
    pub const DISCARD: u64 = 1 << 13;
    /// Write-zeroes command.
    pub const WRITE_ZEROES: u64 = 1 << 14;
    /// Indirect descriptors.
    pub const INDIRECT_DESC: u64 = 1 << 28;
    /// used_event / avail_event notification suppression.
    pub const EVENT_IDX: u64 = 1 << 29;
    /// Virtio 1.x device.
    pub const VERSION_1: u64 = 1 << 32;
}

/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Largest data segment (`size_max`).
pub const SIZE_MAX: u32 = 1 << 20;
/// Largest number of data segments (`seg_max`): the queue less header and status.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Logical block size reported to the guest.
pub const BLK_SIZE: u32 = 512;
/// Physical block size as a power of two of logical blocks (4 KiB physical).
pub const PHYSICAL_BLOCK_EXP: u8 = 3;

/// Feature bits offered for a disk with `s` and `queues` queues.
pub fn device_features(s: &BlockSettings, queues: u16) -> u64 {
    use features::*;
    let mut f =
        VERSION_1 | SIZE_MAX | SEG_MAX | BLK_SIZE | FLUSH | TOPOLOGY | EVENT_IDX | INDIRECT_DESC;
    if queues > 1 {
        f |= MQ;
    }
    if s.read_only {
        f |= RO;
    } else {
        f |= WRITE_ZEROES;
        if s.discard {
            f |= DISCARD;
        }
    }
    f
}

/// The device configuration space (`struct virtio_blk_config`, 60 bytes).
pub fn config_space(s: &BlockSettings, queues: u16) -> Vec<u8> {
    let mut c = vec![0u8; 60];
    c[0..8].copy_from_slice(&(s.backend.size() / request::SECTOR).to_le_bytes());
    c[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
    c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
    c[20..24].copy_from_slice(&BLK_SIZE.to_le_bytes());
    c[24] = PHYSICAL_BLOCK_EXP;
    c[26..28].copy_from_slice(&1u16.to_le_bytes()); // min_io_size (blocks)
    c[28..32].copy_from_slice(&8u32.to_le_bytes()); // opt_io_size (blocks)
    c[34..36].copy_from_slice(&queues.to_le_bytes());
    c[36..40].copy_from_slice(&request::MAX_DISCARD_SECTORS.to_le_bytes());
    c[40..44].copy_from_slice(&request::MAX_DISCARD_SEG.to_le_bytes());
    c[44..48].copy_from_slice(&8u32.to_le_bytes()); // discard alignment (sectors)
    c[48..52].copy_from_slice(&request::MAX_DISCARD_SECTORS.to_le_bytes());
    c[52..56].copy_from_slice(&request::MAX_DISCARD_SEG.to_le_bytes());
    c[56] = u8::from(s.discard);
    c
}

/// Settings for an opened disk.
pub fn settings_for(disk: &Disk) -> BlockSettings {
    let mut serial = [0u8; 20];
    if let Some(s) = &disk.config.serial {
        let b = s.as_bytes();
        let n = b.len().min(20);
        serial[..n].copy_from_slice(&b[..n]);
    }
    BlockSettings {
        backend: disk.backend.clone(),
        read_only: disk.config.readonly || disk.backend.is_read_only(),
        discard: disk.config.discard == DiskDiscard::Unmap,
        serial,
    }
}

/// The in-VMM virtio-blk device.
pub struct Block {
    settings: BlockSettings,
    queues: u16,
    acked: u64,
    workers: Vec<WorkerThread>,
    _disk: Option<Disk>,
}

impl Block {
    /// A device on `disk` with `queues` queues (one per vCPU is what MQ is for).
    pub fn new(disk: Disk, queues: u16) -> Self {
        let settings = settings_for(&disk);
        Self {
            settings,
            queues: queues.clamp(1, 64),
            acked: 0,
            workers: Vec::new(),
            _disk: Some(disk),
        }
    }

    /// A device on a bare backend (tests and tools that do their own locking).
    pub fn with_settings(settings: BlockSettings, queues: u16) -> Self {
        Self {
            settings,
            queues: queues.clamp(1, 64),
            acked: 0,
            workers: Vec::new(),
            _disk: None,
        }
    }

    fn stop_workers(&mut self) {
        for w in self.workers.drain(..) {
            w.stop("virtio-blk");
        }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

const KICK: u64 = 1;
const STOP: u64 = 2;

/// How long a worker watches the avail ring after serving requests before it sleeps: a driver
/// that waits for each completion (queue depth 1) posts its next request within microseconds,
/// and catching it here saves a thread wake-up, the largest host cost of a 4 KiB request
/// (QEMU's IOThreads poll for up to 32 µs by default for the same reason).
const POLL: Duration = Duration::from_micros(50);

fn run_worker(
    mut handler: BlockQueueHandler,
    mem: GuestMemoryAtomic,
    mut q: ActiveQueue,
    interrupt: Arc<dyn VirtioInterrupt>,
    stop: EventFd,
) {
    let epoll = match Epoll::new() {
        Ok(e) => e,
        Err(e) => {
            log::error!("virtio-blk: queue {}: epoll: {e}", q.index);
            return;
        }
    };
    use std::os::unix::io::AsRawFd;
    for (fd, tok) in [(q.kick.as_raw_fd(), KICK), (stop.as_raw_fd(), STOP)] {
        if let Err(e) = epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, tok),
        ) {
            log::error!("virtio-blk: queue {}: epoll add: {e}", q.index);
            return;
        }
    }
    let mut events = [EpollEvent::default(); 2];
    // Requests queued before activation (or before the ioeventfd existed) are served now.
    let mut pending = true;
    loop {
        if pending {
            let _ = q.kick.read();
            let m = mem.memory();
            if handler.process_queue(&*m, &mut q.queue) {
                if let Err(e) = interrupt.trigger(VirtioInterruptType::Queue(q.index)) {
                    log::error!("virtio-blk: queue {} interrupt: {e}", q.index);
                }
            }
            if poll_avail(&*m, &q.queue, POLL) {
                continue;
            }
        }
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
            Err(e) => {
                log::error!("virtio-blk: queue {} wait: {e}", q.index);
                return;
            }
        };
        pending = false;
        for ev in &events[..n] {
            match ev.data() {
                STOP => return,
                _ => pending = true,
            }
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        2
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; self.queues as usize]
    }

    fn features(&self) -> u64 {
        device_features(&self.settings, self.queues)
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features & self.features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let c = config_space(&self.settings, self.queues);
        read_config_bytes(&c, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log::warn!(
            "virtio-blk: ignored {}-byte write to read-only config at {offset:#x}",
            data.len()
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemoryAtomic,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        self.stop_workers();
        for q in queues {
            let stop = EventFd::new(EFD_NONBLOCK)?;
            let stop2 = stop.try_clone()?;
            let handler = BlockQueueHandler::new(self.settings.clone());
            let (m, i) = (mem.clone(), interrupt.clone());
            let name = format!("virtio-blk-q{}", q.index);
            self.workers.push(WorkerThread::spawn(name, stop, move || {
                run_worker(handler, m, q, i, stop2)
            })?);
        }
        Ok(())
    }

    fn reset(&mut self) -> bool {
        self.stop_workers();
        self.acked = 0;
        true
    }
}

#[cfg(test)]
mod tests;
