//! virtio-net tests: a minimal split-ring "driver" written from the spec places descriptors,
//! avail and used rings at explicit addresses in guest memory, and a socketpair stands in for
//! the tap wire.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use net::{MacAddr, TapQueue, VNET_HDR_LEN};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic as Atomic};
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::virtio::{ActiveQueue, VirtioDevice, VirtioInterrupt, VirtioInterruptType};
use crate::GuestMemoryMmap;

const MEM_SIZE: usize = 0x40_0000;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// The driver side of one split virtqueue.
struct Driver {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl Driver {
    /// A queue whose rings live at `base` (desc), `base + 0x1000` (avail), `base + 0x2000` (used).
    fn new(size: u16, base: u64) -> Driver {
        Driver {
            size,
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.set_size(self.size);
        q.try_set_desc_table_address(GuestAddress(self.desc))
            .unwrap();
        q.try_set_avail_ring_address(GuestAddress(self.avail))
            .unwrap();
        q.try_set_used_ring_address(GuestAddress(self.used))
            .unwrap();
        q.set_ready(true);
        q
    }

    /// Put a chain of (address, length, device-writable) buffers on the avail ring.
    fn add(&mut self, mem: &GuestMemoryMmap, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let idx = (self.next_desc + i as u16) % self.size;
            let next = (idx + 1) % self.size;
            let mut flags = if write { F_WRITE } else { 0 };
            if i + 1 < bufs.len() {
                flags |= F_NEXT;
            }
            let d = self.desc + 16 * u64::from(idx);
            mem.write_obj(addr, GuestAddress(d)).unwrap();
            mem.write_obj(len, GuestAddress(d + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
            mem.write_obj(next, GuestAddress(d + 14)).unwrap();
        }
        self.next_desc = (self.next_desc + bufs.len() as u16) % self.size;
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2))
            .unwrap();
        head
    }

    /// New used-ring entries since the last call: (descriptor head, length).
    fn take_used(&mut self, mem: &GuestMemoryMmap) -> Vec<(u32, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let e = self.used + 4 + 8 * u64::from(self.used_seen % self.size);
            out.push((
                mem.read_obj(GuestAddress(e)).unwrap(),
                mem.read_obj(GuestAddress(e + 4)).unwrap(),
            ));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }

    fn used_flags(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(GuestAddress(self.used)).unwrap()
    }
}

/// Activation queues for `drivers` (queue i is driver i), with the kick eventfds the test
/// writes to notify them.
fn active_queues(drivers: &[Driver]) -> (Vec<EventFd>, Vec<ActiveQueue>) {
    let kicks: Vec<EventFd> = drivers
        .iter()
        .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
        .collect();
    let queues = drivers
        .iter()
        .zip(&kicks)
        .enumerate()
        .map(|(i, (d, k))| ActiveQueue {
            index: i as u16,
            queue: d.queue(),
            kick: k.try_clone().unwrap(),
        })
        .collect();
    (kicks, queues)
}

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// A socketpair: the device's end as a tap queue, and the "wire" end.
fn wire() -> (Arc<TapQueue>, TapQueue) {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills the two-element array with fresh descriptors.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, fds.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: both descriptors are fresh and owned only here.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    (
        Arc::new(TapQueue::from_socket(a).unwrap()),
        TapQueue::from_socket(b).unwrap(),
    )
}

const GUEST: MacAddr = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

fn pair(tap: Arc<TapQueue>, mrg: bool) -> (NetQueuePair, Arc<NetCounters>, Arc<Mutex<RxFilter>>) {
    let counters = Arc::new(NetCounters::default());
    let filter = Arc::new(Mutex::new(RxFilter::new(GUEST)));
    (
        NetQueuePair::new(tap, counters.clone(), filter.clone(), mrg),
        counters,
        filter,
    )
}

/// A frame as the wire carries it: zero virtio-net header, then Ethernet to `dst`.
fn frame(dst: [u8; 6], payload_len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 9, 0x08, 0x00]);
    f.extend((0..payload_len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)));
    f
}

