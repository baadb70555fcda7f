//! virtio-scsi queue handler tests on virtio-queue's mock driver (descriptor table and avail
//! ring from `MockSplitQueue`; the used ring placed explicitly at its own address), plus the
//! `VirtioDevice` worker end to end.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use qcow::{BlockBackend, BlockError, BlockResult};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::scsi::CdRom;
use crate::GuestMemoryMmap;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const REQ: u64 = 0x10_0000;
const RESP: u64 = 0x20_0000;
const DATA: u64 = 0x30_0000;
const OUR_LUN: [u8; 8] = [1, 0, 0x40, 0, 0, 0, 0, 0];

/// Block n of the medium is filled with byte n.
struct Medium(Vec<u8>);

impl BlockBackend for Medium {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn is_read_only(&self) -> bool {
        true
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> BlockResult<()> {
        qcow::backend::check_range(offset, buf.len() as u64, self.size())?;
        buf.copy_from_slice(&self.0[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
    fn write_at(&self, _: u64, _: &[u8]) -> BlockResult<()> {
        Err(BlockError::ReadOnly)
    }
    fn flush(&self) -> BlockResult<()> {
        Ok(())
    }
    fn discard(&self, _: u64, _: u64) -> BlockResult<()> {
        Err(BlockError::ReadOnly)
    }
    fn write_zeroes(&self, _: u64, _: u64) -> BlockResult<()> {
        Err(BlockError::ReadOnly)
    }
}

fn cdrom(blocks: usize) -> CdRom {
    let data = (0..blocks).flat_map(|b| vec![b as u8; 2048]).collect();
    CdRom::new(Arc::new(Medium(data)), "T1")
}

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap()
}

/// The driver side of one queue.
struct Driver<'a> {
    mock: MockSplitQueue<'a, GuestMemoryMmap>,
    mem: &'a GuestMemoryMmap,
    used: u64,
    next_desc: u16,
    used_seen: u16,
}

impl<'a> Driver<'a> {
    fn new(mem: &'a GuestMemoryMmap, base: u64) -> Self {
        Driver {
            mock: MockSplitQueue::create(mem, GuestAddress(base), 32),
            mem,
            used: base + 0x4000,
            next_desc: 0,
            used_seen: 0,
        }
    }

    fn queue(&self) -> Queue {
        let mut q: Queue = self.mock.create_queue().unwrap();
        q.try_set_used_ring_address(GuestAddress(self.used))
            .unwrap();
        q
    }

    /// Post a chain of (address, length, device-writable) buffers.
    fn add(&mut self, bufs: &[(u64, u32, bool)]) {
        let descs: Vec<RawDescriptor> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, w))| {
                let mut flags = if w { F_WRITE } else { 0 };
                if i + 1 < bufs.len() {
                    flags |= F_NEXT;
                }
                let next = self.next_desc + i as u16 + 1;
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
            })
            .collect();
        self.mock.add_desc_chains(&descs, self.next_desc).unwrap();
        self.next_desc += bufs.len() as u16;
    }

    /// Used entries since the last call: (head, len).
    fn used(&mut self) -> Vec<(u32, u32)> {
        let idx: u16 = self.mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let e = self.used + 4 + 8 * u64::from(self.used_seen % 32);
            out.push((
                self.mem.read_obj(GuestAddress(e)).unwrap(),
                self.mem.read_obj(GuestAddress(e + 4)).unwrap(),
            ));
            self.used_seen += 1;
        }
        out
    }
}

fn request_header(lun: [u8; 8], cdb: &[u8], cdb_size: usize) -> Vec<u8> {
    let mut h = lun.to_vec();
    h.extend_from_slice(&7u64.to_le_bytes()); // tag
    h.extend_from_slice(&[0, 0, 0]); // task attr, prio, crn
    let mut c = cdb.to_vec();
    c.resize(cdb_size, 0);
    h.extend(c);
    h
}

/// Response header fields: (sense_len, resid, status, response, sense bytes).
fn response_at(mem: &GuestMemoryMmap, addr: u64) -> (u32, u32, u8, u8, Vec<u8>) {
    let mut r = vec![0u8; 108];
    mem.read_slice(&mut r, GuestAddress(addr)).unwrap();
    (
        u32::from_le_bytes(r[0..4].try_into().unwrap()),
        u32::from_le_bytes(r[4..8].try_into().unwrap()),
        r[10],
        r[11],
        r[12..30].to_vec(),
    )
}

