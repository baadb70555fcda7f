//! virtio-input tablet (virtio 1.2 §5.8): an absolute pointer with three buttons and a wheel,
//! so a VNC pointer lands exactly where the client's is. Events go to the event queue as
//! `virtio_input_event {le16 type, le16 code, le32 value}`; the status queue (LED and similar
//! feedback) is drained and ignored.
//!
//! Pointer events arrive through [`TabletInput`] (a [`vnc::InputSink`]) from any thread; they
//! are queued (bounded) until the driver posts buffers.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddressSpace, GuestMemory};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::{ActivateError, ActiveQueue, VirtioDevice, VirtioInterrupt, VirtioInterruptType};
use crate::virtio::activation::{read_config_bytes, require_version_1, WorkerThread};
use crate::GuestMemoryAtomic;

/// virtio device ID of input devices.
pub const DEVICE_ID: u32 = 18;
/// Largest value of the absolute axes (as QEMU's tablet).
pub const ABS_MAX: u32 = 0x7fff;
/// Most events held while the driver posts no buffers; older ones are dropped.
pub const MAX_PENDING: usize = 1024;

const F_VERSION_1: u64 = 1 << 32;
const QUEUE_SIZE: u16 = 64;
const EVENT_QUEUE: u16 = 0;
const STATUS_QUEUE: u16 = 1;

// Config selectors.
const CFG_ID_NAME: u8 = 0x01;
const CFG_ID_SERIAL: u8 = 0x02;
const CFG_ID_DEVIDS: u8 = 0x03;
const CFG_EV_BITS: u8 = 0x11;
const CFG_ABS_INFO: u8 = 0x12;

// Linux input event codes (include/uapi/linux/input-event-codes.h).
const EV_SYN: u16 = 0x00;
const EV_KEY: u16 = 0x01;
const EV_REL: u16 = 0x02;
const EV_ABS: u16 = 0x03;
const SYN_REPORT: u16 = 0;
const REL_WHEEL: u16 = 0x08;
const ABS_X: u16 = 0x00;
const ABS_Y: u16 = 0x01;
const BTN_LEFT: u16 = 0x110;
const BTN_RIGHT: u16 = 0x111;
const BTN_MIDDLE: u16 = 0x112;

const NAME: &[u8] = b"rvmm virtio tablet";

/// One `virtio_input_event`.
fn event(ty: u16, code: u16, value: u32) -> [u8; 8] {
    let mut e = [0u8; 8];
    e[0..2].copy_from_slice(&ty.to_le_bytes());
    e[2..4].copy_from_slice(&code.to_le_bytes());
    e[4..8].copy_from_slice(&value.to_le_bytes());
    e
}

/// Scale `v` in `0..size` to `0..=ABS_MAX`.
fn scale(v: u16, size: u16) -> u32 {
    let max = u32::from(size.max(2)) - 1;
    (u32::from(v).min(max) * ABS_MAX) / max
}

/// The events of one pointer report: position, changed buttons, wheel clicks, SYN_REPORT.
pub fn pointer_events(
    x: u16,
    y: u16,
    buttons: u8,
    last_buttons: u8,
    width: u16,
    height: u16,
) -> Vec<[u8; 8]> {
    let mut v = vec![
        event(EV_ABS, ABS_X, scale(x, width)),
        event(EV_ABS, ABS_Y, scale(y, height)),
    ];
    for (bit, code) in [(0, BTN_LEFT), (1, BTN_MIDDLE), (2, BTN_RIGHT)] {
        let now = buttons >> bit & 1;
        if now != last_buttons >> bit & 1 {
            v.push(event(EV_KEY, code, u32::from(now)));
        }
    }
    // RFB wheel "buttons" 3 (up) and 4 (down) are clicks: count their presses.
    if buttons & 0x08 != 0 && last_buttons & 0x08 == 0 {
        v.push(event(EV_REL, REL_WHEEL, 1));
    }
    if buttons & 0x10 != 0 && last_buttons & 0x10 == 0 {
        v.push(event(EV_REL, REL_WHEEL, u32::MAX));
    }
    v.push(event(EV_SYN, SYN_REPORT, 0));
    v
}

