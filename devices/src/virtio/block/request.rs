//! The virtio-blk queue handler: descriptor chains in, backend I/O, used-ring entries out.
//!
//! Shared by the in-VMM device (worker threads) and `rvmm-vhost blk`. Every chain is validated
//! before any I/O: descriptors must lie in guest memory, device-readable ones must precede
//! device-writable ones, the header must be complete, the status byte must exist, lengths
//! must be sector multiples inside the disk. A bad chain gets `VIRTIO_BLK_S_IOERR` (or is
//! returned with length 0 when it has no room for a status byte), never a panic.
//!
//! Reads and writes whose guest buffers are sector-sized and page-aligned (what drivers send)
//! go to the backend as one vectored call on guest memory itself; others go through a bounce
//! buffer that O_DIRECT accepts.

use std::io::{IoSlice, IoSliceMut};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::bitmap::{BitmapSlice, BS};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions, VolatileSlice};

use qcow::{BlockBackend, BlockError};

/// Request types (virtio 1.2 §5.2.6).
pub const T_IN: u32 = 0;
/// Write.
pub const T_OUT: u32 = 1;
/// Flush.
pub const T_FLUSH: u32 = 4;
/// Device ID string.
pub const T_GET_ID: u32 = 8;
/// Discard.
pub const T_DISCARD: u32 = 11;
/// Write zeroes.
pub const T_WRITE_ZEROES: u32 = 13;
/// Status: success.
pub const S_OK: u8 = 0;
/// Status: I/O error.
pub const S_IOERR: u8 = 1;
/// Status: unsupported request.
pub const S_UNSUPP: u8 = 2;
/// Sector size of the virtio-blk protocol.
pub const SECTOR: u64 = 512;
/// Largest segment count of one discard/write-zeroes request.
pub const MAX_DISCARD_SEG: u32 = 32;
/// Largest sector count of one discard/write-zeroes segment.
pub const MAX_DISCARD_SECTORS: u32 = 1 << 22;
const WRITE_ZEROES_FLAG_UNMAP: u32 = 1;
const HEADER_LEN: usize = 16;
/// Bounce buffer size: data moves through it in pieces this large.
const CHUNK: usize = 1 << 20;
/// Alignment of the bounce buffer, enough for O_DIRECT on any host file system.
const ALIGN: usize = 4096;

/// What the handler needs to know about the disk and the negotiated features.
#[derive(Clone)]
pub struct BlockSettings {
    /// The backend.
    pub backend: Arc<dyn BlockBackend>,
    /// Writes, discards and write-zeroes fail.
    pub read_only: bool,
    /// Discards reach the backend (`discard=unmap`); otherwise they succeed doing nothing.
    pub discard: bool,
    /// GET_ID answer (NUL-padded).
    pub serial: [u8; 20],
}

#[derive(Clone, Copy, Debug)]
struct Seg {
    addr: GuestAddress,
    len: u32,
}

/// Serves one virtqueue; owns a bounce buffer so one handler per queue works without locking.
pub struct BlockQueueHandler {
    s: BlockSettings,
    buf: Vec<u8>,
    warnings: u64,
}

/// Failed requests logged in full before the handler only logs every 1000th (a guest must not
/// be able to flood the host log).
const WARN_FULL: u64 = 8;

/// Why a chain failed before producing a status.
#[derive(Debug)]
enum Bad {
    /// Fail with this status.
    Status(u8, String),
}

fn ioerr(m: impl Into<String>) -> Bad {
    Bad::Status(S_IOERR, m.into())
}

impl BlockQueueHandler {
    /// A handler for a disk with `settings`.
    pub fn new(settings: BlockSettings) -> Self {
        Self {
            s: settings,
            buf: Vec::new(),
            warnings: 0,
        }
    }

    fn warn(&mut self, msg: std::fmt::Arguments<'_>) {
        self.warnings += 1;
        let n = self.warnings;
        if n <= WARN_FULL {
            log::warn!("{msg}");
        } else if n.rem_euclid(1000) == 0 {
            log::warn!("{msg} ({n} failed requests so far; most not logged)");
        }
    }