/// Post one command with `data_in` bytes of data-in room (split as given) and serve it.
fn run_cmd(
    mem: &GuestMemoryMmap,
    host: &mut ScsiHost,
    lun: [u8; 8],
    cdb: &[u8],
    data_in: &[u32],
) -> (u32, (u32, u32, u8, u8, Vec<u8>)) {
    let mut d = Driver::new(mem, 0x1000);
    let mut q = d.queue();
    let h = request_header(lun, cdb, 32);
    mem.write_slice(&h, GuestAddress(REQ)).unwrap();
    let mut bufs = vec![(REQ, h.len() as u32, false), (RESP, 108, true)];
    let mut at = DATA;
    for &len in data_in {
        bufs.push((at, len, true));
        at += u64::from(len) + 0x1000; // not contiguous
    }
    d.add(&bufs);
    assert!(host.process_request_queue(mem, &mut q));
    let used = d.used();
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].0, 0);
    (used[0].1, response_at(mem, RESP))
}

#[test]
fn inquiry_through_the_request_queue() {
    let mem = memory();
    let mut host = ScsiHost::new(cdrom(4));
    let (len, (sense_len, resid, status, resp, _)) =
        run_cmd(&mem, &mut host, OUR_LUN, &[0x12, 0, 0, 0, 36, 0], &[96]);
    assert_eq!((status, resp, sense_len), (0, response::OK, 0));
    assert_eq!(resid, 96 - 36);
    assert_eq!(len, 108 + 36);
    let mut inq = [0u8; 36];
    mem.read_slice(&mut inq, GuestAddress(DATA)).unwrap();
    assert_eq!(inq[0], 5);
    assert_eq!(&inq[8..12], b"RVMM");
}

#[test]
fn read10_scatters_over_split_data_in_buffers() {
    let mem = memory();
    let mut host = ScsiHost::new(cdrom(8));
    let (len, (_, resid, status, resp, _)) = run_cmd(
        &mem,
        &mut host,
        OUR_LUN,
        &[0x28, 0, 0, 0, 0, 5, 0, 0, 2, 0],
        &[1000, 3000, 96],
    );
    assert_eq!((status, resp, resid), (0, 0, 0));
    assert_eq!(len, 108 + 4096);
    let mut got = Vec::new();
    let mut at = DATA;
    for l in [1000u32, 3000, 96] {
        let mut b = vec![0u8; l as usize];
        mem.read_slice(&mut b, GuestAddress(at)).unwrap();
        got.extend(b);
        at += u64::from(l) + 0x1000;
    }
    assert!(got[..2048].iter().all(|&b| b == 5));
    assert!(got[2048..].iter().all(|&b| b == 6));
}

#[test]
fn check_condition_carries_sense() {
    let mem = memory();
    let mut host = ScsiHost::new(cdrom(8));
    let (len, (sense_len, _, status, resp, sense)) = run_cmd(
        &mem,
        &mut host,
        OUR_LUN,
        &[0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0],
        &[2048],
    );
    assert_eq!((status, resp, sense_len), (2, response::OK, 18));
    assert_eq!((sense[0], sense[2], sense[12]), (0x70, 5, 0x21));
    assert_eq!(len, 108);
}

#[test]
fn other_targets_and_luns_are_bad_targets() {
    let mem = memory();
    let mut host = ScsiHost::new(cdrom(4));
    for lun in [
        [1, 1, 0x40, 0, 0, 0, 0, 0],
        [1, 0, 0x40, 1, 0, 0, 0, 0],
        [0; 8],
    ] {
        let (_, (_, _, _, resp, _)) = run_cmd(&mem, &mut host, lun, &[0x00], &[]);
        assert_eq!(resp, response::BAD_TARGET, "{lun:?}");
    }
}

