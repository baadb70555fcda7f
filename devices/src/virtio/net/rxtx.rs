//! The queue handler of one rx/tx queue pair: frames from guest tx buffers to the tap (one
//! writev straight from guest memory), and from the tap into guest rx buffers (merging buffers when MRG_RXBUF is on). Transport-free: the
//! caller hands in guest memory and the queue, and interrupts the guest when told to.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use log::{debug, warn};
use net::{TapQueue, VNET_HDR_LEN};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use super::ctrl::RxFilter;
use crate::virtio::poll_avail;
use crate::GuestMemoryMmap;

/// Largest frame we move: a 64 KiB GSO super-frame plus Ethernet and VLAN headers, and the
/// virtio-net header in front.
pub const MAX_FRAME: usize = VNET_HDR_LEN + 65_535 + 14 + 4;
/// Frames handled per call before yielding to the other queues.
const RX_BUDGET: usize = 256;

/// Traffic counters of one NIC (all queue pairs), readable at any time.
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Frames delivered to the guest.
    pub rx_packets: AtomicU64,
    /// Bytes delivered to the guest (Ethernet frames, header excluded).
    pub rx_bytes: AtomicU64,
    /// Frames from the tap dropped (no fitting buffer, filtered, bad chain).
    pub rx_dropped: AtomicU64,
    /// Frames sent by the guest to the tap.
    pub tx_packets: AtomicU64,
    /// Bytes sent by the guest (Ethernet frames, header excluded).
    pub tx_bytes: AtomicU64,
    /// Guest frames dropped (malformed chain, tap refused).
    pub tx_dropped: AtomicU64,
}

impl NetCounters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// A plain copy of all counters: (rx_packets, rx_bytes, rx_dropped, tx_packets, tx_bytes,
    /// tx_dropped).
    pub fn snapshot(&self) -> [u64; 6] {
        [
            self.rx_packets.load(Ordering::Relaxed),
            self.rx_bytes.load(Ordering::Relaxed),
            self.rx_dropped.load(Ordering::Relaxed),
            self.tx_packets.load(Ordering::Relaxed),
            self.tx_bytes.load(Ordering::Relaxed),
            self.tx_dropped.load(Ordering::Relaxed),
        ]
    }
}

/// What a call to [`NetQueuePair::process_rx`] achieved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxOutcome {
    /// Used buffers were added and the guest wants an interrupt.
    pub notify: bool,
    /// The budget ran out with frames still waiting: call again soon (the tap is edge-triggered,
    /// no new readiness event will come for them).
    pub more: bool,
}

/// Why a chain was refused.
#[derive(Debug, thiserror::Error)]
enum ChainError {
    #[error("tx chain has a device-writable descriptor")]
    WritableInTx,
    #[error("rx chain has a device-readable descriptor")]
    ReadableInRx,
    #[error("chain carries {0} bytes, more than {MAX_FRAME}")]
    TooLong(usize),
    #[error("chain of {0} bytes is shorter than the virtio-net header")]
    TooShort(usize),
    #[error("descriptor chain loops or is longer than the queue")]
    Loop,
    #[error("descriptor at {0:#x}+{1} is outside guest memory")]
    BadAddress(u64, u32),
}

/// Handler state of one queue pair.
pub struct NetQueuePair {
    tap: Arc<TapQueue>,
    counters: Arc<NetCounters>,
    filter: Arc<Mutex<RxFilter>>,
    mrg_rxbuf: bool,
    /// A frame read from the tap but not yet delivered (no buffer was available).
    rx_frame: Vec<u8>,
    rx_len: usize,
    /// Writable descriptors of the rx chains held for the pending frame: (head, addr, len).
    rx_segs: Vec<(u16, GuestAddress, u32)>,
    /// Chains held, and their total writable size.
    rx_chains: u16,
    rx_capacity: usize,
    /// How long [`Self::process_tx`] watches the tx ring for more frames before it lets the
    /// guest notify again.
    tx_poll: Duration,
    warned: bool,
}

/// Default for [`NetQueuePair::set_tx_poll`]: a guest streaming frames posts the next one
/// within microseconds; 50 µs matches the virtio-blk worker's poll.
pub const TX_POLL: Duration = Duration::from_micros(50);

