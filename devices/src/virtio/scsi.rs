//! virtio-scsi host (device ID 8) with one target and one LUN: a read-only MMC CD-ROM.
//!
//! Queue 0 is the control queue (task management and asynchronous-notification requests),
//! queue 1 the event queue, queue 2 the single request queue. [`ScsiHost`] is the
//! transport-free queue handler that `rvmm` (through [`VirtioScsi`]'s worker thread) and
//! `rvmm-vhost scsi` both drive.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use log::{debug, error, warn};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestAddressSpace, GuestMemory};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::scsi::CdRom;
use crate::virtio::activation::{read_config_bytes, require_version_1, WorkerThread};
use crate::virtio::{
    ActivateError, ActiveQueue, VirtioDevice, VirtioInterrupt, VirtioInterruptType,
};
use crate::GuestMemoryAtomic;

/// Virtio device ID of a SCSI host.
pub const DEVICE_TYPE: u32 = 8;
/// Index of the control queue.
pub const CONTROL_QUEUE: u16 = 0;
/// Index of the event queue.
pub const EVENT_QUEUE: u16 = 1;
/// Index of the (single) request queue.
pub const REQUEST_QUEUE: u16 = 2;
/// Size offered for every queue.
pub const QUEUE_SIZE: u16 = 256;

/// VIRTIO_SCSI_F_CHANGE: the device may report LUN parameter changes on the event queue.
pub const F_CHANGE: u64 = 1 << 2;
/// VIRTIO_F_VERSION_1.
pub const F_VERSION_1: u64 = 1 << 32;
/// VIRTIO_RING_F_INDIRECT_DESC.
pub const F_INDIRECT_DESC: u64 = 1 << 28;
/// VIRTIO_RING_F_EVENT_IDX.
pub const F_EVENT_IDX: u64 = 1 << 29;

/// Default (and initial) CDB size in the request header.
pub const DEFAULT_CDB_SIZE: u32 = 32;
/// Default (and initial) sense buffer size in the response header.
pub const DEFAULT_SENSE_SIZE: u32 = 96;
/// Largest CDB and sense sizes a driver may configure.
const MAX_HEADER_FIELD: u32 = 256;
/// Transfer limit advertised in the config space, in 512-byte sectors (32 MiB).
const MAX_SECTORS: u32 = 0xFFFF;
/// Events kept while the driver has no event buffers posted.
const MAX_PENDING_EVENTS: usize = 16;

/// Response codes of virtio-scsi.
pub mod response {
    /// Command completed (look at the SCSI status).
    pub const OK: u8 = 0;
    /// The CDB asked for more data than the buffers hold.
    pub const OVERRUN: u8 = 1;
    /// No such target/LUN.
    pub const BAD_TARGET: u8 = 3;
    /// The request itself was malformed.
    pub const FAILURE: u8 = 9;
    /// TMF rejected (unknown function).
    pub const FUNCTION_REJECTED: u8 = 11;
}

/// Control request types.
const CTRL_TMF: u32 = 0;
const CTRL_AN_QUERY: u32 = 1;
const CTRL_AN_SUBSCRIBE: u32 = 2;
/// Highest TMF subtype defined (QUERY TASK SET).
const TMF_MAX_SUBTYPE: u32 = 7;
/// Event flag: events were dropped for lack of buffers.
pub const EVENTS_MISSED: u32 = 0x8000_0000;
/// Event: the transport was reset (reason 0 = rescan the bus).
pub const T_TRANSPORT_RESET: u32 = 1;

/// The guest buffers of one descriptor chain: device-readable, then device-writable.
struct Buffers {
    readable: Vec<(GuestAddress, u32)>,
    writable: Vec<(GuestAddress, u32)>,
}

impl Buffers {
    fn of<M: GuestMemory>(chain: DescriptorChain<&M>) -> Buffers {
        let mut b = Buffers {
            readable: Vec::new(),
            writable: Vec::new(),
        };
        for d in chain {
            if d.is_write_only() {
                b.writable.push((d.addr(), d.len()));
            } else {
                b.readable.push((d.addr(), d.len()));
            }
        }
        b
    }

    fn total(segs: &[(GuestAddress, u32)]) -> u64 {
        segs.iter().map(|s| u64::from(s.1)).sum()
    }

    fn readable_len(&self) -> u64 {
        Self::total(&self.readable)
    }

    fn writable_len(&self) -> u64 {
        Self::total(&self.writable)
    }