#[test]
fn overrun_short_header_and_missing_response_room() {
    let mem = memory();
    let mut host = ScsiHost::new(cdrom(4));
    let (_, (_, _, _, resp, _)) = run_cmd(
        &mem,
        &mut host,
        OUR_LUN,
        &[0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0],
        &[2048],
    );
    assert_eq!(resp, response::OVERRUN);

    let mut d = Driver::new(&mem, 0x1000);
    let mut q = d.queue();
    d.add(&[(REQ, 10, false), (RESP, 108, true)]); // header too short
    d.add(&[(REQ, 51, false), (RESP, 20, true)]); // no room for the response
    d.add(&[(REQ, 51, false), (0xFFFF_0000_0000, 108, true)]); // response outside memory
    host.process_request_queue(&mem, &mut q);
    let used = d.used();
    assert_eq!(used, [(0, 108), (2, 0), (4, 0)]);
    assert_eq!(response_at(&mem, RESP).3, response::FAILURE);
}

#[test]
fn control_queue_tmf_and_an() {
    let mem = memory();
    let mut host = ScsiHost::new(cdrom(4));
    let mut d = Driver::new(&mem, 0x1000);
    let mut q = d.queue();
    let tmf = |sub: u32, lun: [u8; 8]| {
        let mut r = 0u32.to_le_bytes().to_vec();
        r.extend_from_slice(&sub.to_le_bytes());
        r.extend_from_slice(&lun);
        r.extend_from_slice(&9u64.to_le_bytes());
        r
    };
    let reqs = [
        tmf(0, OUR_LUN),                     // ABORT TASK
        tmf(5, OUR_LUN),                     // LOGICAL UNIT RESET
        tmf(99, OUR_LUN),                    // unknown
        tmf(0, [1, 3, 0x40, 0, 0, 0, 0, 0]), // other target
    ];
    for (i, r) in reqs.iter().enumerate() {
        let at = REQ + 0x100 * i as u64;
        mem.write_slice(r, GuestAddress(at)).unwrap();
        d.add(&[
            (at, r.len() as u32, false),
            (RESP + 0x100 * i as u64, 1, true),
        ]);
    }
    let mut an = 1u32.to_le_bytes().to_vec();
    an.extend_from_slice(&OUR_LUN);
    an.extend_from_slice(&0x10u32.to_le_bytes());
    mem.write_slice(&an, GuestAddress(REQ + 0x800)).unwrap();
    mem.write_slice(&[0xFF; 5], GuestAddress(RESP + 0x800))
        .unwrap();
    d.add(&[(REQ + 0x800, 16, false), (RESP + 0x800, 5, true)]);
    assert!(host.process_control_queue(&mem, &mut q));
    let used = d.used();
    assert_eq!(
        used.iter().map(|u| u.1).collect::<Vec<_>>(),
        [1, 1, 1, 1, 5]
    );
    let byte = |at: u64| mem.read_obj::<u8>(GuestAddress(at)).unwrap();
    assert_eq!(byte(RESP), response::OK);
    assert_eq!(byte(RESP + 0x100), response::OK);
    assert_eq!(byte(RESP + 0x200), response::FUNCTION_REJECTED);
    assert_eq!(byte(RESP + 0x300), response::BAD_TARGET);
    let mut a = [0u8; 5];
    mem.read_slice(&mut a, GuestAddress(RESP + 0x800)).unwrap();
    assert_eq!(
        a,
        [0, 0, 0, 0, response::OK],
        "no events supported, request OK"
    );
}

#[test]
fn events_wait_for_buffers_and_report_misses() {
    let mem = memory();
    let mut host = ScsiHost::new(cdrom(4));
    let mut d = Driver::new(&mem, 0x1000);
    let mut q = d.queue();
    // No pending events: posted buffers stay with the device.
    d.add(&[(DATA, 16, true)]);
    assert!(!host.process_event_queue(&mem, &mut q));
    assert!(d.used().is_empty());
    host.push_event(T_TRANSPORT_RESET, 0);
    assert!(host.process_event_queue(&mem, &mut q));
    assert_eq!(d.used(), [(0, 16)]);
    let ev: u32 = mem.read_obj(GuestAddress(DATA)).unwrap();
    assert_eq!(ev, T_TRANSPORT_RESET);
    // Overflow while no buffers are posted: the next delivered event carries EVENTS_MISSED.
    for _ in 0..20 {
        host.push_event(T_TRANSPORT_RESET, 0);
    }
    d.add(&[(DATA + 0x100, 16, true)]);
    host.process_event_queue(&mem, &mut q);
    let ev: u32 = mem.read_obj(GuestAddress(DATA + 0x100)).unwrap();
    assert_eq!(ev, T_TRANSPORT_RESET | EVENTS_MISSED);
}