impl NetQueuePair {
    /// A handler moving frames between `tap` and one rx/tx queue pair.
    pub fn new(
        tap: Arc<TapQueue>,
        counters: Arc<NetCounters>,
        filter: Arc<Mutex<RxFilter>>,
        mrg_rxbuf: bool,
    ) -> NetQueuePair {
        NetQueuePair {
            tap,
            counters,
            filter,
            mrg_rxbuf,
            rx_frame: vec![0; MAX_FRAME],
            rx_len: 0,
            rx_segs: Vec::new(),
            rx_chains: 0,
            rx_capacity: 0,
            tx_poll: TX_POLL,
            warned: false,
        }
    }

    /// How long to watch the tx ring for more frames before notifications are re-enabled
    /// (zero: never).
    pub fn set_tx_poll(&mut self, budget: Duration) {
        self.tx_poll = budget;
    }

    /// The tap queue (poll it for readability to know when to call [`Self::process_rx`]).
    pub fn tap(&self) -> &Arc<TapQueue> {
        &self.tap
    }

    fn complain(&mut self, what: &str, e: &dyn std::fmt::Display) {
        // A misbehaving guest could flood the log; warn once, then only at debug level.
        if self.warned {
            debug!("virtio-net: {what}: {e}");
        } else {
            warn!("virtio-net: {what}: {e} (further such messages at debug level)");
            self.warned = true;
        }
    }