fn recv(wire: &TapQueue) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; MAX_FRAME];
    match wire.read(&mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

#[test]
fn tx_frame_split_over_descriptors_reaches_the_wire() {
    let mem = memory();
    let (tap, wire) = wire();
    let (mut h, counters, _) = pair(tap, false);
    let mut d = Driver::new(16, 0x1_0000);
    let mut q = d.queue();
    let f = frame([0xff; 6], 100, 1);
    mem.write_slice(&f[..VNET_HDR_LEN], GuestAddress(0x10_0000))
        .unwrap();
    mem.write_slice(&f[VNET_HDR_LEN..], GuestAddress(0x20_0000))
        .unwrap();
    let head = d.add(
        &mem,
        &[
            (0x10_0000, VNET_HDR_LEN as u32, false),
            (0x20_0000, (f.len() - VNET_HDR_LEN) as u32, false),
        ],
    );
    assert!(h.process_tx(&mem, &mut q));
    assert_eq!(recv(&wire).unwrap(), f);
    assert!(recv(&wire).is_none());
    assert_eq!(d.take_used(&mem), vec![(u32::from(head), 0)]);
    let s = counters.snapshot();
    assert_eq!((s[3], s[4], s[5]), (1, (f.len() - VNET_HDR_LEN) as u64, 0));
}

#[test]
fn malformed_tx_chains_are_dropped_and_returned() {
    let mem = memory();
    let (tap, wire) = wire();
    let (mut h, counters, _) = pair(tap, false);
    let mut d = Driver::new(16, 0x1_0000);
    let mut q = d.queue();
    d.add(&mem, &[(0x10_0000, 64, true)]); // device-writable in tx
    d.add(&mem, &[(MEM_SIZE as u64 - 8, 64, false)]); // runs past the end of RAM
    d.add(&mem, &[(0x10_0000, 4, false)]); // shorter than the header
    d.add(&mem, &[(0x10_0000, 0x3_0000, false)]); // longer than any frame
    d.add(&mem, &[(u64::MAX - 2, 64, false)]); // address wraps
    assert!(h.process_tx(&mem, &mut q));
    assert_eq!(d.take_used(&mem).len(), 5, "every chain must be returned");
    assert!(recv(&wire).is_none());
    assert_eq!(counters.snapshot()[5], 5);
    // The queue still works afterwards.
    mem.write_slice(&frame([0xff; 6], 20, 2), GuestAddress(0x10_0000))
        .unwrap();
    d.add(&mem, &[(0x10_0000, (VNET_HDR_LEN + 34) as u32, false)]);
    assert!(h.process_tx(&mem, &mut q));
    assert_eq!(recv(&wire).unwrap(), frame([0xff; 6], 20, 2));
}

#[test]
fn descriptor_loop_does_not_hang() {
    let mem = memory();
    let (tap, _wire) = wire();
    let (mut h, counters, _) = pair(tap, false);
    let mut d = Driver::new(16, 0x1_0000);
    let mut q = d.queue();
    d.add(&mem, &[(0x10_0000, 64, false), (0x10_1000, 64, false)]);
    // Point descriptor 1 back at descriptor 0.
    mem.write_obj(F_NEXT, GuestAddress(d.desc + 16 + 12))
        .unwrap();
    mem.write_obj(0u16, GuestAddress(d.desc + 16 + 14)).unwrap();
    h.process_tx(&mem, &mut q);
    assert_eq!(
        counters.snapshot()[3],
        0,
        "a looping chain must not be sent"
    );
}

#[test]
fn rx_frame_fills_one_buffer_with_num_buffers_one() {
    let mem = memory();
    let (tap, wire) = wire();
    let (mut h, counters, _) = pair(tap, false);
    let mut d = Driver::new(16, 0x1_0000);
    let mut q = d.queue();
    let f = frame(GUEST.0, 200, 3);
    wire.write(&f).unwrap();
    let head = d.add(&mem, &[(0x10_0000, 100, true), (0x20_0000, 2000, true)]);
    let out = h.process_rx(&mem, &mut q);
    assert!(out.notify && !out.more);
    assert_eq!(d.take_used(&mem), vec![(u32::from(head), f.len() as u32)]);
    let mut got = vec![0u8; f.len()];
    mem.read_slice(&mut got[..100], GuestAddress(0x10_0000))
        .unwrap();
    mem.read_slice(&mut got[100..], GuestAddress(0x20_0000))
        .unwrap();
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1);
    assert_eq!(&got[VNET_HDR_LEN..], &f[VNET_HDR_LEN..]);
    let s = counters.snapshot();
    assert_eq!((s[0], s[1], s[2]), (1, (f.len() - VNET_HDR_LEN) as u64, 0));
}

