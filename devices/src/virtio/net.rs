//! virtio-net (virtio 1.2 §5.1): a NIC whose frames go to a host tap (or any datagram socket
//! carrying virtio-net headers). The queue handlers ([`NetQueuePair`], [`NetControl`]) are
//! transport-free, so rvmm's worker thread and the `rvmm-vhost net` backend run the same code.

mod ctrl;
pub mod features;
mod rxtx;
mod worker;

use std::sync::{Arc, Mutex};

use log::{info, warn};
use net::{MacAddr, Tap, TapQueue};
use virtio_queue::QueueT;
use vmm_sys_util::eventfd::EventFd;

pub use ctrl::{NetControl, RxFilter};
pub use rxtx::{NetCounters, NetQueuePair, RxOutcome, MAX_FRAME};

use self::features::*;
use self::worker::{PairQueues, Worker};
use crate::virtio::activation::{read_config_bytes, require_version_1, WorkerThread};
use crate::virtio::{ActivateError, ActiveQueue, VirtioDevice, VirtioInterrupt};
use crate::GuestMemoryAtomic;

/// Virtio device ID of a network card.
pub const VIRTIO_ID_NET: u32 = 1;
/// Size of every queue we offer.
pub const QUEUE_SIZE: u16 = 256;

/// Errors building a virtio-net device.
#[derive(Debug, thiserror::Error)]
pub enum NetDeviceError {
    /// The host side (tap) could not be queried or configured.
    #[error("virtio-net host interface: {0}")]
    Host(#[from] net::NetError),
    /// No queues, or more than the device supports.
    #[error("virtio-net needs 1 to {max} queue pairs, got {got}")]
    QueuePairs {
        /// Pairs requested.
        got: usize,
        /// The maximum.
        max: u16,
    },
}

/// Where the control queue sits: after all pairs with MQ, else right after pair 0.
pub fn ctrl_queue_index(acked: u64, max_pairs: u16) -> u16 {
    if acked & F_MQ != 0 {
        2 * max_pairs
    } else {
        2
    }
}

/// The virtio-net config space for `mac`, `status`, `pairs` and `mtu`.
pub fn config_space(mac: MacAddr, status: u16, pairs: u16, mtu: Option<u16>) -> [u8; CONFIG_LEN] {
    let mut c = [0u8; CONFIG_LEN];
    c[0..6].copy_from_slice(&mac.0);
    c[6..8].copy_from_slice(&status.to_le_bytes());
    c[8..10].copy_from_slice(&pairs.to_le_bytes());
    c[10..12].copy_from_slice(&mtu.unwrap_or(0).to_le_bytes());
    c
}

/// A virtio-net device on a tap.
pub struct Net {
    mac: MacAddr,
    mtu: Option<u16>,
    pairs: u16,
    acked: u64,
    /// Keeps a tap rvmm created alive (and so attached to its bridge) while the device exists.
    _tap: Option<Tap>,
    tap_queues: Vec<Arc<TapQueue>>,
    control: Arc<Mutex<NetControl>>,
    counters: Arc<NetCounters>,
    worker: Option<WorkerThread>,
}

impl Net {
    /// A NIC with MAC `mac` on `tap`, one queue pair per tap queue; the MTU offered to the guest
    /// is the tap's (which is the bridge's for bridge ports).
    pub fn new(tap: Tap, mac: MacAddr) -> Result<Net, NetDeviceError> {
        let mtu = tap.mtu()?;
        let mtu = u16::try_from(mtu).ok().filter(|&m| m >= 68);
        let queues = tap.queues().to_vec();
        let mut dev = Net::from_queues(queues, mac, mtu)?;
        dev._tap = Some(tap);
        Ok(dev)
    }

    /// A NIC on raw tap queues (or sockets standing in for them, see
    /// [`TapQueue::from_socket`]).
    pub fn from_queues(
        queues: Vec<Arc<TapQueue>>,
        mac: MacAddr,
        mtu: Option<u16>,
    ) -> Result<Net, NetDeviceError> {
        let max = net::MAX_QUEUE_PAIRS;
        if queues.is_empty() || queues.len() > usize::from(max) {
            return Err(NetDeviceError::QueuePairs {
                got: queues.len(),
                max,
            });
        }
        let pairs = queues.len() as u16;
        Ok(Net {
            mac,
            mtu,
            pairs,
            acked: 0,
            _tap: None,
            tap_queues: queues,
            control: Arc::new(Mutex::new(NetControl::new(mac, pairs))),
            counters: Arc::new(NetCounters::default()),
            worker: None,
        })
    }