    /// Send every frame the guest queued on `queue` (the tx queue) to the tap. Returns whether
    /// the guest must be interrupted.
    pub fn process_tx(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> bool {
        let mut used = false;
        loop {
            if let Err(e) = queue.disable_notification(mem) {
                self.complain("tx queue", &e);
                return used;
            }
            while let Some(chain) = queue.pop_descriptor_chain(mem) {
                let head = chain.head_index();
                match self.send_chain(mem, chain) {
                    Ok(()) => {}
                    Err(e) => {
                        NetCounters::add(&self.counters.tx_dropped, 1);
                        self.complain("dropping tx frame", &e);
                    }
                }
                if let Err(e) = queue.add_used(mem, head, 0) {
                    self.complain("tx used ring", &e);
                    return used;
                }
                used = true;
            }
            // While frames keep coming, keep the guest's kicks suppressed: each one is a
            // guest exit, far dearer than watching the ring for a moment.
            if used && !self.tx_poll.is_zero() && poll_avail(mem, queue, self.tx_poll) {
                continue;
            }
            match queue.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    self.complain("tx queue", &e);
                    break;
                }
            }
        }
        used && queue.needs_notification(mem).unwrap_or(true)
    }

    /// Send one tx chain to the tap with a single writev straight from guest memory (no copy).
    /// Guest-caused failures (bad chain) are errors; a tap that refuses the frame only counts a
    /// drop.
    fn send_chain(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
    ) -> Result<(), ChainError> {
        let mut total = 0usize;
        let mut truncated = false;
        let mut guards = Vec::with_capacity(4);
        for desc in chain {
            // The chain iterator silently stops after queue-size descriptors; a last descriptor
            // that still points onwards means a loop.
            truncated = desc.has_next();
            if desc.is_write_only() {
                return Err(ChainError::WritableInTx);
            }
            let len = desc.len() as usize;
            total = total
                .checked_add(len)
                .filter(|&t| t <= MAX_FRAME)
                .ok_or(ChainError::TooLong(total.saturating_add(len)))?;
            let bad = || ChainError::BadAddress(desc.addr().0, desc.len());
            // A buffer may span memory regions: one slice per region.
            for slice in mem.get_slices(desc.addr(), len) {
                guards.push(slice.map_err(|_| bad())?.ptr_guard());
            }
        }
        if truncated {
            return Err(ChainError::Loop);
        }
        if total <= VNET_HDR_LEN {
            return Err(ChainError::TooShort(total));
        }
        let iov: Vec<libc::iovec> = guards
            .iter()
            .map(|g| libc::iovec {
                iov_base: g.as_ptr() as *mut libc::c_void,
                iov_len: g.len(),
            })
            .collect();
        match writev(self.tap.as_raw_fd(), &iov) {
            Ok(_) => {
                NetCounters::add(&self.counters.tx_packets, 1);
                NetCounters::add(&self.counters.tx_bytes, (total - VNET_HDR_LEN) as u64);
            }
            Err(e) => {
                // A full tap queue or a header the kernel rejects loses this frame only.
                NetCounters::add(&self.counters.tx_dropped, 1);
                if e.kind() != io::ErrorKind::WouldBlock {
                    self.complain("tap write", &e);
                }
            }
        }
        // The guards (and so the mappings the iovecs point into) live until here.
        drop(guards);
        Ok(())
    }

    /// Move frames waiting on the tap into the guest's buffers on `queue` (the rx queue), for as
    /// long as both exist. When buffers run out the frame is kept and the guest is asked to
    /// notify, so no polling happens while the guest is not ready.
    pub fn process_rx(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> RxOutcome {
        let mut out = RxOutcome::default();
        let mut used = false;
        if let Err(e) = queue.disable_notification(mem) {
            self.complain("rx queue", &e);
            return out;
        }
        let mut budget = RX_BUDGET;
        loop {
            if self.rx_len == 0 {
                if budget == 0 {
                    out.more = true;
                    break;
                }
                budget -= 1;
                match self.tap.read(&mut self.rx_frame) {
                    Ok(n) if n > VNET_HDR_LEN && self.accepts(n) => self.rx_len = n,
                    Ok(_) => {
                        NetCounters::add(&self.counters.rx_dropped, 1);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.complain("tap read", &e);
                        break;
                    }
                }
            }
            match self.deliver(mem, queue) {
                Delivery::Done => {
                    used = true;
                    self.rx_len = 0;
                }
                Delivery::Dropped(used_some) => {
                    used |= used_some;
                    NetCounters::add(&self.counters.rx_dropped, 1);
                    self.rx_len = 0;
                }
                Delivery::NoBuffers => match queue.enable_notification(mem) {
                    // Buffers arrived while we were re-enabling: try again.
                    Ok(true) => {
                        if let Err(e) = queue.disable_notification(mem) {
                            self.complain("rx queue", &e);
                            break;
                        }
                        continue;
                    }
                    Ok(false) => break,
                    Err(e) => {
                        self.complain("rx queue", &e);
                        break;
                    }
                },
                Delivery::Broken => break,
            }
        }
        out.notify = used && queue.needs_notification(mem).unwrap_or(true);
        out
    }

    /// Whether the rx filter (MAC table, promiscuous/allmulti) lets the frame of `n` bytes in.
    fn accepts(&self, n: usize) -> bool {
        let eth = &self.rx_frame[VNET_HDR_LEN..n];
        if eth.len() < 6 {
            return false;
        }
        let mut dst = [0u8; 6];
        dst.copy_from_slice(&eth[..6]);
        match self.filter.lock() {
            Ok(f) => f.accepts(dst),
            Err(_) => true,
        }
    }

    fn deliver(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> Delivery {
        let len = self.rx_len;
        // Pop chains until the frame fits (one chain without MRG_RXBUF). Chains popped for a
        // frame that does not fit yet stay held across calls, so the avail index we wait on
        // (and tell the guest about with EVENT_IDX) is the real end of the ring.
        while self.rx_capacity < len {
            if self.rx_chains > 0 && !self.mrg_rxbuf {
                // The one buffer is too small: this frame can never be delivered to this
                // driver. Give the buffer back untouched and drop the frame.
                queue.go_to_previous_position();
                self.rx_reset_held();
                return Delivery::Dropped(false);
            }
            if self.mrg_rxbuf && self.rx_chains >= queue.size() {
                // Larger than the whole ring: return what we hold, empty.
                return self.finish_empty(mem, queue, None);
            }
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                return Delivery::NoBuffers;
            };
            self.rx_chains += 1;
            let head = chain.head_index();
            match writable_segments(mem, chain, head, &mut self.rx_segs) {
                Ok(n) => self.rx_capacity += n,
                Err(e) => {
                    self.complain("rx buffer", &e);
                    // Return everything popped so far as empty, so the driver recycles it.
                    return self.finish_empty(mem, queue, Some(head));
                }
            }
        }
        // num_buffers (bytes 10..12 of virtio_net_hdr_v1): 1 unless buffers were merged.
        self.rx_frame[10..12].copy_from_slice(&self.rx_chains.to_le_bytes());
        let mut off = 0usize;
        let mut per_chain: Vec<(u16, u32)> = Vec::with_capacity(self.rx_chains.into());
        for &(head, addr, seg_len) in &self.rx_segs {
            let n = (seg_len as usize).min(len - off);
            if mem.write_slice(&self.rx_frame[off..off + n], addr).is_err() {
                let e = ChainError::BadAddress(addr.0, seg_len);
                self.complain("rx buffer", &e);
                return self.finish_empty(mem, queue, None);
            }
            match per_chain.last_mut() {
                Some((h, l)) if *h == head => *l += n as u32,
                _ => per_chain.push((head, n as u32)),
            }
            off += n;
        }
        self.rx_reset_held();
        for (head, l) in per_chain {
            if let Err(e) = queue.add_used(mem, head, l) {
                self.complain("rx used ring", &e);
                return Delivery::Broken;
            }
        }
        NetCounters::add(&self.counters.rx_packets, 1);
        NetCounters::add(&self.counters.rx_bytes, (len - VNET_HDR_LEN) as u64);
        Delivery::Done
    }

    fn rx_reset_held(&mut self) {
        self.rx_segs.clear();
        self.rx_chains = 0;
        self.rx_capacity = 0;
    }

    /// A bad rx chain: hand back the chains held for this frame (and `bad`) with length 0, and
    /// drop the frame.
    fn finish_empty(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
        bad: Option<u16>,
    ) -> Delivery {
        let mut heads: Vec<u16> = self.rx_segs.iter().map(|s| s.0).collect();
        heads.extend(bad);
        heads.dedup();
        self.rx_reset_held();
        for h in heads {
            if queue.add_used(mem, h, 0).is_err() {
                return Delivery::Broken;
            }
        }
        Delivery::Dropped(true)
    }

    /// Forget a frame held for delivery (device reset).
    pub fn clear(&mut self) {
        self.rx_len = 0;
        self.rx_reset_held();
    }
}