    /// Serve every available chain of `queue`; returns whether the driver must be interrupted
    /// (honouring EVENT_IDX when the queue has it enabled).
    pub fn process_queue<M: GuestMemory>(&mut self, mem: &M, queue: &mut Queue) -> bool {
        let mut used_any = false;
        loop {
            if queue.event_idx_enabled() {
                if let Err(e) = queue.disable_notification(mem) {
                    log::warn!("virtio-blk: cannot disable notifications: {e}");
                }
            }
            while let Some(chain) = queue.pop_descriptor_chain(mem) {
                let head = chain.head_index();
                let len = self.serve_chain(mem, chain);
                if let Err(e) = queue.add_used(mem, head, len) {
                    log::error!("virtio-blk: cannot return descriptor {head}: {e}");
                }
                used_any = true;
            }
            if !queue.event_idx_enabled() {
                break;
            }
            // Re-enable notifications; if the driver slipped in more work meanwhile, go again.
            match queue.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    log::warn!("virtio-blk: cannot enable notifications: {e}");
                    break;
                }
            }
        }
        if !used_any {
            return false;
        }
        queue.needs_notification(mem).unwrap_or(true)
    }

    /// Handle one chain; returns the number of bytes written into it (used length).
    fn serve_chain<M: GuestMemory, C>(&mut self, mem: &M, chain: C) -> u32
    where
        C: Iterator<Item = virtio_queue::desc::split::Descriptor>,
    {
        let mut readable: Vec<Seg> = Vec::new();
        let mut writable: Vec<Seg> = Vec::new();
        let mut order_ok = true;
        let mut in_mem = true;
        for d in chain {
            let perm = if d.is_write_only() {
                Permissions::Write
            } else {
                Permissions::Read
            };
            if !mem.check_range(d.addr(), d.len() as usize, perm) {
                in_mem = false;
            }
            let seg = Seg {
                addr: d.addr(),
                len: d.len(),
            };
            if d.is_write_only() {
                writable.push(seg);
            } else {
                if !writable.is_empty() {
                    order_ok = false;
                }
                readable.push(seg);
            }
        }
        // The status byte is the last byte of the last device-writable descriptor.
        let Some(last) = writable.last_mut().filter(|l| l.len > 0) else {
            self.warn(format_args!(
                "virtio-blk: request without a status byte; returned unanswered"
            ));
            return 0;
        };
        let status_addr = last.addr.unchecked_add(u64::from(last.len) - 1);
        if !mem.check_range(status_addr, 1, Permissions::Write) {
            self.warn(format_args!(
                "virtio-blk: status byte outside guest memory; returned unanswered"
            ));
            return 0;
        }
        last.len -= 1;
        let (status, written) = if !in_mem {
            self.warn(format_args!("virtio-blk: descriptor outside guest memory"));
            (S_IOERR, 0)
        } else if !order_ok {
            self.warn(format_args!(
                "virtio-blk: device-readable descriptor after a device-writable one"
            ));
            (S_IOERR, 0)
        } else {
            match self.execute(mem, &readable, &writable) {
                Ok(n) => (S_OK, n),
                Err(Bad::Status(st, m)) => {
                    self.warn(format_args!("virtio-blk: request failed: {m}"));
                    (st, 0)
                }
            }
        };
        if let Err(e) = mem.write_obj(status, status_addr) {
            self.warn(format_args!("virtio-blk: cannot write status: {e}"));
        }
        written.saturating_add(1)
    }

    fn execute<M: GuestMemory>(
        &mut self,
        mem: &M,
        readable: &[Seg],
        writable: &[Seg],
    ) -> Result<u32, Bad> {
        let mut hdr = [0u8; HEADER_LEN];
        let rest = gather(mem, readable, &mut hdr)
            .ok_or_else(|| ioerr("request header shorter than 16 bytes"))?;
        let rtype = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let sector = u64::from_le_bytes(hdr[8..16].try_into().unwrap_or([0; 8]));
        let size = self.s.backend.size();
        let data_in: u64 = writable.iter().map(|s| u64::from(s.len)).sum();
        let data_out: u64 = rest.iter().map(|s| u64::from(s.len)).sum();
        let range = |len: u64| -> Result<u64, Bad> {
            if len & (SECTOR - 1) != 0 {
                return Err(ioerr(format!("length {len} is not a multiple of 512")));
            }
            let off = sector
                .checked_mul(SECTOR)
                .filter(|o| o.checked_add(len).is_some_and(|e| e <= size))
                .ok_or_else(|| {
                    ioerr(format!("sector {sector} + {len} bytes beyond the disk end"))
                })?;
            Ok(off)
        };
        match rtype {
            T_IN => {
                let mut off = range(data_in)?;
                if let Some(slices) = direct_slices(mem, writable, Permissions::Write) {
                    read_into_guest(&*self.s.backend, off, &slices).map_err(be)?;
                    return Ok(data_in as u32);
                }
                for s in writable {
                    let mut done = 0u64;
                    while done < u64::from(s.len) {
                        let n = (u64::from(s.len) - done).min(CHUNK as u64) as usize;
                        let buf = aligned(&mut self.buf, n);
                        self.s.backend.read_at(off, buf).map_err(be)?;
                        mem.write_slice(buf, s.addr.unchecked_add(done))
                            .map_err(|e| ioerr(format!("guest buffer: {e}")))?;
                        off += n as u64;
                        done += n as u64;
                    }
                }
                Ok(data_in as u32)
            }
            T_OUT => {
                if self.s.read_only {
                    return Err(ioerr("write to a read-only disk"));
                }
                let mut off = range(data_out)?;
                if let Some(slices) = direct_slices(mem, &rest, Permissions::Read) {
                    write_from_guest(&*self.s.backend, off, &slices).map_err(be)?;
                    return Ok(0);
                }
                for s in &rest {
                    let mut done = 0u64;
                    while done < u64::from(s.len) {
                        let n = (u64::from(s.len) - done).min(CHUNK as u64) as usize;
                        let buf = aligned(&mut self.buf, n);
                        mem.read_slice(buf, s.addr.unchecked_add(done))
                            .map_err(|e| ioerr(format!("guest buffer: {e}")))?;
                        self.s.backend.write_at(off, buf).map_err(be)?;
                        off += n as u64;
                        done += n as u64;
                    }
                }
                Ok(0)
            }
            T_FLUSH => {
                self.s.backend.flush().map_err(be)?;
                Ok(0)
            }
            T_GET_ID => {
                let mut left = &self.s.serial[..];
                let mut n = 0;
                for s in writable {
                    let k = (s.len as usize).min(left.len());
                    mem.write_slice(&left[..k], s.addr)
                        .map_err(|e| ioerr(format!("guest buffer: {e}")))?;
                    left = &left[k..];
                    n += k;
                }
                Ok(n as u32)
            }
            T_DISCARD | T_WRITE_ZEROES => {
                if self.s.read_only {
                    return Err(ioerr("discard/write-zeroes on a read-only disk"));
                }
                self.discard_like(mem, &rest, rtype == T_DISCARD, size)?;
                Ok(0)
            }
            t => Err(Bad::Status(
                S_UNSUPP,
                format!("unsupported request type {t}"),
            )),
        }
    }

    fn discard_like<M: GuestMemory>(
        &self,
        mem: &M,
        segs: &[Seg],
        discard: bool,
        size: u64,
    ) -> Result<(), Bad> {
        let total: u64 = segs.iter().map(|s| u64::from(s.len)).sum();
        if total == 0 || total & 15 != 0 || total / 16 > u64::from(MAX_DISCARD_SEG) {
            return Err(ioerr(format!("discard payload of {total} bytes")));
        }
        let mut raw = vec![0u8; total as usize];
        gather(mem, segs, &mut raw).ok_or_else(|| ioerr("discard payload unreadable"))?;
        let mut ranges = Vec::new();
        for e in raw.chunks_exact(16) {
            let sector = u64::from_le_bytes(e[0..8].try_into().unwrap_or([0; 8]));
            let num = u32::from_le_bytes([e[8], e[9], e[10], e[11]]);
            let flags = u32::from_le_bytes([e[12], e[13], e[14], e[15]]);
            let allowed = if discard { 0 } else { WRITE_ZEROES_FLAG_UNMAP };
            if flags & !allowed != 0 {
                return Err(Bad::Status(S_UNSUPP, format!("segment flags {flags:#x}")));
            }
            if num > MAX_DISCARD_SECTORS {
                return Err(ioerr(format!("segment of {num} sectors")));
            }
            let off = sector
                .checked_mul(SECTOR)
                .filter(|o| {
                    o.checked_add(u64::from(num) * SECTOR)
                        .is_some_and(|e| e <= size)
                })
                .ok_or_else(|| ioerr(format!("segment at sector {sector} beyond the disk")))?;
            ranges.push((off, u64::from(num) * SECTOR));
        }
        for (off, len) in ranges {
            if discard {
                if self.s.discard {
                    self.s.backend.discard(off, len).map_err(be)?;
                }
            } else {
                self.s.backend.write_zeroes(off, len).map_err(be)?;
            }
        }
        Ok(())
    }
}