    /// Copy `buf.len()` readable bytes starting at `offset` of the readable area.
    fn read<M: GuestMemory>(&self, mem: &M, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0usize;
        let mut pos = 0u64;
        for &(addr, len) in &self.readable {
            let len = u64::from(len);
            if done == buf.len() {
                break;
            }
            let want = offset + done as u64;
            if want < pos + len {
                let within = want - pos;
                let n = ((len - within) as usize).min(buf.len() - done);
                let a = addr
                    .checked_add(within)
                    .ok_or(io::ErrorKind::InvalidInput)?;
                mem.read_slice(&mut buf[done..done + n], a)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                done += n;
            }
            pos += len;
        }
        if done < buf.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// Copy `data` into the writable area at `offset`.
    fn write<M: GuestMemory>(&self, mem: &M, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut done = 0usize;
        let mut pos = 0u64;
        for &(addr, len) in &self.writable {
            let len = u64::from(len);
            if done == data.len() {
                break;
            }
            let want = offset + done as u64;
            if want < pos + len {
                let within = want - pos;
                let n = ((len - within) as usize).min(data.len() - done);
                let a = addr
                    .checked_add(within)
                    .ok_or(io::ErrorKind::InvalidInput)?;
                mem.write_slice(&data[done..done + n], a)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                done += n;
            }
            pos += len;
        }
        if done < data.len() {
            return Err(io::ErrorKind::WriteZero.into());
        }
        Ok(())
    }
}

/// Whether an 8-byte virtio-scsi LUN field addresses our only LUN (target 0, LUN 0).
fn is_our_lun(lun: &[u8]) -> bool {
    lun.len() >= 4
        && lun[0] == 1
        && lun[1] == 0
        && u16::from_be_bytes([lun[2], lun[3]]) & 0x3FFF == 0
}

/// The transport-free virtio-scsi queue handler: a CD-ROM LUN, the header sizes the driver
/// configured, and events waiting for event-queue buffers.
pub struct ScsiHost {
    cdrom: CdRom,
    cdb_size: u32,
    sense_size: u32,
    pending_events: VecDeque<[u8; 16]>,
    events_missed: bool,
}

impl ScsiHost {
    /// A host with `cdrom` as target 0 LUN 0.
    pub fn new(cdrom: CdRom) -> Self {
        Self {
            cdrom,
            cdb_size: DEFAULT_CDB_SIZE,
            sense_size: DEFAULT_SENSE_SIZE,
            pending_events: VecDeque::new(),
            events_missed: false,
        }
    }

    /// The CD-ROM LUN.
    pub fn cdrom(&self) -> &CdRom {
        &self.cdrom
    }