    /// The traffic counters.
    pub fn counters(&self) -> Arc<NetCounters> {
        self.counters.clone()
    }

    /// Ask the driver to announce itself (sets S_ANNOUNCE; the transport must then raise a
    /// config interrupt).
    pub fn request_announce(&self) {
        if self.acked & F_GUEST_ANNOUNCE != 0 {
            if let Ok(mut c) = self.control.lock() {
                c.status |= S_ANNOUNCE;
            }
        }
    }

    fn stop_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop("virtio-net");
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; 2 * usize::from(self.pairs) + 1]
    }

    fn features(&self) -> u64 {
        offered(self.pairs, self.mtu)
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features & self.features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let (mac, status) = self
            .control
            .lock()
            .map(|c| (c.mac(), c.status))
            .unwrap_or((self.mac, S_LINK_UP));
        let cfg = config_space(mac, status, self.pairs, self.mtu);
        read_config_bytes(&cfg, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // The MAC is writable only for legacy drivers; modern ones use CTRL_MAC_ADDR_SET.
        warn!(
            "virtio-net: ignoring a {}-byte write to read-only config space at {offset:#x}",
            data.len()
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemoryAtomic,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        require_version_1(self.acked, "virtio-net")?;
        self.stop_worker();
        let event_idx = self.acked & F_RING_EVENT_IDX != 0;
        let mrg = self.acked & F_MRG_RXBUF != 0;
        let ctrl_index = ctrl_queue_index(self.acked, self.pairs);
        let used_pairs = if self.acked & F_MQ != 0 {
            self.pairs
        } else {
            1
        };
        let mut slots: Vec<Option<ActiveQueue>> = (0..=ctrl_index).map(|_| None).collect();
        for mut q in queues {
            q.queue.set_event_idx(event_idx);
            match slots.get_mut(usize::from(q.index)) {
                Some(slot) => *slot = Some(q),
                None => {
                    return Err(ActivateError::BadConfig(format!(
                        "virtio-net: queue {} does not exist with the negotiated features",
                        q.index
                    )))
                }
            }
        }
        let filter =
            self.control.lock().map(|c| c.filter.clone()).map_err(|_| {
                ActivateError::BadConfig("virtio-net: control state poisoned".into())
            })?;
        let mut pairs = Vec::new();
        for i in 0..used_pairs {
            let (rx, tx) = (
                slots[usize::from(2 * i)].take(),
                slots[usize::from(2 * i + 1)].take(),
            );
            match (rx, tx) {
                (Some(rx), Some(tx)) => pairs.push(PairQueues {
                    handler: NetQueuePair::new(
                        self.tap_queues[usize::from(i)].clone(),
                        self.counters.clone(),
                        filter.clone(),
                        mrg,
                    ),
                    rx,
                    tx,
                }),
                (None, None) if i > 0 => break,
                _ => {
                    return Err(ActivateError::BadConfig(format!(
                        "virtio-net: queue pair {i} is only half enabled"
                    )))
                }
            }
        }
        if pairs.is_empty() {
            return Err(ActivateError::BadConfig(
                "virtio-net: the driver enabled no rx/tx queues".into(),
            ));
        }
        let offloads = tap_offloads(self.acked);
        for (i, q) in self.tap_queues.iter().enumerate() {
            if let Err(e) = q.set_offloads(offloads) {
                warn!("virtio-net: tap offloads {offloads:?}: {e}");
            }
            // Only pair 0 runs until the driver asks for more through the control queue.
            if let Err(e) = q.set_enabled(i == 0) {
                warn!("virtio-net: tap queue {i}: {e}");
            }
        }
        let ctrl = if self.acked & F_CTRL_VQ != 0 {
            slots[usize::from(ctrl_index)].take()
        } else {
            None
        };
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let worker = Worker {
            mem,
            interrupt,
            pairs,
            ctrl,
            control: self.control.clone(),
            stop: stop.try_clone()?,
        };
        self.worker = Some(WorkerThread::spawn("rvmm-net", stop, move || worker.run())?);
        info!(
            "virtio-net {}: active, features {:#x}, {} queue pair(s)",
            self.mac, self.acked, used_pairs
        );
        Ok(())
    }

    fn reset(&mut self) -> bool {
        self.stop_worker();
        self.acked = 0;
        if let Ok(mut c) = self.control.lock() {
            c.reset(self.mac);
        }
        true
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

#[cfg(test)]
mod tests;