#[test]
fn config_space_and_cdb_size_change() {
    let mem = memory();
    let mut host = ScsiHost::new(cdrom(4));
    let c = host.config();
    let field = |c: &[u8; 36], at: usize| u32::from_le_bytes(c[at..at + 4].try_into().unwrap());
    assert_eq!(field(&c, 0), 1);
    assert_eq!(field(&c, 20), 96);
    assert_eq!(field(&c, 24), 32);
    assert_eq!(field(&c, 32), 0);
    host.write_config(24, &16u32.to_le_bytes());
    host.write_config(24, &0u32.to_le_bytes()); // refused
    host.write_config(0, &5u32.to_le_bytes()); // read-only
    host.write_config(20, &[1, 2]); // wrong width
    let c = host.config();
    assert_eq!((field(&c, 0), field(&c, 20), field(&c, 24)), (1, 96, 16));
    // A 35-byte header (16-byte CDB) is now the request layout.
    let mut d = Driver::new(&mem, 0x1000);
    let mut q = d.queue();
    let h = request_header(OUR_LUN, &[0x25], 16);
    mem.write_slice(&h, GuestAddress(REQ)).unwrap();
    d.add(&[(REQ, 35, false), (RESP, 108, true), (DATA, 8, true)]);
    host.process_request_queue(&mem, &mut q);
    assert_eq!(d.used(), [(0, 116)]);
    let mut cap = [0u8; 8];
    mem.read_slice(&mut cap, GuestAddress(DATA)).unwrap();
    assert_eq!(cap, [0, 0, 0, 3, 0, 0, 8, 0]);
}

/// Records interrupts and wakes a waiting test.
#[derive(Default)]
struct Irq {
    fired: Mutex<Vec<VirtioInterruptType>>,
    cv: Condvar,
}

impl VirtioInterrupt for Irq {
    fn trigger(&self, t: VirtioInterruptType) -> io::Result<()> {
        self.fired.lock().unwrap().push(t);
        self.cv.notify_all();
        Ok(())
    }
}

#[test]
fn device_worker_serves_kicks_and_resets() {
    let mem = memory();
    let mut dev = VirtioScsi::new(cdrom(4));
    assert_eq!(dev.device_type(), 8);
    assert_eq!(dev.queue_max_sizes().len(), 3);
    let mut cfg = [0u8; 4];
    dev.read_config(24, &mut cfg);
    assert_eq!(u32::from_le_bytes(cfg), 32);
    dev.read_config(1000, &mut cfg);
    assert_eq!(cfg, [0; 4]);

    let irq = Arc::new(Irq::default());
    // Without VERSION_1 the device refuses to start.
    let err = dev.activate(GuestMemoryAtomic::new(mem.clone()), irq.clone(), Vec::new());
    assert!(err.is_err());
    dev.ack_features(dev.features());
    let err = dev.activate(GuestMemoryAtomic::new(mem.clone()), irq.clone(), Vec::new());
    assert!(
        matches!(err, Err(ActivateError::BadConfig(_))),
        "request queue is required"
    );

    let mut d = Driver::new(&mem, 0x1000);
    let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let queues = vec![ActiveQueue {
        index: REQUEST_QUEUE,
        queue: d.queue(),
        kick: kick.try_clone().unwrap(),
    }];
    dev.activate(GuestMemoryAtomic::new(mem.clone()), irq.clone(), queues)
        .unwrap();
    let h = request_header(OUR_LUN, &[0x28, 0, 0, 0, 0, 3, 0, 0, 1, 0], 32);
    mem.write_slice(&h, GuestAddress(REQ)).unwrap();
    d.add(&[(REQ, 51, false), (RESP, 108, true), (DATA, 2048, true)]);
    kick.write(1).unwrap();
    let fired = irq.fired.lock().unwrap();
    let (fired, _) = irq
        .cv
        .wait_timeout_while(fired, Duration::from_secs(10), |f| f.is_empty())
        .unwrap();
    assert_eq!(*fired, [VirtioInterruptType::Queue(REQUEST_QUEUE)]);
    drop(fired);
    assert_eq!(d.used(), [(0, 108 + 2048)]);
    let mut b = vec![0u8; 2048];
    mem.read_slice(&mut b, GuestAddress(DATA)).unwrap();
    assert!(b.iter().all(|&x| x == 3));
    assert!(dev.reset());
}

