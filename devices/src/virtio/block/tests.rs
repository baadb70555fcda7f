//! virtio-blk tests on virtio-queue's mock split queue (used ring placed explicitly, away from
//! the avail ring the mock lays out) and temporary raw images.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use virtio_bindings::bindings::virtio_ring::{
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use virtio_queue::desc::{split::Descriptor as SplitDesc, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::request::*;
use super::*;
use crate::GuestMemoryMmap;

const QSIZE: u16 = 256;
const USED: u64 = 0x8_0000;
const AVAIL: u64 = 16 * QSIZE as u64;
const DATA: u64 = 0x10_0000;
const MEM: usize = 0x100_0000;

struct Rig {
    mem: GuestMemoryMmap,
    next_desc: u16,
}

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap()
}

impl Rig {
    fn new() -> Self {
        Rig {
            mem: mem(),
            next_desc: 0,
        }
    }
    /// The mock lays out and initialises descriptor table and avail ring; the used ring goes
    /// at USED explicitly (the mock's own used ring overlaps the avail ring for long runs).
    /// Call once, before posting: creating a mock resets the ring indices.
    fn queue(&self) -> Queue {
        let mock = MockSplitQueue::create(&self.mem, GuestAddress(0), QSIZE);
        assert_eq!(mock.avail_addr().0, AVAIL);
        let mut q: Queue = mock.create_queue().unwrap();
        q.set_used_ring_address(Some(USED as u32), Some(0));
        assert!(q.is_valid(&self.mem));
        q
    }
    fn make_avail(&self, head: u16) {
        let idx: u16 = self.mem.read_obj(GuestAddress(AVAIL + 2)).unwrap();
        let slot = AVAIL + 4 + 2 * u64::from(idx % QSIZE);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.mem
            .write_obj(idx.wrapping_add(1), GuestAddress(AVAIL + 2))
            .unwrap();
    }
    /// Post a chain of (addr, len, device-writable) descriptors.
    fn post(&mut self, descs: &[(u64, u32, bool)]) {
        let base = self.next_desc;
        for (i, &(a, l, w)) in descs.iter().enumerate() {
            let mut f = if w { VRING_DESC_F_WRITE as u16 } else { 0 };
            let mut next = 0;
            if i + 1 < descs.len() {
                f |= VRING_DESC_F_NEXT as u16;
                next = (base + i as u16 + 1) % QSIZE;
            }
            let at = 16 * u64::from((base + i as u16) % QSIZE);
            let d = RawDescriptor::from(SplitDesc::new(a, l, f, next));
            self.mem.write_obj(d, GuestAddress(at)).unwrap();
        }
        self.make_avail(base);
        self.next_desc = (base + descs.len() as u16) % QSIZE;
    }
    fn header(&self, at: u64, t: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&t.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(at)).unwrap();
    }
    fn used(&self, i: u16) -> (u32, u32) {
        let e = USED + 4 + 8 * u64::from(i % QSIZE);
        (
            self.mem.read_obj(GuestAddress(e)).unwrap(),
            self.mem.read_obj(GuestAddress(e + 4)).unwrap(),
        )
    }
    fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }
    fn byte(&self, at: u64) -> u8 {
        self.mem.read_obj(GuestAddress(at)).unwrap()
    }
}

fn temp_image(size: usize) -> (tempfile::NamedTempFile, Arc<dyn qcow::BlockBackend>) {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), vec![0u8; size]).unwrap();
    let raw = qcow::RawFile::open(f.path(), false).unwrap();
    (f, Arc::new(raw))
}

fn settings(backend: Arc<dyn qcow::BlockBackend>, ro: bool) -> BlockSettings {
    let mut serial = [0u8; 20];
    serial[..8].copy_from_slice(b"RVMM-SN1");
    BlockSettings {
        backend,
        read_only: ro,
        discard: true,
        serial,
    }
}

