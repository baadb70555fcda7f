//! The thread that drives an activated virtio-net device inside rvmm: it sleeps in epoll on the
//! queue notification eventfds and the tap fds and runs the queue handlers when one fires.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use log::{debug, error, warn};
use vm_memory::GuestAddressSpace;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::ctrl::NetControl;
use super::rxtx::NetQueuePair;
use crate::virtio::{ActiveQueue, VirtioInterrupt, VirtioInterruptType};
use crate::GuestMemoryAtomic;

const TOKEN_STOP: u64 = 0;
const TOKEN_CTRL: u64 = 1;
const TOKEN_PAIR_BASE: u64 = 16;

fn rx_token(pair: usize) -> u64 {
    TOKEN_PAIR_BASE + 4 * pair as u64
}

/// One rx/tx pair with its handler.
pub(crate) struct PairQueues {
    pub handler: NetQueuePair,
    pub rx: ActiveQueue,
    pub tx: ActiveQueue,
}

/// Everything the worker thread owns.
pub(crate) struct Worker {
    pub mem: GuestMemoryAtomic,
    pub interrupt: Arc<dyn VirtioInterrupt>,
    pub pairs: Vec<PairQueues>,
    pub ctrl: Option<ActiveQueue>,
    pub control: Arc<Mutex<NetControl>>,
    pub stop: EventFd,
}

impl Worker {
    fn register(&self, epoll: &Epoll) -> io::Result<()> {
        let add = |fd, events, token| {
            epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
        };
        add(self.stop.as_raw_fd(), EventSet::IN, TOKEN_STOP)?;
        if let Some(c) = &self.ctrl {
            add(c.kick.as_raw_fd(), EventSet::IN, TOKEN_CTRL)?;
        }
        for (i, p) in self.pairs.iter().enumerate() {
            add(p.rx.kick.as_raw_fd(), EventSet::IN, rx_token(i))?;
            add(p.tx.kick.as_raw_fd(), EventSet::IN, rx_token(i) + 1)?;
            // Edge-triggered: a tap with frames but no guest buffers must not wake us again
            // until either new frames or new buffers arrive.
            add(
                p.handler.tap().as_raw_fd(),
                EventSet::IN | EventSet::EDGE_TRIGGERED,
                rx_token(i) + 2,
            )?;
        }
        Ok(())
    }

    fn notify(&self, queue: u16) {
        if let Err(e) = self.interrupt.trigger(VirtioInterruptType::Queue(queue)) {
            warn!("virtio-net: interrupting the guest for queue {queue} failed: {e}");
        }
    }

    /// Run until the stop eventfd fires.
    pub fn run(mut self) {
        let epoll = match Epoll::new().and_then(|e| self.register(&e).map(|_| e)) {
            Ok(e) => e,
            Err(e) => {
                error!("virtio-net: cannot set up the worker's epoll: {e}; the NIC stays silent");
                return;
            }
        };
        let mut events = vec![EpollEvent::default(); 64];
        let mut rx_due = vec![true; self.pairs.len()];
        let mut tx_due = vec![true; self.pairs.len()];
        loop {
            let active = self
                .control
                .lock()
                .map(|c| usize::from(c.active_pairs))
                .unwrap_or(1);
            for i in 0..self.pairs.len() {
                if tx_due[i] && i < active {
                    tx_due[i] = false;
                    let mem = self.mem.memory();
                    let p = &mut self.pairs[i];
                    if p.handler.process_tx(&mem, &mut p.tx.queue) {
                        let idx = p.tx.index;
                        self.notify(idx);
                    }
                }
                if rx_due[i] && i < active {
                    let mem = self.mem.memory();
                    let p = &mut self.pairs[i];
                    let out = p.handler.process_rx(&mem, &mut p.rx.queue);
                    rx_due[i] = out.more;
                    if out.notify {
                        let idx = p.rx.index;
                        self.notify(idx);
                    }
                }
            }
            // Pairs the driver has not enabled yet keep their flags until it does; they must
            // not make us spin.
            let timeout = if rx_due.iter().take(active).any(|&d| d) {
                0
            } else {
                -1
            };
            let n = match epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    error!("virtio-net: epoll_wait failed: {e}; stopping the NIC worker");
                    return;
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_STOP => {
                        debug!("virtio-net: worker stopping");
                        return;
                    }
                    TOKEN_CTRL => self.handle_ctrl(),
                    t if t >= TOKEN_PAIR_BASE => {
                        let i = ((t - TOKEN_PAIR_BASE) / 4) as usize;
                        let Some(p) = self.pairs.get(i) else { continue };
                        match (t - TOKEN_PAIR_BASE) % 4 {
                            0 => {
                                let _ = p.rx.kick.read();
                                rx_due[i] = true;
                            }
                            1 => {
                                let _ = p.tx.kick.read();
                                tx_due[i] = true;
                            }
                            _ => rx_due[i] = true,
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn handle_ctrl(&mut self) {
        let Some(c) = self.ctrl.as_mut() else { return };
        let _ = c.kick.read();
        let mem = self.mem.memory();
        let (notify, active) = match self.control.lock() {
            Ok(mut ctl) => (ctl.process(&mem, &mut c.queue), ctl.active_pairs),
            Err(_) => return,
        };
        let idx = c.index;
        if notify {
            self.notify(idx);
        }
        for (i, p) in self.pairs.iter().enumerate() {
            if let Err(e) = p.handler.tap().set_enabled(i < usize::from(active)) {
                warn!("virtio-net: switching tap queue {i} for {active} pairs: {e}");
            }
        }
    }
}