#[test]
fn hostile_chains_never_panic_or_overflow_buffers() {
    let mem = memory();
    let mut host = ScsiHost::new(cdrom(16));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..200 {
        if round % 20 == 0 {
            host.write_config(24, &((next() % 300) as u32).to_le_bytes());
            host.write_config(20, &((next() % 300) as u32).to_le_bytes());
        }
        let mut d = Driver::new(&mem, 0x1000);
        let mut q = d.queue();
        let mut writable_total = Vec::new();
        for c in 0..8u64 {
            let mut hdr: Vec<u8> = (0..64).map(|_| next() as u8).collect();
            if next() % 2 == 0 {
                hdr[0..8].copy_from_slice(&OUR_LUN);
                hdr[19] = [0x28, 0x12, 0x43, 0x46, 0xA8, 0x25][(next() % 6) as usize];
            }
            let req = REQ + c * 0x1000;
            mem.write_slice(&hdr, GuestAddress(req)).unwrap();
            let mut bufs = vec![(req, (next() % 80) as u32, false)];
            let mut total = 0u64;
            for k in 0..(next() % 4) {
                let len = match next() % 4 {
                    0 => 0,
                    1 => (next() % 200) as u32,
                    2 => (next() % 70_000) as u32,
                    _ => u32::MAX,
                };
                let addr = if next() % 8 == 0 {
                    0xFFFF_FFFF_0000
                } else {
                    RESP + c * 0x2_0000 + k * 0x1_0000
                };
                bufs.push((addr, len, true));
                total += u64::from(len);
            }
            writable_total.push(total);
            d.add(&bufs);
        }
        host.process_request_queue(&mem, &mut q);
        let used = d.used();
        assert_eq!(used.len(), 8);
        for ((_, len), total) in used.iter().zip(&writable_total) {
            assert!(u64::from(*len) <= *total, "used {len} > writable {total}");
        }
    }
}

#[test]
fn raised_events_reach_the_driver_and_reset_restores_defaults() {
    let mem = memory();
    let mut dev = VirtioScsi::new(cdrom(4));
    dev.ack_features(dev.features());
    dev.write_config(24, &16u32.to_le_bytes());
    let irq = Arc::new(Irq::default());
    let mut d = Driver::new(&mem, 0x1000);
    d.add(&[(DATA, 16, true)]);
    let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let req_kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let rq = Driver::new(&mem, 0x8000);
    let queues = vec![
        ActiveQueue {
            index: EVENT_QUEUE,
            queue: d.queue(),
            kick: kick.try_clone().unwrap(),
        },
        ActiveQueue {
            index: REQUEST_QUEUE,
            queue: rq.queue(),
            kick: req_kick,
        },
    ];
    dev.activate(GuestMemoryAtomic::new(mem.clone()), irq.clone(), queues)
        .unwrap();
    // The buffer is posted before any event: the device keeps it.
    kick.write(1).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(d.used().is_empty());
    dev.raise_event(T_TRANSPORT_RESET, 0);
    let fired = irq.fired.lock().unwrap();
    let (fired, _) = irq
        .cv
        .wait_timeout_while(fired, Duration::from_secs(10), |f| f.is_empty())
        .unwrap();
    assert_eq!(*fired, [VirtioInterruptType::Queue(EVENT_QUEUE)]);
    drop(fired);
    assert_eq!(d.used(), [(0, 16)]);
    let ev: u32 = mem.read_obj(GuestAddress(DATA)).unwrap();
    assert_eq!(ev, T_TRANSPORT_RESET);
    assert!(dev.reset());
    let mut cfg = [0u8; 4];
    dev.read_config(24, &mut cfg);
    assert_eq!(u32::from_le_bytes(cfg), DEFAULT_CDB_SIZE);
}