/// Hand pending events to the buffers on `queue`; returns whether the guest must be
/// notified.
pub fn fill_event_queue<M: GuestMemory>(
    mem: &M,
    queue: &mut Queue,
    pending: &mut VecDeque<[u8; 8]>,
) -> bool {
    let mut used = false;
    while !pending.is_empty() {
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            break;
        };
        let head = chain.head_index();
        let mut len = 0;
        let target = chain
            .clone()
            .find(|d| d.is_write_only() && d.len() >= 8)
            .map(|d| d.addr());
        if let Some(e) = pending.pop_front() {
            match target {
                Some(addr) => match mem.write_slice(&e, addr) {
                    Ok(()) => len = 8,
                    Err(err) => log::warn!("virtio-input: event buffer unusable: {err}"),
                },
                None => log::warn!("virtio-input: event buffer without 8 writable bytes"),
            }
        }
        if let Err(e) = queue.add_used(mem, head, len) {
            log::warn!("virtio-input: event queue used ring: {e}");
        }
        used = true;
    }
    used && queue.needs_notification(mem).unwrap_or(true)
}

struct Active {
    mem: GuestMemoryAtomic,
    interrupt: Arc<dyn VirtioInterrupt>,
    eventq: Queue,
    statusq: Option<Queue>,
}

#[derive(Default)]
struct State {
    pending: VecDeque<[u8; 8]>,
    buttons: u8,
    active: Option<Active>,
}

impl State {
    fn flush(&mut self) {
        let State {
            pending, active, ..
        } = self;
        let Some(a) = active else { return };
        let mem = a.mem.memory();
        if fill_event_queue(&*mem, &mut a.eventq, pending) {
            if let Err(e) = a.interrupt.trigger(VirtioInterruptType::Queue(EVENT_QUEUE)) {
                log::warn!("virtio-input: cannot interrupt the guest: {e}");
            }
        }
    }

    fn drain_status(&mut self) {
        let Some(a) = &mut self.active else { return };
        let Some(q) = &mut a.statusq else { return };
        let mem = a.mem.memory();
        let mut used = false;
        while let Some(chain) = q.pop_descriptor_chain(&*mem) {
            if let Err(e) = q.add_used(&*mem, chain.head_index(), 0) {
                log::warn!("virtio-input: status queue used ring: {e}");
            }
            used = true;
        }
        if used && q.needs_notification(&*mem).unwrap_or(true) {
            let _ = a
                .interrupt
                .trigger(VirtioInterruptType::Queue(STATUS_QUEUE));
        }
    }
}

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Pointer input for a [`Tablet`], from VNC clients.
#[derive(Clone)]
pub struct TabletInput(Arc<Mutex<State>>);

impl TabletInput {
    /// Whether a driver has the tablet running (so pointer events reach the guest).
    pub fn driver_active(&self) -> bool {
        lock(&self.0).active.is_some()
    }
}

impl vnc::InputSink for TabletInput {
    fn key(&self, _down: bool, _keysym: u32, _xt: Option<u16>) {}

    fn pointer(&self, x: u16, y: u16, buttons: u8, width: u16, height: u16) {
        let mut s = lock(&self.0);
        let last = std::mem::replace(&mut s.buttons, buttons);
        // Without a driver nobody reads the events: keep nothing stale for later.
        if s.active.is_none() {
            return;
        }
        s.pending
            .extend(pointer_events(x, y, buttons, last, width, height));
        while s.pending.len() > MAX_PENDING {
            s.pending.pop_front();
        }
        s.flush();
    }
}

/// The virtio-input tablet device.
pub struct Tablet {
    state: Arc<Mutex<State>>,
    acked: u64,
    select: u8,
    subsel: u8,
    worker: Option<WorkerThread>,
}

impl Default for Tablet {
    fn default() -> Self {
        Self::new()
    }
}

impl Tablet {
    /// A tablet with no driver yet.
    pub fn new() -> Self {
        Tablet {
            state: Arc::new(Mutex::new(State::default())),
            acked: 0,
            select: 0,
            subsel: 0,
            worker: None,
        }
    }

    /// The input handle VNC pointer events go to.
    pub fn input(&self) -> TabletInput {
        TabletInput(self.state.clone())
    }