#[test]
fn rx_waits_for_buffers_without_losing_the_frame() {
    let mem = memory();
    let (tap, wire) = wire();
    let (mut h, counters, _) = pair(tap, false);
    let mut d = Driver::new(16, 0x1_0000);
    let mut q = d.queue();
    let f = frame(GUEST.0, 60, 4);
    wire.write(&f).unwrap();
    let out = h.process_rx(&mem, &mut q);
    assert_eq!(
        out,
        RxOutcome::default(),
        "no buffers: nothing to do, nothing pending"
    );
    assert_eq!(
        d.used_flags(&mem),
        0,
        "the guest must be asked to notify new buffers"
    );
    d.add(&mem, &[(0x10_0000, 2048, true)]);
    assert!(h.process_rx(&mem, &mut q).notify);
    assert_eq!(d.take_used(&mem).len(), 1);
    let mut got = vec![0u8; f.len() - VNET_HDR_LEN];
    mem.read_slice(&mut got, GuestAddress(0x10_0000 + VNET_HDR_LEN as u64))
        .unwrap();
    assert_eq!(got, &f[VNET_HDR_LEN..]);
    assert_eq!(counters.snapshot()[2], 0);
}

#[test]
fn rx_merges_buffers_for_a_large_frame() {
    let mem = memory();
    let (tap, wire) = wire();
    let (mut h, _, _) = pair(tap, true);
    let mut d = Driver::new(16, 0x1_0000);
    let mut q = d.queue();
    let f = frame(GUEST.0, 3000, 5);
    wire.write(&f).unwrap();
    let heads: Vec<u16> = (0..4)
        .map(|i| d.add(&mem, &[(0x10_0000 + 0x1000 * i, 1024, true)]))
        .collect();
    assert!(h.process_rx(&mem, &mut q).notify);
    let used = d.take_used(&mem);
    let total = f.len() as u32;
    assert_eq!(
        used,
        vec![
            (u32::from(heads[0]), 1024),
            (u32::from(heads[1]), 1024),
            (u32::from(heads[2]), total - 2048)
        ]
    );
    let mut got = Vec::new();
    for (i, &(_, len)) in used.iter().enumerate() {
        let mut part = vec![0u8; len as usize];
        mem.read_slice(&mut part, GuestAddress(0x10_0000 + 0x1000 * i as u64))
            .unwrap();
        got.extend(part);
    }
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 3);
    assert_eq!(&got[VNET_HDR_LEN..], &f[VNET_HDR_LEN..]);
    // The fourth buffer is still available for the next frame.
    wire.write(&frame(GUEST.0, 10, 6)).unwrap();
    assert!(h.process_rx(&mem, &mut q).notify);
    assert_eq!(d.take_used(&mem)[0].0, u32::from(heads[3]));
}

#[test]
fn rx_merge_waits_when_buffers_are_short() {
    let mem = memory();
    let (tap, wire) = wire();
    let (mut h, _, _) = pair(tap, true);
    let mut d = Driver::new(16, 0x1_0000);
    let mut q = d.queue();
    wire.write(&frame(GUEST.0, 1500, 7)).unwrap();
    d.add(&mem, &[(0x10_0000, 1024, true)]);
    assert!(
        !h.process_rx(&mem, &mut q).notify,
        "half a frame must not be delivered"
    );
    assert!(d.take_used(&mem).is_empty());
    d.add(&mem, &[(0x11_0000, 1024, true)]);
    assert!(h.process_rx(&mem, &mut q).notify);
    assert_eq!(d.take_used(&mem).len(), 2);
}