/// Guest memory slices a request's data segments map to, when every one can be handed to the
/// backend as is: sector-multiple lengths at [`ALIGN`]-aligned host addresses, so O_DIRECT
/// accepts them. `None` sends the request through the bounce buffer instead.
fn direct_slices<'m, M: GuestMemory>(
    mem: &'m M,
    segs: &[Seg],
    perm: Permissions,
) -> Option<Vec<GuestSlice<'m, M>>> {
    let mut out = Vec::with_capacity(segs.len());
    for s in segs.iter().filter(|s| s.len > 0) {
        for sl in mem.get_slices(s.addr, s.len as usize, perm).ok()? {
            let sl = sl.ok()?;
            let aligned = (sl.ptr_guard().as_ptr() as usize).is_multiple_of(ALIGN);
            if !aligned || !(sl.len() as u64).is_multiple_of(SECTOR) {
                return None;
            }
            out.push(sl);
        }
    }
    Some(out)
}

/// A mapped piece of guest memory.
type GuestSlice<'m, M> = VolatileSlice<'m, BS<'m, <M as GuestMemory>::Bitmap>>;

/// Read the disk at `off` straight into guest memory (one scatter read, no bounce copy).
fn read_into_guest<B: BitmapSlice>(
    backend: &dyn BlockBackend,
    off: u64,
    slices: &[VolatileSlice<'_, B>],
) -> Result<(), BlockError> {
    let guards: Vec<_> = slices.iter().map(|s| s.ptr_guard_mut()).collect();
    let mut iov: Vec<IoSliceMut<'_>> = guards
        .iter()
        // SAFETY: each guard keeps a mapped, writable range of guest memory of `len()` bytes
        // alive for this call; the guest may touch it concurrently, as it may during DMA, which
        // only affects the bytes it reads back (the host never interprets them).
        .map(|g| IoSliceMut::new(unsafe { std::slice::from_raw_parts_mut(g.as_ptr(), g.len()) }))
        .collect();
    let r = backend.read_vectored_at(off, &mut iov);
    // Writes through raw pointers bypass dirty tracking: record them.
    for s in slices {
        s.bitmap().mark_dirty(0, s.len());
    }
    r
}

/// Write guest memory to the disk at `off` (one gather write, no bounce copy).
fn write_from_guest<B: BitmapSlice>(
    backend: &dyn BlockBackend,
    off: u64,
    slices: &[VolatileSlice<'_, B>],
) -> Result<(), BlockError> {
    let guards: Vec<_> = slices.iter().map(|s| s.ptr_guard()).collect();
    let iov: Vec<IoSlice<'_>> = guards
        .iter()
        // SAFETY: each guard keeps a mapped range of guest memory of `len()` bytes alive for
        // this call; a guest changing it meanwhile only changes what it asked to write.
        .map(|g| IoSlice::new(unsafe { std::slice::from_raw_parts(g.as_ptr(), g.len()) }))
        .collect();
    backend.write_vectored_at(off, &iov)
}

/// `n` bytes of `buf` starting at an [`ALIGN`]-aligned address (O_DIRECT needs it).
fn aligned(buf: &mut Vec<u8>, n: usize) -> &mut [u8] {
    if buf.len() < n + ALIGN {
        buf.resize(n + ALIGN, 0);
    }
    let off = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
    &mut buf[off..off + n]
}

fn be(e: BlockError) -> Bad {
    ioerr(format!("backend: {e}"))
}

/// Copy the first `out.len()` bytes described by `segs` into `out`; returns the segments
/// describing what follows, or None when there are fewer bytes than that.
fn gather<M: GuestMemory>(mem: &M, segs: &[Seg], out: &mut [u8]) -> Option<Vec<Seg>> {
    let mut need = out.len();
    let mut pos = 0;
    let mut rest = Vec::new();
    for s in segs {
        let take = need.min(s.len as usize);
        if take > 0 {
            mem.read_slice(&mut out[pos..pos + take], s.addr).ok()?;
            pos += take;
            need -= take;
        }
        if (take as u32) < s.len {
            rest.push(Seg {
                addr: s.addr.unchecked_add(take as u64),
                len: s.len - take as u32,
            });
        }
    }
    (need == 0).then_some(rest)
}