    /// The payload of the config union for the current select/subsel (empty = unsupported).
    fn payload(&self) -> Vec<u8> {
        match (self.select, self.subsel) {
            (CFG_ID_NAME, 0) => NAME.to_vec(),
            (CFG_ID_SERIAL, 0) => b"rvmm-tablet-0".to_vec(),
            (CFG_ID_DEVIDS, 0) => [0x06u16, 0x0627, 0x0001, 0x0001]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            (CFG_EV_BITS, t) => {
                let codes: &[u16] = match u16::from(t) {
                    EV_KEY => &[BTN_LEFT, BTN_RIGHT, BTN_MIDDLE],
                    EV_REL => &[REL_WHEEL],
                    EV_ABS => &[ABS_X, ABS_Y],
                    _ => &[],
                };
                let mut bits = Vec::new();
                for &c in codes {
                    let byte = usize::from(c / 8);
                    if bits.len() <= byte {
                        bits.resize(byte + 1, 0);
                    }
                    bits[byte] |= 1 << (c % 8);
                }
                bits
            }
            (CFG_ABS_INFO, a) if u16::from(a) == ABS_X || u16::from(a) == ABS_Y => {
                [0u32, ABS_MAX, 0, 0, 0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    fn stop_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop("virtio-input");
        }
        lock(&self.state).active = None;
    }
}

impl Drop for Tablet {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

impl VirtioDevice for Tablet {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        F_VERSION_1
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features & F_VERSION_1;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let payload = self.payload();
        let mut cfg = [0u8; 136];
        cfg[0] = self.select;
        cfg[1] = self.subsel;
        cfg[2] = payload.len().min(128) as u8;
        let n = payload.len().min(128);
        cfg[8..8 + n].copy_from_slice(&payload[..n]);
        read_config_bytes(&cfg, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            match offset + i as u64 {
                0 => self.select = b,
                1 => self.subsel = b,
                o => log::debug!("virtio-input: write to read-only config byte {o}"),
            }
        }
    }

    fn activate(
        &mut self,
        mem: GuestMemoryAtomic,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        require_version_1(self.acked, "virtio-input")?;
        self.stop_worker();
        let (mut eventq, mut statusq) = (None, None);
        for q in queues {
            match q.index {
                EVENT_QUEUE => eventq = Some(q),
                STATUS_QUEUE => statusq = Some(q),
                i => {
                    return Err(ActivateError::BadConfig(format!(
                        "virtio-input: queue {i} does not exist"
                    )))
                }
            }
        }
        let Some(eventq) = eventq else {
            return Err(ActivateError::BadConfig(
                "virtio-input: the event queue (0) was not enabled".into(),
            ));
        };
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        let mut kicks = vec![eventq.kick];
        if let Some(s) = &statusq {
            kicks.push(s.kick.try_clone()?);
        }
        for (token, fd) in kicks.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                fd.as_raw_fd(),
                EpollEvent::new(EventSet::IN, token as u64),
            )?;
        }
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, u64::MAX),
        )?;
        lock(&self.state).active = Some(Active {
            mem,
            interrupt,
            eventq: eventq.queue,
            statusq: statusq.map(|s| s.queue),
        });
        let state = self.state.clone();
        self.worker = Some(WorkerThread::spawn("virtio-input", stop, move || {
            worker(&epoll, &kicks, &state)
        })?);
        Ok(())
    }

    fn reset(&mut self) -> bool {
        self.stop_worker();
        self.acked = 0;
        let mut s = lock(&self.state);
        s.pending.clear();
        true
    }
}

fn worker(epoll: &Epoll, kicks: &[EventFd], state: &Mutex<State>) {
    let mut events = vec![EpollEvent::default(); 4];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("virtio-input: epoll failed: {e}; the tablet stops");
                return;
            }
        };
        for ev in &events[..n] {
            match ev.data() {
                u64::MAX => return,
                t => {
                    if let Some(k) = kicks.get(t as usize) {
                        let _ = k.read();
                    }
                    let mut s = lock(state);
                    if t == u64::from(EVENT_QUEUE) {
                        s.flush();
                    } else {
                        s.drain_status();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