#[test]
fn write_then_read_across_segments() {
    let (_f, be) = temp_image(1 << 20);
    let mut h = BlockQueueHandler::new(settings(be.clone(), false));
    let mut r = Rig::new();
    let mut q = r.queue();
    let pat: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    r.mem.write_slice(&pat, GuestAddress(DATA)).unwrap();
    r.header(DATA - 0x100, T_OUT, 8);
    // Header, data split 1024 + 3072, status.
    r.post(&[
        (DATA - 0x100, 16, false),
        (DATA, 1024, false),
        (DATA + 1024, 3072, false),
        (DATA - 0x10, 1, true),
    ]);
    assert!(h.process_queue(&r.mem, &mut q));
    assert_eq!(r.byte(DATA - 0x10), S_OK);
    assert_eq!(r.used(0), (0, 1));
    let mut disk = vec![0u8; 4096];
    be.read_at(8 * 512, &mut disk).unwrap();
    assert_eq!(disk, pat);

    // Read it back into two buffers with header and status sharing descriptors' neighbours.
    r.header(DATA - 0x200, T_IN, 8);
    r.post(&[
        (DATA - 0x200, 16, false),
        (DATA + 0x10000, 512, true),
        (DATA + 0x20000, 3584, true),
        (DATA - 0x20, 1, true),
    ]);
    assert!(h.process_queue(&r.mem, &mut q));
    assert_eq!(r.byte(DATA - 0x20), S_OK);
    assert_eq!(r.used(1), (4, 4097));
    let mut a = vec![0u8; 512];
    let mut b = vec![0u8; 3584];
    r.mem
        .read_slice(&mut a, GuestAddress(DATA + 0x10000))
        .unwrap();
    r.mem
        .read_slice(&mut b, GuestAddress(DATA + 0x20000))
        .unwrap();
    assert_eq!(a, pat[..512]);
    assert_eq!(b, pat[512..]);

    // Header and data merged in one descriptor, status in the last data descriptor.
    r.header(DATA + 0x30000, T_OUT, 0);
    r.mem
        .write_slice(&[0x5a; 512], GuestAddress(DATA + 0x30010))
        .unwrap();
    r.post(&[(DATA + 0x30000, 16 + 512, false), (DATA + 0x31000, 1, true)]);
    h.process_queue(&r.mem, &mut q);
    assert_eq!(r.byte(DATA + 0x31000), S_OK);
    be.read_at(0, &mut a).unwrap();
    assert_eq!(a, vec![0x5a; 512]);
}

#[test]
fn flush_get_id_and_errors() {
    let (_f, be) = temp_image(64 * 512);
    let mut h = BlockQueueHandler::new(settings(be.clone(), false));
    let mut r = Rig::new();
    let mut q = r.queue();
    let st = |i: u64| DATA + 0x8000 + i;
    let mut n = 0u64;
    let mut go = |r: &mut Rig, q: &mut Queue, t: u32, sector: u64, data: &[(u64, u32, bool)]| {
        let hdr = DATA + 0x100 * n;
        r.header(hdr, t, sector);
        let mut d = vec![(hdr, 16, false)];
        d.extend_from_slice(data);
        d.push((st(n), 1, true));
        r.post(&d);
        h.process_queue(&r.mem, q);
        n += 1;
        r.byte(st(n - 1))
    };
    assert_eq!(go(&mut r, &mut q, T_FLUSH, 0, &[]), S_OK);
    assert_eq!(
        go(&mut r, &mut q, T_GET_ID, 0, &[(DATA + 0x4000, 20, true)]),
        S_OK
    );
    let mut id = [0u8; 20];
    r.mem
        .read_slice(&mut id, GuestAddress(DATA + 0x4000))
        .unwrap();
    assert_eq!(&id[..9], b"RVMM-SN1\0");
    assert_eq!(r.used(1).1, 21);
    assert_eq!(go(&mut r, &mut q, 99, 0, &[]), S_UNSUPP);
    // Past the end, partly past the end, huge sector (overflow), odd length.
    assert_eq!(go(&mut r, &mut q, T_IN, 64, &[(DATA, 512, true)]), S_IOERR);
    assert_eq!(go(&mut r, &mut q, T_IN, 63, &[(DATA, 1024, true)]), S_IOERR);
    assert_eq!(
        go(&mut r, &mut q, T_OUT, u64::MAX / 4, &[(DATA, 512, false)]),
        S_IOERR
    );
    assert_eq!(go(&mut r, &mut q, T_IN, 0, &[(DATA, 100, true)]), S_IOERR);
    // Data buffer outside guest memory; a readable descriptor after a writable one.
    assert_eq!(
        go(&mut r, &mut q, T_IN, 0, &[(MEM as u64 - 256, 512, true)]),
        S_IOERR
    );
    assert_eq!(
        go(
            &mut r,
            &mut q,
            T_OUT,
            0,
            &[(DATA, 512, true), (DATA, 512, false)]
        ),
        S_IOERR
    );
    // Header too short.
    r.post(&[(DATA, 8, false), (st(50), 1, true)]);
    h.process_queue(&r.mem, &mut q);
    assert_eq!(r.byte(st(50)), S_IOERR);
    // No writable descriptor at all: returned with length 0, nothing else touched.
    let before = r.used_idx();
    r.header(DATA, T_IN, 0);
    r.post(&[(DATA, 16, false)]);
    assert!(h.process_queue(&r.mem, &mut q));
    assert_eq!(r.used_idx(), before + 1);
    assert_eq!(r.used(before).1, 0);
    // A status byte beyond guest memory.
    r.post(&[(DATA, 16, false), (MEM as u64, 1, true)]);
    h.process_queue(&r.mem, &mut q);
    assert_eq!(r.used(before + 1).1, 0);

    // Read-only disk refuses writes, discards and write-zeroes but reads fine.
    let mut ro = BlockQueueHandler::new(settings(be, true));
    for (i, t) in [T_OUT, T_DISCARD, T_WRITE_ZEROES].into_iter().enumerate() {
        r.header(DATA, t, 0);
        r.post(&[
            (DATA, 16, false),
            (DATA + 0x1000, 512, false),
            (st(60 + i as u64), 1, true),
        ]);
        ro.process_queue(&r.mem, &mut q);
        assert_eq!(r.byte(st(60 + i as u64)), S_IOERR, "type {t}");
    }
    r.header(DATA, T_IN, 0);
    r.post(&[
        (DATA, 16, false),
        (DATA + 0x1000, 512, true),
        (st(70), 1, true),
    ]);
    ro.process_queue(&r.mem, &mut q);
    assert_eq!(r.byte(st(70)), S_OK);
}