enum Delivery {
    Done,
    /// The frame was dropped; true when used entries were added on the way.
    Dropped(bool),
    NoBuffers,
    Broken,
}

/// writev(2) on `fd`.
fn writev(fd: std::os::fd::RawFd, iov: &[libc::iovec]) -> io::Result<usize> {
    let count =
        libc::c_int::try_from(iov.len()).map_err(|_| io::Error::other("too many iovecs"))?;
    // SAFETY: every iovec points into guest memory that stays mapped for the call (the caller
    // holds the slices' guards and the memory guard), and the kernel only reads from it.
    let n = unsafe { libc::writev(fd, iov.as_ptr(), count) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Append the device-writable descriptors of an rx chain to `segs`; returns their total size.
fn writable_segments(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    head: u16,
    segs: &mut Vec<(u16, GuestAddress, u32)>,
) -> Result<usize, ChainError> {
    let start = segs.len();
    let mut total = 0usize;
    let mut truncated = false;
    for desc in chain {
        truncated = desc.has_next();
        if !desc.is_write_only() {
            segs.truncate(start);
            return Err(ChainError::ReadableInRx);
        }
        if desc.len() == 0 {
            continue;
        }
        // Check the whole range up front so a delivery never stops half way.
        let last = desc.addr().checked_add(u64::from(desc.len()) - 1);
        if !last.is_some_and(|l| mem.address_in_range(l)) || !mem.address_in_range(desc.addr()) {
            segs.truncate(start);
            return Err(ChainError::BadAddress(desc.addr().0, desc.len()));
        }
        total += desc.len() as usize;
        segs.push((head, desc.addr(), desc.len()));
    }
    if truncated {
        segs.truncate(start);
        return Err(ChainError::Loop);
    }
    if segs.len() == start {
        return Err(ChainError::TooShort(0));
    }
    Ok(total)
}