    /// The 36-byte configuration space.
    pub fn config(&self) -> [u8; 36] {
        let mut c = [0u8; 36];
        let fields: [(usize, u32); 9] = [
            (0, 1),                         // num_queues (request queues)
            (4, u32::from(QUEUE_SIZE) - 2), // seg_max
            (8, MAX_SECTORS),
            (12, 128), // cmd_per_lun
            (16, 16),  // event_info_size
            (20, self.sense_size),
            (24, self.cdb_size),
            (28, 0), // max_channel (u16) + max_target (u16) = 0
            (32, 0), // max_lun
        ];
        for (at, v) in fields {
            c[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        c
    }

    /// Driver write to the configuration space: only `sense_size` and `cdb_size` are writable.
    pub fn write_config(&mut self, offset: u64, data: &[u8]) {
        let value = match <[u8; 4]>::try_from(data) {
            Ok(b) => u32::from_le_bytes(b),
            Err(_) => {
                warn!(
                    "virtio-scsi: {}-byte config write at {offset} ignored",
                    data.len()
                );
                return;
            }
        };
        match offset {
            20 if value <= MAX_HEADER_FIELD => self.sense_size = value,
            24 if (1..=MAX_HEADER_FIELD).contains(&value) => self.cdb_size = value,
            _ => warn!("virtio-scsi: config write {value:#x} at offset {offset} ignored"),
        }
    }

    /// Device reset: header sizes back to their defaults, pending events dropped, tray unlocked.
    pub fn reset(&mut self) {
        self.cdb_size = DEFAULT_CDB_SIZE;
        self.sense_size = DEFAULT_SENSE_SIZE;
        self.pending_events.clear();
        self.events_missed = false;
        self.cdrom.reset();
    }

    /// Queue an event (e.g. [`T_TRANSPORT_RESET`]) for the next event-queue buffer.
    pub fn push_event(&mut self, event: u32, reason: u32) {
        if self.pending_events.len() >= MAX_PENDING_EVENTS {
            self.events_missed = true;
            return;
        }
        let mut e = [0u8; 16];
        e[0..4].copy_from_slice(&event.to_le_bytes());
        e[4..8].copy_from_slice(&[1, 0, 0x40, 0]);
        e[12..16].copy_from_slice(&reason.to_le_bytes());
        self.pending_events.push_back(e);
    }

    /// Serve every request on the request queue; returns whether the guest must be notified.
    pub fn process_request_queue<M: GuestMemory>(&mut self, mem: &M, queue: &mut Queue) -> bool {
        drain(mem, queue, |mem, b| self.request(mem, &b))
    }

    /// Serve the control queue (TMF and AN requests).
    pub fn process_control_queue<M: GuestMemory>(&mut self, mem: &M, queue: &mut Queue) -> bool {
        drain(mem, queue, |mem, b| control(mem, &b))
    }

    /// Hand pending events to the buffers the driver posted on the event queue.
    pub fn process_event_queue<M: GuestMemory>(&mut self, mem: &M, queue: &mut Queue) -> bool {
        let mut used = false;
        while !self.pending_events.is_empty() {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let b = Buffers::of(chain);
            let mut len = 0;
            if let Some(mut e) = self.pending_events.pop_front() {
                if self.events_missed {
                    let ev = u32::from_le_bytes([e[0], e[1], e[2], e[3]]) | EVENTS_MISSED;
                    e[0..4].copy_from_slice(&ev.to_le_bytes());
                    self.events_missed = false;
                }
                match b.write(mem, 0, &e) {
                    Ok(()) => len = e.len() as u32,
                    Err(err) => warn!("virtio-scsi: event buffer unusable: {err}"),
                }
            }
            if let Err(e) = queue.add_used(mem, head, len) {
                warn!("virtio-scsi: event queue used ring: {e}");
            }
            used = true;
        }
        used && queue.needs_notification(mem).unwrap_or(true)
    }

    /// One SCSI command; returns the bytes written to the chain.
    fn request<M: GuestMemory>(&mut self, mem: &M, b: &Buffers) -> u32 {
        let req_len = 19 + self.cdb_size as usize;
        let resp_len = 12 + self.sense_size as usize;
        if b.writable_len() < resp_len as u64 {
            warn!("virtio-scsi: request without room for the {resp_len}-byte response; dropped");
            return 0;
        }
        let mut resp = vec![0u8; resp_len];
        let mut header = vec![0u8; req_len];
        if b.readable_len() < req_len as u64 || b.read(mem, 0, &mut header).is_err() {
            warn!("virtio-scsi: request header shorter than {req_len} bytes or unreadable");
            resp[11] = response::FAILURE;
            return write_response(mem, b, &resp, &[]);
        }
        if !is_our_lun(&header[0..8]) {
            resp[11] = response::BAD_TARGET;
            return write_response(mem, b, &resp, &[]);
        }
        let cdb = &header[19..];
        let data_in_room = (b.writable_len() - resp_len as u64).min(usize::MAX as u64) as usize;
        let r = self.cdrom.execute(cdb, data_in_room);
        if r.overrun {
            resp[11] = response::OVERRUN;
            return write_response(mem, b, &resp, &[]);
        }
        if let Some(sense) = r.sense {
            let s = sense.to_fixed();
            let n = s.len().min(self.sense_size as usize);
            resp[0..4].copy_from_slice(&(n as u32).to_le_bytes());
            resp[12..12 + n].copy_from_slice(&s[..n]);
        }
        let resid = (data_in_room - r.data.len()) as u32;
        resp[4..8].copy_from_slice(&resid.to_le_bytes());
        resp[10] = r.status;
        resp[11] = response::OK;
        debug!(
            "virtio-scsi: cdb {:02x?} -> status {:#x} {} bytes",
            &cdb[..cdb.len().min(12)],
            r.status,
            r.data.len()
        );
        write_response(mem, b, &resp, &r.data)
    }
}

/// Write the response header and then data-in; returns the used length.
fn write_response<M: GuestMemory>(mem: &M, b: &Buffers, resp: &[u8], data: &[u8]) -> u32 {
    if let Err(e) = b
        .write(mem, 0, resp)
        .and_then(|_| b.write(mem, resp.len() as u64, data))
    {
        warn!("virtio-scsi: writing the response failed: {e}");
        return 0;
    }
    (resp.len() + data.len()) as u32
}

/// One control request; returns the bytes written.
fn control<M: GuestMemory>(mem: &M, b: &Buffers) -> u32 {
    let mut kind = [0u8; 4];
    if b.read(mem, 0, &mut kind).is_err() {
        warn!("virtio-scsi: control request without a type");
        return 0;
    }
    match u32::from_le_bytes(kind) {
        CTRL_TMF => {
            let mut req = [0u8; 24];
            let resp = if b.read(mem, 0, &mut req).is_err() {
                response::FAILURE
            } else if !is_our_lun(&req[8..16]) {
                response::BAD_TARGET
            } else if u32::from_le_bytes([req[4], req[5], req[6], req[7]]) > TMF_MAX_SUBTYPE {
                response::FUNCTION_REJECTED
            } else {
                // Commands complete synchronously: nothing is ever left to abort or reset, so
                // every function is complete (for QUERY TASK: the task does not exist).
                response::OK
            };
            write_response(mem, b, &[resp], &[])
        }
        CTRL_AN_QUERY | CTRL_AN_SUBSCRIBE => {
            let mut req = [0u8; 16];
            let resp = if b.read(mem, 0, &mut req).is_err() {
                response::FAILURE
            } else if !is_our_lun(&req[4..12]) {
                response::BAD_TARGET
            } else {
                response::OK
            };
            // event_actual = 0: no asynchronous notifications are supported.
            write_response(mem, b, &[0, 0, 0, 0, resp], &[])
        }
        other => {
            warn!("virtio-scsi: unknown control request type {other}");
            0
        }
    }
}

/// Pop every chain, let `f` serve it, put it on the used ring; returns whether to notify.
fn drain<M: GuestMemory>(
    mem: &M,
    queue: &mut Queue,
    mut f: impl FnMut(&M, Buffers) -> u32,
) -> bool {
    let mut used = false;
    loop {
        if let Err(e) = queue.disable_notification(mem) {
            warn!("virtio-scsi: queue unusable: {e}");
            return used;
        }
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let len = f(mem, Buffers::of(chain));
            if let Err(e) = queue.add_used(mem, head, len) {
                warn!("virtio-scsi: used ring: {e}");
            }
            used = true;
        }
        match queue.enable_notification(mem) {
            Ok(true) => continue,
            Ok(false) => break,
            Err(e) => {
                warn!("virtio-scsi: queue unusable: {e}");
                break;
            }
        }
    }
    used && queue.needs_notification(mem).unwrap_or(true)
}

/// The virtio-scsi device as a transport sees it; a worker thread serves the queues.
pub struct VirtioScsi {
    host: Arc<Mutex<ScsiHost>>,
    acked: u64,
    worker: Option<WorkerThread>,
    /// Wakes the worker to deliver events raised by the host side.
    wake: Option<EventFd>,
}

impl VirtioScsi {
    /// A SCSI host with `cdrom` as its only LUN.
    pub fn new(cdrom: CdRom) -> Self {
        Self {
            host: Arc::new(Mutex::new(ScsiHost::new(cdrom))),
            acked: 0,
            worker: None,
            wake: None,
        }
    }