fn seg(sector: u64, num: u32, flags: u32) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[0..8].copy_from_slice(&sector.to_le_bytes());
    s[8..12].copy_from_slice(&num.to_le_bytes());
    s[12..16].copy_from_slice(&flags.to_le_bytes());
    s
}

#[test]
fn discard_and_write_zeroes() {
    let (_f, be) = temp_image(256 * 512);
    be.write_at(0, &vec![0xee; 256 * 512]).unwrap();
    let mut h = BlockQueueHandler::new(settings(be.clone(), false));
    let mut r = Rig::new();
    let mut q = r.queue();
    // Write-zeroes of sectors 8..16 and 32..40 in one request, with the unmap flag.
    let mut payload = seg(8, 8, 1).to_vec();
    payload.extend_from_slice(&seg(32, 8, 0));
    r.mem
        .write_slice(&payload, GuestAddress(DATA + 0x100))
        .unwrap();
    r.header(DATA, T_WRITE_ZEROES, 0);
    r.post(&[
        (DATA, 16, false),
        (DATA + 0x100, 32, false),
        (DATA + 0x200, 1, true),
    ]);
    h.process_queue(&r.mem, &mut q);
    assert_eq!(r.byte(DATA + 0x200), S_OK);
    let mut buf = vec![0u8; 256 * 512];
    be.read_at(0, &mut buf).unwrap();
    for (i, s) in buf.chunks(512).enumerate() {
        let zero = (8..16).contains(&i) || (32..40).contains(&i);
        assert!(
            s.iter().all(|&b| b == if zero { 0 } else { 0xee }),
            "sector {i}"
        );
    }
    // Discard with a flag set is unsupported; beyond the disk is an error; valid one is OK.
    for (i, (s, want)) in [
        (seg(0, 8, 1), S_UNSUPP),
        (seg(250, 8, 0), S_IOERR),
        (seg(64, 8, 0), S_OK),
    ]
    .into_iter()
    .enumerate()
    {
        r.mem.write_slice(&s, GuestAddress(DATA + 0x100)).unwrap();
        r.header(DATA, T_DISCARD, 0);
        let stat = DATA + 0x300 + i as u64;
        r.post(&[
            (DATA, 16, false),
            (DATA + 0x100, 16, false),
            (stat, 1, true),
        ]);
        h.process_queue(&r.mem, &mut q);
        assert_eq!(r.byte(stat), want, "discard case {i}");
    }
    // Payload that is not whole segments.
    r.header(DATA, T_DISCARD, 0);
    r.post(&[
        (DATA, 16, false),
        (DATA + 0x100, 10, false),
        (DATA + 0x400, 1, true),
    ]);
    h.process_queue(&r.mem, &mut q);
    assert_eq!(r.byte(DATA + 0x400), S_IOERR);
}

