//! `rvmm-vhost blk`: a disk image served as a vhost-user-blk device.
//!
//! The frontend (QEMU's `vhost-user-blk-pci`, Cloud Hypervisor, …) owns the virtqueues in shared
//! guest memory; this backend serves them with the very queue handler rvmm's own virtio-blk
//! uses ([`devices::virtio::block::BlockQueueHandler`]). It serves one connection and exits
//! when the frontend disconnects.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{bail, Context};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackendMut, VringRwLock, VringT};
use vm_memory::GuestAddressSpace;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use devices::virtio::block::{self, BlockQueueHandler, BlockSettings, DiskConfig};
use devices::GuestMemoryAtomic;

/// Flags of `rvmm-vhost blk`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path of the vhost-user UNIX socket to listen on (replaced if it exists).
    #[arg(long)]
    pub socket: PathBuf,
    /// The disk: PATH[,format=qcow2|raw][,readonly=on][,cache=writeback|none|unsafe]
    /// [,serial=STR][,discard=unmap|ignore].
    #[arg(long)]
    pub disk: DiskConfig,
    /// Number of virtqueues offered (VIRTIO_BLK_F_MQ when more than one).
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
}

/// The vhost-user-blk backend: one queue handler per virtqueue.
pub struct BlkBackend {
    settings: BlockSettings,
    handlers: Vec<Mutex<BlockQueueHandler>>,
    mem: Option<GuestMemoryAtomic>,
    queues: u16,
}

impl BlkBackend {
    /// A backend for a disk with `settings` and `queues` virtqueues.
    pub fn new(settings: BlockSettings, queues: u16) -> Self {
        let queues = queues.clamp(1, 64);
        Self {
            handlers: (0..queues)
                .map(|_| Mutex::new(BlockQueueHandler::new(settings.clone())))
                .collect(),
            settings,
            mem: None,
            queues,
        }
    }
}

type Vring = VringRwLock<GuestMemoryAtomic>;

impl VhostUserBackendMut for BlkBackend {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        self.queues as usize
    }

    fn max_queue_size(&self) -> usize {
        block::QUEUE_SIZE as usize
    }

    fn features(&self) -> u64 {
        block::device_features(&self.settings, self.queues)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ
    }

    fn set_event_idx(&mut self, _enabled: bool) {
        // The library sets the flag on each queue; the handler reads it from there.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        // vhost-user limits config messages to 256 bytes; never allocate what a frontend asks.
        let size = size.min(256);
        let cfg = block::config_space(&self.settings, self.queues);
        super::config_slice(&cfg, offset, size)
    }

    fn update_memory(&mut self, mem: GuestMemoryAtomic) -> std::io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Vring],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        if evset != EventSet::IN {
            return Err(std::io::Error::other(format!(
                "unexpected event set {evset:?}"
            )));
        }
        let q = device_event as usize;
        let (Some(vring), Some(handler)) = (vrings.get(q), self.handlers.get(q)) else {
            return Err(std::io::Error::other(format!(
                "event for unknown queue {q}"
            )));
        };
        let Some(mem) = self.mem.as_ref() else {
            log::warn!("vhost-blk: queue {q} kicked before the memory table arrived");
            return Ok(());
        };
        let mem = mem.memory();
        let mut handler = handler.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = vring.get_mut();
        if handler.process_queue(&*mem, state.get_queue_mut()) {
            state.signal_used_queue()?;
        }
        Ok(())
    }
}

/// Serve `args.disk` on `args.socket` until the frontend disconnects.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.queues == 0 || args.queues > 64 {
        bail!("--queues must be between 1 and 64, not {}", args.queues);
    }
    let disk = args
        .disk
        .open()
        .with_context(|| format!("opening the disk for {}", args.socket.display()))?;
    let settings = block::settings_for(&disk);
    let backend = Arc::new(RwLock::new(BlkBackend::new(settings, args.queues)));
    let mut daemon = super::new_daemon("rvmm-vhost-blk", backend)?;
    let what = args.disk.path.display().to_string();
    super::serve(&mut daemon, &args.socket, &what)?;
    // `disk` (and its image lock) lives until the connection is over.
    drop(disk);
    Ok(())
}