#[test]
fn rx_without_merging_drops_frames_larger_than_the_buffer() {
    let mem = memory();
    let (tap, wire) = wire();
    let (mut h, counters, _) = pair(tap, false);
    let mut d = Driver::new(16, 0x1_0000);
    let mut q = d.queue();
    wire.write(&frame(GUEST.0, 1500, 8)).unwrap();
    wire.write(&frame(GUEST.0, 50, 9)).unwrap();
    let head = d.add(&mem, &[(0x10_0000, 1024, true)]);
    assert!(h.process_rx(&mem, &mut q).notify);
    // The big frame is dropped, the buffer reused for the small one.
    assert_eq!(
        d.take_used(&mem),
        vec![(u32::from(head), (VNET_HDR_LEN + 64) as u32)]
    );
    assert_eq!(counters.snapshot()[2], 1);
}

#[test]
fn rx_bad_buffers_are_returned_empty() {
    let mem = memory();
    let (tap, wire) = wire();
    let (mut h, counters, _) = pair(tap, false);
    let mut d = Driver::new(16, 0x1_0000);
    let mut q = d.queue();
    wire.write(&frame(GUEST.0, 50, 10)).unwrap();
    wire.write(&frame(GUEST.0, 50, 11)).unwrap();
    let bad = d.add(&mem, &[(0x10_0000, 1024, false)]); // device-readable rx buffer
    let bad2 = d.add(&mem, &[(MEM_SIZE as u64 - 16, 1024, true)]); // past the end of RAM
    assert!(h.process_rx(&mem, &mut q).notify);
    assert_eq!(
        d.take_used(&mem),
        vec![(u32::from(bad), 0), (u32::from(bad2), 0)]
    );
    assert_eq!(counters.snapshot()[2], 2);
}

#[test]
fn rx_filter_drops_foreign_unicast_when_not_promiscuous() {
    let mem = memory();
    let (tap, wire) = wire();
    let (mut h, counters, filter) = pair(tap, false);
    filter.lock().unwrap().promisc = false;
    let mut d = Driver::new(16, 0x1_0000);
    let mut q = d.queue();
    wire.write(&frame([0x52, 0x54, 0, 9, 9, 9], 50, 12))
        .unwrap();
    wire.write(&frame([0xff; 6], 50, 13)).unwrap();
    d.add(&mem, &[(0x10_0000, 2048, true)]);
    d.add(&mem, &[(0x11_0000, 2048, true)]);
    assert!(h.process_rx(&mem, &mut q).notify);
    assert_eq!(d.take_used(&mem).len(), 1, "only the broadcast passes");
    assert_eq!(counters.snapshot()[2], 1);
}

#[test]
fn long_runs_wrap_the_rings() {
    let mem = memory();
    let (tap, wire) = wire();
    let (mut h, counters, _) = pair(tap, false);
    let mut d = Driver::new(8, 0x1_0000);
    let mut q = d.queue();
    for i in 0..1000u32 {
        let f = frame([0xff; 6], 40 + (i % 50) as usize, i as u8);
        let addr = 0x10_0000 + 0x1000 * u64::from(i % 8);
        mem.write_slice(&f, GuestAddress(addr)).unwrap();
        d.add(&mem, &[(addr, f.len() as u32, false)]);
        h.process_tx(&mem, &mut q);
        assert_eq!(d.take_used(&mem).len(), 1, "frame {i}");
        assert_eq!(recv(&wire).unwrap(), f, "frame {i}");
    }
    assert_eq!(counters.snapshot()[3], 1000);
}

#[test]
fn event_idx_suppresses_interrupts_the_guest_did_not_ask_for() {
    let mem = memory();
    let (tap, _wire) = wire();
    let (mut h, _, _) = pair(tap, false);
    let mut d = Driver::new(16, 0x1_0000);
    let mut q = d.queue();
    q.set_event_idx(true);
    // used_event (after the avail ring) = 1: interrupt only once the 2nd entry is used.
    mem.write_obj(1u16, GuestAddress(d.avail + 4 + 2 * 16))
        .unwrap();
    let f = frame([0xff; 6], 30, 1);
    mem.write_slice(&f, GuestAddress(0x10_0000)).unwrap();
    d.add(&mem, &[(0x10_0000, f.len() as u32, false)]);
    assert!(!h.process_tx(&mem, &mut q), "used_event not reached");
    d.add(&mem, &[(0x10_0000, f.len() as u32, false)]);
    assert!(h.process_tx(&mem, &mut q), "used_event reached");
    // avail_event (after the used ring) tells the driver where to kick next.
    let avail_event: u16 = mem.read_obj(GuestAddress(d.used + 4 + 8 * 16)).unwrap();
    assert_eq!(avail_event, 2);
}