#[test]
fn indirect_descriptors() {
    let (_f, be) = temp_image(1 << 20);
    be.write_at(512, &[0x77; 512]).unwrap();
    let mut h = BlockQueueHandler::new(settings(be, false));
    let r = Rig::new();
    let mut q = r.queue();
    let table = DATA + 0x4_0000;
    r.header(DATA, T_IN, 1);
    let descs = [
        SplitDesc::new(DATA, 16, VRING_DESC_F_NEXT as u16, 1),
        SplitDesc::new(
            DATA + 0x1000,
            512,
            (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16,
            2,
        ),
        SplitDesc::new(DATA + 0x2000, 1, VRING_DESC_F_WRITE as u16, 0),
    ];
    for (i, d) in descs.iter().enumerate() {
        r.mem
            .write_obj(RawDescriptor::from(*d), GuestAddress(table + 16 * i as u64))
            .unwrap();
    }
    let head = RawDescriptor::from(SplitDesc::new(table, 48, VRING_DESC_F_INDIRECT as u16, 0));
    r.mem.write_obj(head, GuestAddress(0)).unwrap();
    r.make_avail(0);
    assert!(h.process_queue(&r.mem, &mut q));
    assert_eq!(r.byte(DATA + 0x2000), S_OK);
    let mut b = [0u8; 512];
    r.mem
        .read_slice(&mut b, GuestAddress(DATA + 0x1000))
        .unwrap();
    assert_eq!(b, [0x77; 512]);
    assert_eq!(r.used(0), (0, 513));
}

#[test]
fn event_idx_suppresses_interrupts() {
    let (_f, be) = temp_image(1 << 16);
    let mut h = BlockQueueHandler::new(settings(be, false));
    let mut r = Rig::new();
    let mut q = r.queue();
    q.set_event_idx(true);
    // used_event lives after the avail ring entries.
    let used_event = AVAIL + 4 + 2 * u64::from(QSIZE);
    r.mem.write_obj(5u16, GuestAddress(used_event)).unwrap();
    r.post(&[(DATA, 16, false), (DATA + 0x10, 1, true)]);
    assert!(
        !h.process_queue(&r.mem, &mut q),
        "driver asked for an interrupt at 6"
    );
    r.mem.write_obj(1u16, GuestAddress(used_event)).unwrap();
    r.post(&[(DATA, 16, false), (DATA + 0x10, 1, true)]);
    assert!(h.process_queue(&r.mem, &mut q));
    // Device publishes avail_event = next avail index so the driver knows when to kick.
    let avail_event: u16 = r
        .mem
        .read_obj(GuestAddress(USED + 4 + 8 * u64::from(QSIZE)))
        .unwrap();
    assert_eq!(avail_event, 2);
    assert!(
        !h.process_queue(&r.mem, &mut q),
        "nothing new, no interrupt"
    );
}

#[test]
fn long_run_wraps_the_rings() {
    let (_f, be) = temp_image(1 << 20);
    let mut h = BlockQueueHandler::new(settings(be, false));
    let mut r = Rig::new();
    let mut q = r.queue();
    let mut done = 0u16;
    for batch in 0..10u64 {
        for i in 0..100u64 {
            let k = batch * 100 + i;
            let sector = k % 2048;
            let hdr = DATA + 0x100 * i;
            r.header(hdr, T_OUT, sector);
            r.mem
                .write_slice(&[k as u8; 512], GuestAddress(DATA + 0x10_0000 + 512 * i))
                .unwrap();
            r.post(&[
                (hdr, 16, false),
                (DATA + 0x10_0000 + 512 * i, 512, false),
                (DATA + 0x8_0000 + i, 1, true),
            ]);
        }
        assert!(h.process_queue(&r.mem, &mut q));
        for i in 0..100u64 {
            assert_eq!(r.byte(DATA + 0x8_0000 + i), S_OK);
        }
        done = done.wrapping_add(100);
        assert_eq!(r.used_idx(), done);
    }
    // Each request used a distinct head and the used ring holds the last 256 of them in order.
    let (id, len) = r.used(999);
    assert_eq!(len, 1);
    assert_eq!(id, (999 * 3 % u32::from(QSIZE)) % u32::from(QSIZE));
}

struct ChanIrq(std::sync::Mutex<mpsc::Sender<VirtioInterruptType>>);
impl VirtioInterrupt for ChanIrq {
    fn trigger(&self, t: VirtioInterruptType) -> std::io::Result<()> {
        let _ = self.0.lock().unwrap().send(t);
        Ok(())
    }
}

#[test]
fn device_worker_serves_kicks_and_stops_on_reset() {
    let (_f, be) = temp_image(1 << 20);
    be.write_at(0, &[0x42; 512]).unwrap();
    let mut dev = Block::with_settings(settings(be, false), 2);
    assert_eq!(dev.queue_max_sizes(), vec![QUEUE_SIZE; 2]);
    let f = dev.features();
    for bit in [
        features::VERSION_1,
        features::MQ,
        features::FLUSH,
        features::DISCARD,
        features::WRITE_ZEROES,
        features::EVENT_IDX,
        features::INDIRECT_DESC,
        features::SEG_MAX,
        features::SIZE_MAX,
        features::BLK_SIZE,
        features::TOPOLOGY,
    ] {
        assert_ne!(f & bit, 0, "feature {bit:#x}");
    }
    assert_eq!(f & features::RO, 0);
    let mut cap = [0u8; 8];
    dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 2048);
    let mut nq = [0u8; 2];
    dev.read_config(34, &mut nq);
    assert_eq!(u16::from_le_bytes(nq), 2);

    let mut r = Rig::new();
    let q = r.queue();
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let (tx, rx) = mpsc::channel();
    let gm = GuestMemoryAtomic::new(r.mem.clone());
    dev.activate(
        gm,
        Arc::new(ChanIrq(std::sync::Mutex::new(tx))),
        vec![ActiveQueue {
            index: 1,
            queue: q,
            kick: kick.try_clone().unwrap(),
        }],
    )
    .unwrap();
    r.header(DATA, T_IN, 0);
    r.post(&[
        (DATA, 16, false),
        (DATA + 0x1000, 512, true),
        (DATA + 0x10, 1, true),
    ]);
    kick.write(1).unwrap();
    let t = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(t, VirtioInterruptType::Queue(1));
    assert_eq!(r.byte(DATA + 0x10), S_OK);
    assert_eq!(r.byte(DATA + 0x1000), 0x42);
    assert!(dev.reset());
    // After reset no worker answers kicks.
    r.post(&[
        (DATA, 16, false),
        (DATA + 0x1000, 512, true),
        (DATA + 0x11, 1, true),
    ]);
    kick.write(1).unwrap();
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
}

