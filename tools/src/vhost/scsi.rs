//! `rvmm-vhost scsi`: an ISO served as the CD-ROM of a vhost-user-scsi device.
//!
//! The frontend (QEMU's `vhost-user-scsi-pci`, …) owns the control, event and request
//! virtqueues in shared guest memory; this backend serves them with the queue handler rvmm's
//! own virtio-scsi uses ([`devices::virtio::scsi::ScsiHost`]): one target, one read-only MMC
//! CD-ROM LUN. It serves one connection and exits when the frontend disconnects.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackendMut, VringRwLock, VringT};
use vm_memory::GuestAddressSpace;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use devices::scsi::CdRom;
use devices::virtio::scsi::{self, ScsiHost};
use devices::GuestMemoryAtomic;

/// Flags of `rvmm-vhost scsi`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path of the vhost-user UNIX socket to listen on (replaced if it exists).
    #[arg(long)]
    pub socket: PathBuf,
    /// ISO image served read-only as the CD-ROM (target 0, LUN 0).
    #[arg(long)]
    pub cdrom: PathBuf,
}

/// The vhost-user-scsi backend: the three virtqueues share one SCSI host.
pub struct ScsiBackend {
    host: Mutex<ScsiHost>,
    mem: Option<GuestMemoryAtomic>,
}

impl ScsiBackend {
    /// A backend whose only LUN is `cdrom`.
    pub fn new(cdrom: CdRom) -> Self {
        Self {
            host: Mutex::new(ScsiHost::new(cdrom)),
            mem: None,
        }
    }
}

type Vring = VringRwLock<GuestMemoryAtomic>;

impl VhostUserBackendMut for ScsiBackend {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        3
    }

    fn max_queue_size(&self) -> usize {
        scsi::QUEUE_SIZE as usize
    }

    fn features(&self) -> u64 {
        scsi::F_VERSION_1
            // QEMU's vhost-user-scsi always passes VIRTIO_SCSI_F_CHANGE through to the driver
            // and sets it in SET_FEATURES; parameter-change events are simply never raised.
            | scsi::F_CHANGE
            | scsi::F_INDIRECT_DESC
            | scsi::F_EVENT_IDX
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // QEMU's vhost-user-scsi builds the config space itself and refuses CONFIG.
        VhostUserProtocolFeatures::empty()
    }

    fn set_event_idx(&mut self, _enabled: bool) {
        // The library sets the flag on each queue; the handler reads it from there.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let cfg = match self.host.lock() {
            Ok(h) => h.config(),
            Err(p) => p.into_inner().config(),
        };
        super::config_slice(&cfg, offset, size)
    }

    fn set_config(&mut self, offset: u32, buf: &[u8]) -> std::io::Result<()> {
        let mut host = self.host.lock().unwrap_or_else(|p| p.into_inner());
        host.write_config(u64::from(offset), buf);
        Ok(())
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
        let Some(vring) = vrings.get(usize::from(device_event)) else {
            return Err(std::io::Error::other(format!(
                "event for unknown queue {device_event}"
            )));
        };
        let Some(mem) = self.mem.as_ref() else {
            log::warn!("vhost-scsi: queue {device_event} kicked before the memory table arrived");
            return Ok(());
        };
        let mem = mem.memory();
        let mut host = self.host.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = vring.get_mut();
        let queue = state.get_queue_mut();
        let notify = match device_event {
            scsi::CONTROL_QUEUE => host.process_control_queue(&*mem, queue),
            scsi::EVENT_QUEUE => host.process_event_queue(&*mem, queue),
            _ => host.process_request_queue(&*mem, queue),
        };
        if notify {
            state.signal_used_queue()?;
        }
        Ok(())
    }
}

/// Serve `args.cdrom` on `args.socket` until the frontend disconnects.
pub fn run(args: Args) -> anyhow::Result<()> {
    let image = qcow::RawFile::open(&args.cdrom, true)
        .with_context(|| format!("opening the CD-ROM image {}", args.cdrom.display()))?;
    let serial = args
        .cdrom
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cdrom".into());
    let backend = Arc::new(RwLock::new(ScsiBackend::new(CdRom::new(
        Arc::new(image),
        serial,
    ))));
    let mut daemon = super::new_daemon("rvmm-vhost-scsi", backend)?;
    let what = format!("{} as a CD-ROM", args.cdrom.display());
    super::serve(&mut daemon, &args.socket, &what)
}