#[test]
fn control_queue_acks_commands() {
    let mem = memory();
    let mut d = Driver::new(16, 0x1_0000);
    let mut q = d.queue();
    let mut c = NetControl::new(GUEST, 2);
    mem.write_slice(&[CTRL_RX, CTRL_RX_PROMISC], GuestAddress(0x10_0000))
        .unwrap();
    mem.write_slice(&[0], GuestAddress(0x10_0100)).unwrap();
    mem.write_obj(0xaau8, GuestAddress(0x10_0200)).unwrap();
    d.add(
        &mem,
        &[
            (0x10_0000, 2, false),
            (0x10_0100, 1, false),
            (0x10_0200, 1, true),
        ],
    );
    mem.write_slice(
        &[CTRL_MQ, CTRL_MQ_VQ_PAIRS_SET, 9, 0],
        GuestAddress(0x10_0300),
    )
    .unwrap();
    d.add(&mem, &[(0x10_0300, 4, false), (0x10_0400, 1, true)]);
    d.add(&mem, &[(0x10_0500, 1, true)]); // no command at all
    assert!(c.process(&mem, &mut q));
    assert_eq!(d.take_used(&mem).len(), 3);
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(0x10_0200)).unwrap(),
        CTRL_OK
    );
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(0x10_0400)).unwrap(),
        CTRL_ERR
    );
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(0x10_0500)).unwrap(),
        CTRL_ERR
    );
    assert!(!c.filter.lock().unwrap().promisc);
    assert_eq!(c.active_pairs, 1);
}

struct CountingInterrupt(AtomicUsize);