#[test]
fn disk_options_and_locking() {
    let c: DiskConfig = "/x/y.qcow2,format=qcow2,readonly=on,cache=none,serial=ABC,discard=unmap"
        .parse()
        .unwrap();
    assert_eq!(c.path, std::path::PathBuf::from("/x/y.qcow2"));
    assert_eq!(c.format, Some(DiskFormat::Qcow2));
    assert!(c.readonly);
    assert_eq!(c.cache, DiskCache::None);
    assert_eq!(c.serial.as_deref(), Some("ABC"));
    assert_eq!(c.discard, DiskDiscard::Unmap);
    let d: DiskConfig = "disk.img".parse().unwrap();
    assert_eq!(d.format, None);
    assert!(!d.readonly);
    assert_eq!(d.discard, DiskDiscard::Ignore);
    for bad in [
        "",
        ",format=raw",
        "a,format=vmdk",
        "a,readonly=maybe",
        "a,cache=directsync",
        "a,serial=012345678901234567890",
        "a,bogus=1",
        "a,readonly",
    ] {
        assert!(bad.parse::<DiskConfig>().is_err(), "{bad:?} should fail");
    }

    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), vec![0u8; 4096]).unwrap();
    let p = f.path().display().to_string();
    let rw: DiskConfig = format!("{p},format=raw").parse().unwrap();
    let ro: DiskConfig = format!("{p},format=raw,readonly=on").parse().unwrap();
    let first = rw.open().unwrap();
    assert!(matches!(rw.open(), Err(DiskError::Locked(_))));
    assert!(matches!(ro.open(), Err(DiskError::Locked(_))));
    drop(first);
    let r1 = ro.open().unwrap();
    let r2 = ro.open().unwrap();
    assert!(r1.backend.is_read_only() && r2.backend.is_read_only());
    assert!(matches!(rw.open(), Err(DiskError::Locked(_))));
    drop((r1, r2));
    let w = rw.open().unwrap();
    assert_eq!(w.backend.size(), 4096);
    // Undetected format opens as raw.
    drop(w);
    let auto: DiskConfig = p.parse().unwrap();
    assert_eq!(auto.open().unwrap().backend.size(), 4096);
}

#[test]
fn backing_files_are_share_locked_while_the_overlay_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let (base, mid, top) = (
        dir.path().join("base.raw"),
        dir.path().join("mid.qcow2"),
        dir.path().join("top.qcow2"),
    );
    std::fs::write(&base, vec![7u8; 1 << 20]).unwrap();
    let layer = |path: &std::path::Path, backing: &str, fmt: qcow::Format| {
        qcow::create(
            path,
            &qcow::CreateOptions {
                size: Some(1 << 20),
                backing_file: Some(backing.into()),
                backing_format: Some(fmt),
                ..Default::default()
            },
        )
        .unwrap();
    };
    layer(&mid, "base.raw", qcow::Format::Raw);
    layer(&top, "mid.qcow2", qcow::Format::Qcow2);
    let cfg = |p: &std::path::Path, opts: &str| -> DiskConfig {
        format!("{}{opts}", p.display()).parse().unwrap()
    };
    let vm = cfg(&top, ",format=qcow2").open().unwrap();
    let mut b = [0u8; 4];
    vm.backend.read_at(0, &mut b).unwrap();
    assert_eq!(b, [7; 4], "reads go through the chain");
    // Every file of the chain is in use: a writer on any of them is refused…
    for p in [&mid, &base] {
        assert!(
            matches!(cfg(p, "").open(), Err(DiskError::Locked(_))),
            "{} must be locked against writers",
            p.display()
        );
    }
    // …readers may share them (two overlays on one base image).
    let ro = cfg(&base, ",format=raw,readonly=on").open().unwrap();
    drop((vm, ro));
    assert!(
        cfg(&base, ",format=raw").open().is_ok(),
        "locks go with the VM"
    );
    // A base open writable elsewhere keeps a VM off the overlay.
    let writer = cfg(&base, ",format=raw").open().unwrap();
    assert!(matches!(
        cfg(&top, ",format=qcow2").open(),
        Err(DiskError::Locked(p)) if p == base
    ));
    drop(writer);
}