    /// The shared queue handler (to inspect the drive).
    pub fn host(&self) -> Arc<Mutex<ScsiHost>> {
        self.host.clone()
    }

    /// Queue an event for the driver and deliver it as soon as an event buffer is posted.
    pub fn raise_event(&self, event: u32, reason: u32) {
        match self.host.lock() {
            Ok(mut h) => h.push_event(event, reason),
            Err(_) => return,
        }
        if let Some(w) = &self.wake {
            if let Err(e) = w.write(1) {
                warn!("virtio-scsi: cannot wake the worker for an event: {e}");
            }
        }
    }

    fn stop_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop("virtio-scsi");
        }
    }
}

impl Drop for VirtioScsi {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

impl VirtioDevice for VirtioScsi {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; 3]
    }

    fn features(&self) -> u64 {
        F_VERSION_1 | F_INDIRECT_DESC | F_EVENT_IDX
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features & self.features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = match self.host.lock() {
            Ok(h) => h.config(),
            Err(_) => [0; 36],
        };
        read_config_bytes(&config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if let Ok(mut h) = self.host.lock() {
            h.write_config(offset, data);
        }
    }

    fn activate(
        &mut self,
        mem: GuestMemoryAtomic,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        require_version_1(self.acked, "virtio-scsi")?;
        self.stop_worker();
        let event_idx = self.acked & F_EVENT_IDX != 0;
        let mut slots: [Option<ActiveQueue>; 3] = [None, None, None];
        for mut q in queues {
            q.queue.set_event_idx(event_idx);
            match slots.get_mut(usize::from(q.index)) {
                Some(s) => *s = Some(q),
                None => {
                    return Err(ActivateError::BadConfig(format!(
                        "virtio-scsi: queue {} does not exist (one request queue offered)",
                        q.index
                    )))
                }
            }
        }
        if slots[usize::from(REQUEST_QUEUE)].is_none() {
            return Err(ActivateError::BadConfig(
                "virtio-scsi: the request queue (2) was not enabled".into(),
            ));
        }
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let wake = EventFd::new(libc::EFD_NONBLOCK)?;
        let worker = Worker {
            mem,
            interrupt,
            queues: slots,
            host: self.host.clone(),
            stop: stop.try_clone()?,
            wake: wake.try_clone()?,
        };
        self.wake = Some(wake);
        self.worker = Some(WorkerThread::spawn("virtio-scsi", stop, move || {
            worker.run()
        })?);
        Ok(())
    }

    fn reset(&mut self) -> bool {
        self.stop_worker();
        self.wake = None;
        self.acked = 0;
        if let Ok(mut h) = self.host.lock() {
            h.reset();
        }
        true
    }
}