impl VirtioInterrupt for CountingInterrupt {
    fn trigger(&self, t: VirtioInterruptType) -> std::io::Result<()> {
        if matches!(t, VirtioInterruptType::Queue(_)) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn device_offers_features_and_config_space() {
    let (tap, _w) = wire();
    let dev = Net::from_queues(vec![tap], GUEST, Some(1400)).unwrap();
    assert_eq!(dev.device_type(), 1);
    assert_eq!(dev.queue_max_sizes().len(), 3);
    let f = dev.features();
    for bit in [
        F_VERSION_1,
        F_MAC,
        F_STATUS,
        F_MTU,
        F_CSUM,
        F_GUEST_CSUM,
        F_MRG_RXBUF,
        F_CTRL_VQ,
        F_RING_EVENT_IDX,
        F_HOST_TSO4,
        F_GUEST_TSO6,
    ] {
        assert_ne!(f & bit, 0, "feature {bit:#x} missing");
    }
    assert_eq!(f & F_MQ, 0, "MQ needs more than one pair");
    let mut cfg = [0u8; 14];
    dev.read_config(0, &mut cfg);
    assert_eq!(&cfg[..6], &GUEST.0);
    assert_eq!(u16::from_le_bytes([cfg[6], cfg[7]]), S_LINK_UP);
    assert_eq!(u16::from_le_bytes([cfg[8], cfg[9]]), 1);
    assert_eq!(u16::from_le_bytes([cfg[10], cfg[11]]), 1400);
    assert_eq!(&cfg[12..], &[0, 0], "past the end reads zero");
    let mut one = [0u8; 1];
    dev.read_config(u64::MAX, &mut one);
    assert_eq!(one, [0]);
    assert!(Net::from_queues(vec![], GUEST, None).is_err());
}

#[test]
fn activated_device_moves_frames_both_ways_and_resets() {
    let (tap, wire) = wire();
    let mut dev = Net::from_queues(vec![tap], GUEST, None).unwrap();
    dev.ack_features(F_VERSION_1 | F_MRG_RXBUF | F_RING_EVENT_IDX | F_CTRL_VQ | F_MAC);
    let mem = memory();
    let atomic = Atomic::new(mem.clone());
    let mut drivers = [
        Driver::new(16, 0x1_0000),
        Driver::new(16, 0x2_0000),
        Driver::new(16, 0x3_0000),
    ];
    let (kicks, queues) = active_queues(&drivers);
    let irq = Arc::new(CountingInterrupt(AtomicUsize::new(0)));
    dev.activate(atomic, irq.clone(), queues).unwrap();

    // rx: a frame waits on the wire until the guest posts a buffer and kicks.
    let f = frame(GUEST.0, 500, 21);
    wire.write(&f).unwrap();
    drivers[0].add(&mem, &[(0x10_0000, 2048, true)]);
    kicks[0].write(1).unwrap();
    wait_for("rx used entry", || !drivers[0].take_used(&mem).is_empty());
    let mut got = vec![0u8; f.len() - VNET_HDR_LEN];
    mem.read_slice(&mut got, GuestAddress(0x10_0000 + VNET_HDR_LEN as u64))
        .unwrap();
    assert_eq!(got, &f[VNET_HDR_LEN..]);

    // A second frame arriving later is picked up from the tap's readiness alone.
    drivers[0].add(&mem, &[(0x11_0000, 2048, true)]);
    kicks[0].write(1).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    wire.write(&frame(GUEST.0, 60, 22)).unwrap();
    wait_for("second rx", || !drivers[0].take_used(&mem).is_empty());

    // tx
    let t = frame([0xff; 6], 300, 23);
    mem.write_slice(&t, GuestAddress(0x20_0000)).unwrap();
    drivers[1].add(&mem, &[(0x20_0000, t.len() as u32, false)]);
    kicks[1].write(1).unwrap();
    let mut sent = None;
    wait_for("tx frame on the wire", || {
        sent = recv(&wire);
        sent.is_some()
    });
    assert_eq!(sent.unwrap(), t);
    // EVENT_IDX with used_event left at 0: only the first rx and the first tx interrupt.
    wait_for("interrupts", || irq.0.load(Ordering::SeqCst) >= 2);
    let s = dev.counters().snapshot();
    assert_eq!((s[0], s[3]), (2, 1));

    assert!(dev.reset());
    // After reset nothing is served any more.
    drivers[1].add(&mem, &[(0x20_0000, t.len() as u32, false)]);
    kicks[1].write(1).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(recv(&wire).is_none());
}

#[test]
fn activation_without_version_1_is_refused() {
    let (tap, _w) = wire();
    let mut dev = Net::from_queues(vec![tap], GUEST, None).unwrap();
    dev.ack_features(F_MAC);
    let d = Driver::new(16, 0x1_0000);
    let q = vec![ActiveQueue {
        index: 0,
        queue: d.queue(),
        kick: EventFd::new(0).unwrap(),
    }];
    let irq = Arc::new(CountingInterrupt(AtomicUsize::new(0)));
    assert!(dev.activate(Atomic::new(memory()), irq, q).is_err());
}

#[test]
fn multi_queue_pairs_start_after_vq_pairs_set() {
    let (tap0, wire0) = wire();
    let (tap1, wire1) = wire();
    let mut dev = Net::from_queues(vec![tap0, tap1], GUEST, None).unwrap();
    assert_ne!(dev.features() & F_MQ, 0);
    assert_eq!(dev.queue_max_sizes().len(), 5);
    let acked = F_VERSION_1 | F_CTRL_VQ | F_MQ;
    dev.ack_features(acked);
    assert_eq!(ctrl_queue_index(acked, 2), 4);
    assert_eq!(ctrl_queue_index(F_VERSION_1 | F_CTRL_VQ, 2), 2);
    let mem = memory();
    let mut drivers: Vec<Driver> = (0..5u64)
        .map(|i| Driver::new(16, 0x1_0000 * (i + 1)))
        .collect();
    let (kicks, queues) = active_queues(&drivers);
    let irq = Arc::new(CountingInterrupt(AtomicUsize::new(0)));
    dev.activate(Atomic::new(mem.clone()), irq, queues).unwrap();

    // Pair 1 (queues 2 and 3) is idle until the driver asks for two pairs.
    let t = frame([0xff; 6], 40, 31);
    mem.write_slice(&t, GuestAddress(0x30_0000)).unwrap();
    drivers[3].add(&mem, &[(0x30_0000, t.len() as u32, false)]);
    kicks[3].write(1).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(recv(&wire1).is_none(), "pair 1 ran before VQ_PAIRS_SET");

    mem.write_slice(
        &[CTRL_MQ, CTRL_MQ_VQ_PAIRS_SET, 2, 0],
        GuestAddress(0x38_0000),
    )
    .unwrap();
    drivers[4].add(&mem, &[(0x38_0000, 4, false), (0x38_0100, 1, true)]);
    kicks[4].write(1).unwrap();
    wait_for("control reply", || !drivers[4].take_used(&mem).is_empty());
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(0x38_0100)).unwrap(),
        CTRL_OK
    );
    // The pending tx on pair 1 goes out once the pair is enabled and kicked again.
    kicks[3].write(1).unwrap();
    let mut sent = None;
    wait_for("tx on pair 1", || {
        sent = recv(&wire1);
        sent.is_some()
    });
    assert_eq!(sent.unwrap(), t);
    assert!(recv(&wire0).is_none(), "frame went out on the wrong pair");
    assert!(dev.reset());
}