#[test]
fn qcow2_and_cache_none_disks_serve_requests() {
    let dir = tempfile::tempdir().unwrap();
    let q2 = dir.path().join("d.qcow2");
    qcow::create(
        &q2,
        &qcow::CreateOptions {
            size: Some(4 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    let raw = dir.path().join("d.raw");
    std::fs::write(&raw, vec![0u8; 4 << 20]).unwrap();
    for spec in [
        format!("{}", q2.display()),
        format!("{},format=raw,cache=none", raw.display()),
    ] {
        let disk = spec.parse::<DiskConfig>().unwrap().open().unwrap();
        assert_eq!(disk.backend.size(), 4 << 20, "{spec}");
        let mut h = BlockQueueHandler::new(settings_for(&disk));
        let mut r = Rig::new();
        let mut q = r.queue();
        let pat: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        r.mem.write_slice(&pat, GuestAddress(DATA)).unwrap();
        r.header(DATA - 0x100, T_OUT, 1000);
        r.post(&[
            (DATA - 0x100, 16, false),
            (DATA, 8192, false),
            (DATA - 1, 1, true),
        ]);
        h.process_queue(&r.mem, &mut q);
        assert_eq!(r.byte(DATA - 1), S_OK, "{spec}");
        r.header(DATA - 0x200, T_FLUSH, 0);
        r.post(&[(DATA - 0x200, 16, false), (DATA - 2, 1, true)]);
        h.process_queue(&r.mem, &mut q);
        assert_eq!(r.byte(DATA - 2), S_OK, "{spec}");
    }
    // The data reached the files (read without O_DIRECT, whose buffers must be aligned).
    let pat: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    let file = std::fs::read(&raw).unwrap();
    assert_eq!(&file[1000 * 512..1000 * 512 + 8192], &pat[..]);
    // The qcow2 file really is qcow2 (and stays consistent) after the writes.
    let img = qcow::open_image(&q2, &qcow::OpenOptions::default()).unwrap();
    let mut b = [0u8; 2];
    img.read_at(1000 * 512 + 252, &mut b).unwrap();
    assert_eq!(b, [1, 2]);
}

#[test]
fn probed_raw_disk_cannot_become_qcow2() {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), vec![0u8; 8192]).unwrap();
    let p = f.path().display().to_string();
    let probed = p.parse::<DiskConfig>().unwrap().open().unwrap();
    let mut sector = vec![0u8; 512];
    sector[..4].copy_from_slice(b"QFI\xfb");
    assert!(probed.backend.write_at(0, &sector).is_err());
    // Byte-wise assembly of the magic is caught too; other data at sector 0 is fine.
    probed.backend.write_at(0, b"QF").unwrap();
    assert!(probed.backend.write_at(2, b"I\xfb").is_err());
    probed.backend.write_at(0, b"hello").unwrap();
    // A gather write assembling the magic from two buffers is refused whole.
    let parts = [
        std::io::IoSlice::new(b"QF"),
        std::io::IoSlice::new(b"I\xfb"),
    ];
    assert!(probed.backend.write_vectored_at(0, &parts).is_err());
    let mut head = [0u8; 5];
    probed.backend.read_at(0, &mut head).unwrap();
    assert_eq!(&head, b"hello");
    // Gather writes and scatter reads elsewhere pass through.
    probed.backend.write_vectored_at(512, &parts).unwrap();
    let (mut a, mut b) = ([0u8; 1], [0u8; 3]);
    probed
        .backend
        .read_vectored_at(
            512,
            &mut [
                std::io::IoSliceMut::new(&mut a),
                std::io::IoSliceMut::new(&mut b),
            ],
        )
        .unwrap();
    assert_eq!((&a, &b), (b"Q", b"FI\xfb"));
    drop(probed);
    let explicit: DiskConfig = format!("{p},format=raw").parse().unwrap();
    explicit
        .open()
        .unwrap()
        .backend
        .write_at(0, &sector)
        .unwrap();
    assert_eq!(&std::fs::read(f.path()).unwrap()[..4], b"QFI\xfb");
}

mod through_pci {
    //! virtio-blk behind the virtio-pci transport and the PCI root, driven as a guest driver
    //! would: configuration through ECAM, registers through the BAR window, interrupts by MSI-X.

    use super::*;
    use crate::bus::BusDevice;
    use crate::pci::msix::tests::RecordingMsi;
    use crate::pci::{IntxPin, IoEventRegistrar, PciRoot, PciWindows};
    use crate::virtio::pci::{VirtioPciDevice, VirtioPciHost, MSIX_TABLE_OFF, NOTIFY_OFF};

    struct NoPin;
    impl IntxPin for NoPin {
        fn set_level(&self, _: bool) -> std::io::Result<()> {
            Ok(())
        }
    }
    /// A VMM without ioeventfds: notify writes exit and the transport forwards them.
    struct NoIoEvents;
    impl IoEventRegistrar for NoIoEvents {
        fn register(&self, _: u64, _: u32, _: &EventFd) -> std::io::Result<()> {
            Err(std::io::Error::other("no ioeventfd in this test"))
        }
        fn unregister(&self, _: u64, _: u32, _: &EventFd) -> std::io::Result<()> {
            Ok(())
        }
    }

    const BAR: u64 = 0xc000_0000;

    #[test]
    fn read_request_end_to_end_with_msix() {
        let (_f, be) = temp_image(1 << 20);
        be.write_at(3 * 512, &[0x33; 512]).unwrap();
        let mem = mem();
        let msi = Arc::new(RecordingMsi::default());
        let host = VirtioPciHost {
            mem: GuestMemoryAtomic::new(mem.clone()),
            msi: msi.clone(),
            intx: Arc::new(NoPin),
            ioevents: Arc::new(NoIoEvents),
        };
        let block = Block::with_settings(settings(be, false), 1);
        let dev = VirtioPciDevice::new(Box::new(block), host, 16).unwrap();
        let root = Arc::new(std::sync::Mutex::new(PciRoot::new(PciWindows::standard(
            1 << 30,
        ))));
        let slot = root
            .lock()
            .unwrap()
            .add_device(Arc::new(std::sync::Mutex::new(dev)))
            .unwrap();
        let mut ecam = PciRoot::ecam(&root);
        let mut win = PciRoot::mmio_window(&root, BAR);
        let cfg = u64::from(slot) << 15;
        let mut b4 = [0u8; 4];
        ecam.read(cfg, &mut b4);
        assert_eq!(u32::from_le_bytes(b4), 0x1042_1af4);
        ecam.write(cfg | 4, &6u16.to_le_bytes()); // memory + bus master
                                                  // Find the MSI-X capability and enable it.
        let mut p = {
            let mut b = [0u8; 1];
            ecam.read(cfg | 0x34, &mut b);
            u64::from(b[0])
        };
        let mut msix = 0;
        while p != 0 {
            let mut b = [0u8; 2];
            ecam.read(cfg | p, &mut b);
            if b[0] == 0x11 {
                msix = p;
            }
            p = u64::from(b[1]);
        }
        assert_ne!(msix, 0);
        ecam.write(cfg | (msix + 2), &(1u16 << 15).to_le_bytes());
        let w = |win: &mut crate::pci::root::PciMmioWindow, off: u64, v: &[u8]| win.write(off, v);
        for v in 0..2u64 {
            w(
                &mut win,
                MSIX_TABLE_OFF + 16 * v,
                &0xfee0_0000u32.to_le_bytes(),
            );
            w(
                &mut win,
                MSIX_TABLE_OFF + 16 * v + 8,
                &(0x40 + v as u32).to_le_bytes(),
            );
            w(&mut win, MSIX_TABLE_OFF + 16 * v + 12, &0u32.to_le_bytes());
        }
        // Driver initialisation (virtio 1.2 §3.1.1).
        w(&mut win, 0x14, &[1]);
        w(&mut win, 0x14, &[3]);
        w(&mut win, 0x08, &1u32.to_le_bytes());
        w(&mut win, 0x0c, &1u32.to_le_bytes()); // VERSION_1
        w(&mut win, 0x14, &[0xb]);
        let mut st = [0u8; 1];
        win.read(0x14, &mut st);
        assert_eq!(st[0], 0xb, "FEATURES_OK accepted");
        w(&mut win, 0x10, &0u16.to_le_bytes());
        w(&mut win, 0x16, &0u16.to_le_bytes());
        w(&mut win, 0x18, &16u16.to_le_bytes());
        w(&mut win, 0x1a, &1u16.to_le_bytes());
        for (off, addr) in [(0x20u64, 0x1000u64), (0x28, 0x2000), (0x30, 0x3000)] {
            w(&mut win, off, &(addr as u32).to_le_bytes());
            w(&mut win, off + 4, &0u32.to_le_bytes());
        }
        w(&mut win, 0x1c, &1u16.to_le_bytes());
        w(&mut win, 0x14, &[0xf]);
        win.read(0x14, &mut st);
        assert_eq!(st[0], 0xf, "DRIVER_OK without NEEDS_RESET");
        // One read request: header, 512-byte buffer, status.
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&T_IN.to_le_bytes());
        h[8..16].copy_from_slice(&3u64.to_le_bytes());
        mem.write_slice(&h, GuestAddress(0x10000)).unwrap();
        let descs = [
            SplitDesc::new(0x10000, 16, VRING_DESC_F_NEXT as u16, 1),
            SplitDesc::new(
                0x11000,
                512,
                (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16,
                2,
            ),
            SplitDesc::new(0x12000, 1, VRING_DESC_F_WRITE as u16, 0),
        ];
        for (i, d) in descs.iter().enumerate() {
            mem.write_obj(
                RawDescriptor::from(*d),
                GuestAddress(0x1000 + 16 * i as u64),
            )
            .unwrap();
        }
        mem.write_obj(0u16, GuestAddress(0x2004)).unwrap();
        mem.write_obj(1u16, GuestAddress(0x2002)).unwrap();
        mem.write_obj(0xffu8, GuestAddress(0x12000)).unwrap();
        w(&mut win, NOTIFY_OFF, &0u16.to_le_bytes());
        let t = std::time::Instant::now();
        while msi.sent.lock().unwrap().is_empty() {
            assert!(t.elapsed() < Duration::from_secs(10), "no MSI-X interrupt");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            *msi.sent.lock().unwrap(),
            vec![1],
            "queue 0 interrupts on vector 1"
        );
        let status: u8 = mem.read_obj(GuestAddress(0x12000)).unwrap();
        assert_eq!(status, S_OK);
        let mut data = [0u8; 512];
        mem.read_slice(&mut data, GuestAddress(0x11000)).unwrap();
        assert_eq!(data, [0x33; 512]);
        let used_idx: u16 = mem.read_obj(GuestAddress(0x3002)).unwrap();
        let used_len: u32 = mem.read_obj(GuestAddress(0x3008)).unwrap();
        assert_eq!((used_idx, used_len), (1, 513));
        // Reset stops the worker and returns the device to its initial state.
        w(&mut win, 0x14, &[0]);
        win.read(0x14, &mut st);
        assert_eq!(st[0], 0);
    }
}

/// A backend that counts which entry points the handler used.
struct Counting {
    inner: Arc<dyn qcow::BlockBackend>,
    plain: std::sync::atomic::AtomicUsize,
    vectored: std::sync::atomic::AtomicUsize,
}

impl qcow::BlockBackend for Counting {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn is_read_only(&self) -> bool {
        false
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> qcow::BlockResult<()> {
        self.plain.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> qcow::BlockResult<()> {
        self.plain.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.write_at(offset, buf)
    }
    fn read_vectored_at(
        &self,
        offset: u64,
        bufs: &mut [std::io::IoSliceMut<'_>],
    ) -> qcow::BlockResult<()> {
        self.vectored
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.read_vectored_at(offset, bufs)
    }
    fn write_vectored_at(
        &self,
        offset: u64,
        bufs: &[std::io::IoSlice<'_>],
    ) -> qcow::BlockResult<()> {
        self.vectored
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.write_vectored_at(offset, bufs)
    }
    fn flush(&self) -> qcow::BlockResult<()> {
        self.inner.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> qcow::BlockResult<()> {
        self.inner.discard(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> qcow::BlockResult<()> {
        self.inner.write_zeroes(offset, len)
    }
}

#[test]
fn aligned_guest_buffers_skip_the_bounce_buffer_even_with_o_direct() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let path = dir.path().join("d.raw");
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    let disk = format!("{},format=raw,cache=none", path.display())
        .parse::<DiskConfig>()
        .unwrap()
        .open()
        .unwrap();
    let c = Arc::new(Counting {
        inner: disk.backend.clone(),
        plain: Default::default(),
        vectored: Default::default(),
    });
    let mut h = BlockQueueHandler::new(settings(c.clone(), false));
    let mut r = Rig::new();
    let mut q = r.queue();
    let pat: Vec<u8> = (0..12288u32).map(|i| (i * 13 + i / 4096) as u8).collect();
    // Page-aligned, sector-sized pieces (4K + 8K, not adjacent): one vectored write.
    r.mem.write_slice(&pat[..4096], GuestAddress(DATA)).unwrap();
    r.mem
        .write_slice(&pat[4096..], GuestAddress(DATA + 0x5000))
        .unwrap();
    r.header(DATA - 0x100, T_OUT, 24);
    r.post(&[
        (DATA - 0x100, 16, false),
        (DATA, 4096, false),
        (DATA + 0x5000, 8192, false),
        (DATA - 0x10, 1, true),
    ]);
    h.process_queue(&r.mem, &mut q);
    assert_eq!(r.byte(DATA - 0x10), S_OK);
    assert_eq!((c.vectored.load(SeqCst), c.plain.load(SeqCst)), (1, 0));
    // Read back into two aligned pieces of other sizes: one vectored read.
    r.header(DATA - 0x200, T_IN, 24);
    r.post(&[
        (DATA - 0x200, 16, false),
        (DATA + 0x20000, 8192, true),
        (DATA + 0x30000, 4096, true),
        (DATA - 0x20, 1, true),
    ]);
    h.process_queue(&r.mem, &mut q);
    assert_eq!(r.byte(DATA - 0x20), S_OK);
    assert_eq!((c.vectored.load(SeqCst), c.plain.load(SeqCst)), (2, 0));
    let mut got = vec![0u8; 12288];
    r.mem
        .read_slice(&mut got[..8192], GuestAddress(DATA + 0x20000))
        .unwrap();
    r.mem
        .read_slice(&mut got[8192..], GuestAddress(DATA + 0x30000))
        .unwrap();
    assert_eq!(got, pat);
    // A buffer O_DIRECT would refuse (not page-aligned) goes through the aligned bounce buffer
    // and still works.
    r.header(DATA - 0x300, T_IN, 24);
    r.post(&[
        (DATA - 0x300, 16, false),
        (DATA + 0x40200, 4096, true),
        (DATA - 0x30, 1, true),
    ]);
    h.process_queue(&r.mem, &mut q);
    assert_eq!(r.byte(DATA - 0x30), S_OK);
    assert_eq!((c.vectored.load(SeqCst), c.plain.load(SeqCst)), (2, 1));
    let mut one = vec![0u8; 4096];
    r.mem
        .read_slice(&mut one, GuestAddress(DATA + 0x40200))
        .unwrap();
    assert_eq!(one, pat[..4096]);
    // The file holds the data where the guest put it.
    let file = std::fs::read(&path).unwrap();
    assert_eq!(&file[24 * 512..24 * 512 + 12288], &pat[..]);
}

#[test]
fn worker_poll_sees_a_request_posted_after_the_last_one_was_served() {
    let mut r = Rig::new();
    let mut q = r.queue();
    // Nothing available: the poll gives up after its time budget.
    let t = std::time::Instant::now();
    assert!(!poll_avail(&r.mem, &q, POLL));
    assert!(t.elapsed() >= POLL);
    // A posted chain is seen at once, and not any more once it has been popped.
    r.post(&[(DATA, 16, false), (DATA + 0x100, 1, true)]);
    assert!(poll_avail(&r.mem, &q, POLL));
    assert!(q.pop_descriptor_chain(&r.mem).is_some());
    assert!(!poll_avail(&r.mem, &q, POLL));
}