/// The thread serving an activated device: epoll on the three kick eventfds and a stop fd.
struct Worker {
    mem: GuestMemoryAtomic,
    interrupt: Arc<dyn VirtioInterrupt>,
    queues: [Option<ActiveQueue>; 3],
    host: Arc<Mutex<ScsiHost>>,
    stop: EventFd,
    wake: EventFd,
}

const TOKEN_STOP: u64 = 100;
const TOKEN_WAKE: u64 = 101;

impl Worker {
    fn register(&self, epoll: &Epoll) -> io::Result<()> {
        let add = |fd, token| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
        };
        add(self.stop.as_raw_fd(), TOKEN_STOP)?;
        add(self.wake.as_raw_fd(), TOKEN_WAKE)?;
        for q in self.queues.iter().flatten() {
            add(q.kick.as_raw_fd(), u64::from(q.index))?;
        }
        Ok(())
    }

    fn run(mut self) {
        let epoll = match Epoll::new().and_then(|e| self.register(&e).map(|_| e)) {
            Ok(e) => e,
            Err(e) => {
                error!("virtio-scsi: cannot set up the worker's epoll: {e}; the CD-ROM is dead");
                return;
            }
        };
        let mut events = vec![EpollEvent::default(); 8];
        loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    error!("virtio-scsi: epoll failed: {e}; worker stops");
                    return;
                }
            };
            for ev in &events[..n] {
                let token = ev.data();
                match token {
                    TOKEN_STOP => return,
                    TOKEN_WAKE => {
                        let _ = self.wake.read();
                        self.serve(usize::from(EVENT_QUEUE), false);
                    }
                    t => self.serve(t as usize, true),
                }
            }
        }
    }

    /// Serve queue `index`; `kicked` when its kick eventfd fired (and must be drained).
    fn serve(&mut self, index: usize, kicked: bool) {
        let Some(Some(q)) = self.queues.get_mut(index) else {
            return;
        };
        if kicked {
            // The eventfd counts notifications: drain it before serving.
            let _ = q.kick.read();
        }
        let mem = self.mem.memory();
        let Ok(mut host) = self.host.lock() else {
            error!("virtio-scsi: host state poisoned");
            return;
        };
        let notify = match q.index {
            CONTROL_QUEUE => host.process_control_queue(&*mem, &mut q.queue),
            EVENT_QUEUE => host.process_event_queue(&*mem, &mut q.queue),
            _ => host.process_request_queue(&*mem, &mut q.queue),
        };
        drop(host);
        if notify {
            if let Err(e) = self.interrupt.trigger(VirtioInterruptType::Queue(q.index)) {
                warn!(
                    "virtio-scsi: interrupting the guest for queue {}: {e}",
                    q.index
                );
            }
        }
    }
}

#[cfg(test)]
#[path = "scsi_tests.rs"]
mod tests;