#[test]
fn tx_buffer_spanning_two_memory_regions_is_sent_whole() {
    let half = MEM_SIZE / 2;
    let mem =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), half), (GuestAddress(half as u64), half)])
            .unwrap();
    let (tap, wire) = wire();
    let (mut h, counters, _) = pair(tap, false);
    let mut d = Driver::new(16, 0x1_0000);
    let mut q = d.queue();
    let f = frame([0xff; 6], 600, 41);
    let start = half as u64 - 100; // the frame straddles the region boundary
    mem.write_slice(&f, GuestAddress(start)).unwrap();
    d.add(&mem, &[(start, f.len() as u32, false)]);
    assert!(h.process_tx(&mem, &mut q));
    assert_eq!(recv(&wire).unwrap(), f);
    assert_eq!(counters.snapshot()[5], 0);
}

#[test]
fn tx_poll_takes_frames_posted_meanwhile_with_kicks_suppressed() {
    let mem = memory();
    let (tap, wire) = wire();
    let (mut h, counters, _) = pair(tap, false);
    h.set_tx_poll(Duration::from_millis(300));
    let mut d = Driver::new(16, 0x1_0000);
    let mut q = d.queue();
    let (f1, f2) = (frame([0xff; 6], 40, 1), frame([0xff; 6], 50, 2));
    mem.write_slice(&f1, GuestAddress(0x10_0000)).unwrap();
    mem.write_slice(&f2, GuestAddress(0x20_0000)).unwrap();
    d.add(&mem, &[(0x10_0000, f1.len() as u32, false)]);
    let used_flags = GuestAddress(d.used);
    let (m2, len2) = (mem.clone(), f2.len() as u32);
    let poster = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        // The device is still watching the ring: it has told the driver not to kick.
        let flags: u16 = m2.read_obj(used_flags).unwrap();
        d.add(&m2, &[(0x20_0000, len2, false)]);
        (flags, d)
    });
    assert!(h.process_tx(&mem, &mut q));
    let (flags_during_poll, mut d) = poster.join().unwrap();
    assert_eq!(
        flags_during_poll & 1,
        1,
        "VRING_USED_F_NO_NOTIFY while polling"
    );
    assert_eq!(recv(&wire).unwrap(), f1);
    assert_eq!(
        recv(&wire).unwrap(),
        f2,
        "the frame posted during the poll went out"
    );
    assert_eq!(d.take_used(&mem).len(), 2);
    assert_eq!(counters.snapshot()[3], 2);
    let flags: u16 = mem.read_obj(used_flags).unwrap();
    assert_eq!(
        flags & 1,
        0,
        "notifications are enabled again once the ring stays empty"
    );
}
