//! The qcow2 format: a thread-safe read/write engine over one image file and its backing chain.
//!
//! Locking: `io_lock` is taken shared by reads and by writes into clusters the active L1 owns
//! exclusively (data I/O then runs outside the metadata lock, in parallel), and exclusively by
//! anything that allocates or frees clusters. `meta` guards tables and caches.
//!
//! Write ordering (crash safety): a new cluster's refcount reaches disk before the L2 entry that
//! points to it, L2 tables before the L1 entries pointing to them, and refcount decrements only
//! after the L1/L2 updates that dropped the reference ("pending frees", applied on flush). A
//! crash therefore leaves at most leaked clusters.

pub mod cache;
pub mod check;
pub mod compress;
pub mod create;
pub mod header;
pub mod refcount;
pub mod resize;
pub mod snapshot;
pub mod snapshot_ops;

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::backend::{check_range, BlockBackend, BlockError, BlockResult, Extent};
use crate::open::{detect_format, CacheMode, Format, OpenOptions, MAX_BACKING_DEPTH};
use crate::raw::RawFile;
use cache::TableCache;
use header::{CompressionType, Header};
use snapshot::Snapshot;

/// L1/L2 entry bit: the cluster is referenced only by the active table (refcount 1).
pub const COPIED: u64 = 1 << 63;
/// L2 entry bit: the cluster is compressed.
pub const COMPRESSED: u64 = 1 << 62;
/// L2 entry bit (v3): the cluster reads as zeroes.
pub const ZERO: u64 = 1;
/// Host offset bits of a standard L1/L2 entry.
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Extended L2 bitmap: every subcluster allocated (bits 0-31).
pub const SC_ALL_ALLOC: u64 = 0x0000_0000_ffff_ffff;
/// Extended L2 bitmap: every subcluster reads as zeroes (bits 32-63).
pub const SC_ALL_ZERO: u64 = 0xffff_ffff_0000_0000;
/// Subclusters per cluster in an image with extended L2 entries.
pub const SUBCLUSTERS: u64 = 32;
/// Default upper bound of the L2 cache (QEMU's default on Linux).
pub const DEFAULT_L2_CACHE_MAX: u64 = 32 << 20;

/// Where a guest cluster's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Not allocated here: read from the backing file, or zeroes.
    Unallocated,
    /// Reads as zeroes (v3 zero flag); `host` may hold a preallocated cluster (0: none).
    Zero {
        /// Preallocated host cluster, or 0.
        host: u64,
    },
    /// A normal data cluster.
    Data {
        /// Host offset of the cluster.
        host: u64,
        /// Whether the active L1 owns it exclusively.
        copied: bool,
    },
    /// A compressed cluster.
    Compressed {
        /// Host byte offset of the compressed data.
        host: u64,
        /// Upper bound of the compressed data length.
        len: u64,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BlockError {
    let context = context.into();
    move |source| BlockError::Io { context, source }
}

/// Read `buf` at `off`; bytes past the end of the file read as zeroes (sparse/preallocated tails).
fn pread_zero_tail(f: &File, buf: &mut [u8], off: u64) -> BlockResult<()> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => {
                buf[done..].fill(0);
                return Ok(());
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(format!("read image at {off:#x}"))(e)),
        }
    }
    Ok(())
}

fn pwrite(f: &File, buf: &[u8], off: u64) -> BlockResult<()> {
    f.write_all_at(buf, off)
        .map_err(io_err(format!("write image at {off:#x}")))
}

/// Fault injection for crash-consistency tests: fail every write/sync after the first `n`.
#[derive(Debug, Default)]
pub struct FaultInjector {
    remaining: std::sync::atomic::AtomicI64,
    armed: std::sync::atomic::AtomicBool,
}

impl FaultInjector {
    /// Let `n` more writes or syncs succeed, then fail all of them with EIO.
    pub fn fail_after(&self, n: i64) {
        self.remaining.store(n, Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Stop failing.
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }

    fn hit(&self) -> BlockResult<()> {
        if self.armed.load(Ordering::SeqCst) && self.remaining.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(BlockError::Io {
                context: "injected fault".into(),
                source: std::io::Error::from_raw_os_error(libc::EIO),
            });
        }
        Ok(())
    }
}

/// The image file with the sync policy (none under cache=unsafe) and fault injection.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    f: &'a File,
    sync: bool,
    fault: &'a FaultInjector,
}

impl Ctx<'_> {
    fn datasync(&self) -> BlockResult<()> {
        if self.sync {
            self.fault.hit()?;
            self.f.sync_data().map_err(io_err("fdatasync image"))?;
        }
        Ok(())
    }

    fn pwrite(&self, buf: &[u8], off: u64) -> BlockResult<()> {
        self.fault.hit()?;
        pwrite(self.f, buf, off)
    }

    fn sync_all(&self) -> BlockResult<()> {
        if self.sync {
            self.fault.hit()?;
            self.f.sync_all().map_err(io_err("fsync image"))?;
        }
        Ok(())
    }
}

/// Tables, caches and allocation state of an open image.
pub(crate) struct Meta {
    pub(crate) h: Header,
    pub(crate) l1: Vec<u64>,
    l1_dirty: bool,
    pub(crate) rc_table: Vec<u64>,
    l2_cache: TableCache,
    rc_cache: TableCache,
    free_hint: u64,
    pending_frees: Vec<u64>,
    pub(crate) snapshots: Vec<Snapshot>,
    marked_dirty: bool,
    /// Last host cluster holding compressed data, and bytes of it used (packing).
    compressed_tail: Option<(u64, u64)>,
    /// Metadata failed consistency checks during this session: further writes are refused.
    failed: bool,
}

impl Meta {
    fn cs(&self) -> u64 {
        self.h.cluster_size()
    }

    fn cb(&self) -> u32 {
        self.h.cluster_bits
    }

    /// The image has 128-bit L2 entries with subcluster bitmaps.
    pub(crate) fn ext(&self) -> bool {
        self.h.incompatible & header::INCOMPAT_EXTL2 != 0
    }

    fn l2_bits(&self) -> u32 {
        self.h.cluster_bits - if self.ext() { 4 } else { 3 }
    }

    /// Entries of one L2 table.
    pub(crate) fn l2_entries(&self) -> usize {
        1 << self.l2_bits()
    }

    /// Bytes of one L2 entry (8, or 16 with extended L2).
    fn l2_esize(&self) -> usize {
        if self.ext() {
            16
        } else {
            8
        }
    }

    fn rpb(&self) -> u64 {
        refcount::entries_per_block(self.h.cluster_bits, self.h.refcount_order)
    }

    fn check_meta_offset(&self, what: &str, off: u64) -> BlockResult<()> {
        if !off.is_multiple_of(self.cs()) || off == 0 || off >= 1 << 56 {
            return Err(BlockError::Corrupt(format!(
                "{what} offset {off:#x} is invalid (zero, unaligned or beyond 2^56)"
            )));
        }
        Ok(())
    }

    // ---- refcounts ----

    fn load_rc_block(&mut self, cx: Ctx, off: u64) -> BlockResult<()> {
        if self.rc_cache.contains(off) {
            return Ok(());
        }
        if let Some((eoff, data, dirty)) = self.rc_cache.evict_if_full() {
            if dirty {
                cx.pwrite(&data, eoff)?;
            }
        }
        let mut data = vec![0u8; self.cs() as usize];
        pread_zero_tail(cx.f, &mut data, off)?;
        self.rc_cache.insert(off, data, false);
        Ok(())
    }

    /// Refcount of host cluster index `c` (0 when no refcount block covers it).
    pub(crate) fn refcount(&mut self, cx: Ctx, c: u64) -> BlockResult<u64> {
        let rpb = self.rpb();
        let b = (c / rpb) as usize;
        let Some(&boff) = self.rc_table.get(b) else {
            return Ok(0);
        };
        let boff = boff & !(self.cs() - 1);
        if boff == 0 {
            return Ok(0);
        }
        self.check_meta_offset("refcount block", boff)?;
        self.load_rc_block(cx, boff)?;
        let order = self.h.refcount_order;
        let blk = self
            .rc_cache
            .get(boff)
            .ok_or_else(|| BlockError::Invalid("refcount cache lost a block".into()))?;
        Ok(refcount::get(blk, order, (c % rpb) as usize))
    }

    /// Add `delta` to the refcount of host cluster index `c`; its refcount block must exist.
    pub(crate) fn add_refcount(&mut self, cx: Ctx, c: u64, delta: i64) -> BlockResult<u64> {
        let rpb = self.rpb();
        let b = (c / rpb) as usize;
        let boff = self.rc_table.get(b).copied().unwrap_or(0) & !(self.cs() - 1);
        if boff == 0 {
            return Err(BlockError::Corrupt(format!(
                "no refcount block covers cluster {:#x}",
                c * self.cs()
            )));
        }
        self.check_meta_offset("refcount block", boff)?;
        self.load_rc_block(cx, boff)?;
        let order = self.h.refcount_order;
        let cs = self.cs();
        let blk = self
            .rc_cache
            .get_mut(boff)
            .ok_or_else(|| BlockError::Invalid("refcount cache lost a block".into()))?;
        let idx = (c % rpb) as usize;
        let old = refcount::get(blk, order, idx);
        let new = if delta >= 0 {
            old.checked_add(delta as u64)
                .filter(|&v| v <= refcount::max(order))
        } else {
            old.checked_sub(delta.unsigned_abs())
        };
        let Some(new) = new else {
            return Err(BlockError::Corrupt(format!(
                "refcount of cluster {:#x} would overflow or underflow ({old} {delta:+}); \
                 the refcount width is {} bits",
                c * cs,
                1u32 << order
            )));
        };
        refcount::set(blk, order, idx, new);
        Ok(new)
    }

    fn write_dirty_rc(&mut self, cx: Ctx) -> BlockResult<bool> {
        let dirty = self.rc_cache.dirty_offsets();
        for off in &dirty {
            if let Some(d) = self.rc_cache.peek(*off) {
                cx.pwrite(d, *off)?;
            }
            self.rc_cache.mark_clean(*off);
        }
        Ok(!dirty.is_empty())
    }

    /// First run of `n` free clusters at or after `from`.
    fn find_free_run(&mut self, cx: Ctx, from: u64, n: u64) -> BlockResult<u64> {
        let mut start = from.max(1);
        let mut c = start;
        let limit = (1u64 << 56) / self.cs();
        // Refcounts claiming clusters far past the end of the file are garbage: give up rather
        // than scan billions of them. (The file is only looked at once a scan gets long.)
        let slack = 4 * self.rpb() + n;
        let mut give_up = from.saturating_add(slack);
        let mut checked_file = false;
        loop {
            if c >= limit {
                return Err(BlockError::Invalid(
                    "image file would exceed 2^56 bytes".into(),
                ));
            }
            if c > give_up {
                let file_end =
                    cx.f.metadata()
                        .map_err(io_err("stat image"))?
                        .len()
                        .div_ceil(self.cs());
                if checked_file || file_end.saturating_add(slack) < c {
                    self.failed = true;
                    return Err(BlockError::Corrupt(format!(
                        "refcounts mark clusters far beyond the end of the file as used \
                         (cluster {c}); run rvmm-img check -r all"
                    )));
                }
                checked_file = true;
                give_up = file_end.saturating_add(slack);
            }
            if self.refcount(cx, c)? == 0 {
                if c + 1 - start == n {
                    return Ok(start);
                }
                c += 1;
            } else {
                c += 1;
                start = c;
            }
        }
    }

    /// Allocate `n` contiguous clusters (refcount 1 each) and return the host offset.
    pub(crate) fn alloc_clusters(&mut self, cx: Ctx, n: u64) -> BlockResult<u64> {
        if self.failed {
            return Err(BlockError::Corrupt(
                "metadata inconsistency found earlier; run rvmm-img check -r all".into(),
            ));
        }
        let rpb = self.rpb();
        loop {
            let start = self.find_free_run(cx, self.free_hint, n)?;
            let mut changed = false;
            for b in start / rpb..=(start + n - 1) / rpb {
                if b as usize >= self.rc_table.len() {
                    self.grow_rc_table(cx, b)?;
                    changed = true;
                    break;
                }
                if self.rc_table[b as usize] & !(self.cs() - 1) == 0 {
                    self.create_self_block(cx, b)?;
                    changed = true;
                    break;
                }
            }
            if changed {
                continue;
            }
            for c in start..start + n {
                self.add_refcount(cx, c, 1)?;
            }
            self.free_hint = start + n;
            return Ok(start * self.cs());
        }
    }

    /// A missing refcount block for block index `b`, placed at the first cluster it covers.
    fn create_self_block(&mut self, cx: Ctx, b: u64) -> BlockResult<()> {
        let cs = self.cs();
        let c0 = b * self.rpb();
        let off = c0 * cs;
        let rt_end = self.h.refcount_table_offset + u64::from(self.h.refcount_table_clusters) * cs;
        if c0 == 0 || (off >= self.h.refcount_table_offset && off < rt_end) {
            return Err(BlockError::Corrupt(format!(
                "refcount block {b} is missing where metadata lives; run rvmm-img check -r all"
            )));
        }
        let mut blk = vec![0u8; cs as usize];
        refcount::set(&mut blk, self.h.refcount_order, 0, 1);
        cx.pwrite(&blk, off)?;
        cx.datasync()?;
        self.rc_table[b as usize] = off;
        pwrite(
            cx.f,
            &off.to_be_bytes(),
            self.h.refcount_table_offset + b * 8,
        )?;
        if let Some((eoff, data, dirty)) = self.rc_cache.evict_if_full() {
            if dirty {
                cx.pwrite(&data, eoff)?;
            }
        }
        self.rc_cache.insert(off, blk, false);
        Ok(())
    }

    /// Move the refcount table to a larger one at the end of the covered area.
    fn grow_rc_table(&mut self, cx: Ctx, needed_b: u64) -> BlockResult<()> {
        let cs = self.cs();
        let rpb = self.rpb();
        let old_len = self.rc_table.len() as u64;
        let p = old_len * rpb;
        let mut m = 1u64;
        let (new_len, t) = loop {
            let want = (needed_b + 1).max(old_len * 2).max(old_len + m);
            let t = (want * 8).div_ceil(cs);
            let m2 = (m + t).div_ceil(rpb);
            if m2 <= m {
                break (t * cs / 8, t);
            }
            m = m2;
        };
        if t * cs > header::MAX_REFTABLE_BYTES || m > rpb {
            return Err(BlockError::Invalid(
                "refcount table would exceed 8 MiB; the image is too large for its cluster size"
                    .into(),
            ));
        }
        let order = self.h.refcount_order;
        let mut blocks = vec![vec![0u8; cs as usize]; m as usize];
        for c in p..p + m + t {
            let j = ((c - p) / rpb) as usize;
            refcount::set(&mut blocks[j], order, ((c - p) % rpb) as usize, 1);
        }
        for (j, blk) in blocks.iter().enumerate() {
            cx.pwrite(blk, (p + j as u64) * cs)?;
        }
        let mut table = self.rc_table.clone();
        table.resize(new_len as usize, 0);
        for j in 0..m {
            table[(old_len + j) as usize] = (p + j) * cs;
        }
        let mut tb = Vec::with_capacity((t * cs) as usize);
        for e in &table {
            tb.extend_from_slice(&e.to_be_bytes());
        }
        let toff = (p + m) * cs;
        cx.pwrite(&tb, toff)?;
        cx.datasync()?;
        let mut hb = [0u8; 12];
        hb[..8].copy_from_slice(&toff.to_be_bytes());
        hb[8..].copy_from_slice(&(t as u32).to_be_bytes());
        cx.pwrite(&hb, 48)?;
        cx.datasync()?;
        let old_off = self.h.refcount_table_offset;
        let old_clusters = u64::from(self.h.refcount_table_clusters);
        self.h.refcount_table_offset = toff;
        self.h.refcount_table_clusters = t as u32;
        self.rc_table = table;
        for (j, blk) in blocks.into_iter().enumerate() {
            if let Some((eoff, data, dirty)) = self.rc_cache.evict_if_full() {
                if dirty {
                    cx.pwrite(&data, eoff)?;
                }
            }
            self.rc_cache.insert((p + j as u64) * cs, blk, false);
        }
        for i in 0..old_clusters {
            self.pending_frees.push(old_off + i * cs);
        }
        Ok(())
    }

    /// Unmap every guest cluster in `start..end` (`start` cluster-aligned), queueing the host
    /// clusters they referenced for freeing.
    fn unmap_clusters(&mut self, cx: Ctx, start: u64, end: u64) -> BlockResult<()> {
        let cs = self.cs();
        let mut cl = start;
        while cl < end {
            let map = self.lookup(cx, cl)?;
            if map != Mapping::Unallocated {
                let l2 = self.writable_l2(cx, cl)?;
                let (_, l2i) = self.indices(cl);
                self.l2_set(cx, l2, l2i, 0)?;
                self.free_mapping(map);
            }
            cl += cs;
        }
        Ok(())
    }

    /// Queue one reference drop of the host cluster(s) behind a mapping.
    fn free_mapping(&mut self, m: Mapping) {
        let cs = self.cs();
        match m {
            Mapping::Data { host, .. } | Mapping::Zero { host } if host != 0 => {
                self.pending_frees.push(host)
            }
            Mapping::Compressed { host, len } => {
                let first = host & !(cs - 1);
                let last = (host + len.max(1) - 1) & !(cs - 1);
                let mut c = first;
                while c <= last {
                    self.pending_frees.push(c);
                    c += cs;
                }
            }
            _ => {}
        }
    }

    fn apply_pending_frees(&mut self, cx: Ctx) -> BlockResult<()> {
        let frees = std::mem::take(&mut self.pending_frees);
        let cs = self.cs();
        for off in frees {
            let c = off / cs;
            if self.add_refcount(cx, c, -1)? == 0 {
                self.l2_cache.remove(off);
                if let Some((t, _)) = self.compressed_tail {
                    if t == off {
                        self.compressed_tail = None;
                    }
                }
                self.free_hint = self.free_hint.min(c);
            }
        }
        Ok(())
    }

    // ---- L2 tables ----

    fn load_l2(&mut self, cx: Ctx, off: u64) -> BlockResult<()> {
        if self.l2_cache.contains(off) {
            return Ok(());
        }
        if let Some((eoff, data, dirty)) = self.l2_cache.evict_if_full() {
            if dirty {
                // The refcounts of the clusters this table points to must be on disk first.
                if self.write_dirty_rc(cx)? {
                    cx.datasync()?;
                }
                cx.pwrite(&data, eoff)?;
            }
        }
        let mut data = vec![0u8; self.cs() as usize];
        pread_zero_tail(cx.f, &mut data, off)?;
        self.l2_cache.insert(off, data, false);
        Ok(())
    }

    /// Read the 64-bit word at byte `at` of the L2 table at `l2_off`.
    fn l2_word(&mut self, cx: Ctx, l2_off: u64, at: usize) -> BlockResult<u64> {
        self.load_l2(cx, l2_off)?;
        let t = self
            .l2_cache
            .get(l2_off)
            .ok_or_else(|| BlockError::Invalid("L2 cache lost a table".into()))?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&t[at..at + 8]);
        Ok(u64::from_be_bytes(a))
    }

    fn set_l2_word(&mut self, cx: Ctx, l2_off: u64, at: usize, v: u64) -> BlockResult<()> {
        self.load_l2(cx, l2_off)?;
        let t = self
            .l2_cache
            .get_mut(l2_off)
            .ok_or_else(|| BlockError::Invalid("L2 cache lost a table".into()))?;
        t[at..at + 8].copy_from_slice(&v.to_be_bytes());
        Ok(())
    }

    /// The cluster descriptor (first 64 bits) of L2 entry `idx`.
    pub(crate) fn l2_get(&mut self, cx: Ctx, l2_off: u64, idx: usize) -> BlockResult<u64> {
        let at = idx * self.l2_esize();
        self.l2_word(cx, l2_off, at)
    }

    /// The subcluster bitmap of L2 entry `idx` (0 without extended L2).
    pub(crate) fn l2_bitmap(&mut self, cx: Ctx, l2_off: u64, idx: usize) -> BlockResult<u64> {
        if !self.ext() {
            return Ok(0);
        }
        self.l2_word(cx, l2_off, idx * 16 + 8)
    }

    /// Set L2 entry `idx` to a whole-cluster state given as a standard entry: with extended
    /// L2, a data cluster becomes all-allocated, a bare ZERO flag all-zero subclusters, and
    /// compressed or empty entries get an empty bitmap.
    fn l2_set(&mut self, cx: Ctx, l2_off: u64, idx: usize, v: u64) -> BlockResult<()> {
        if !self.ext() {
            return self.set_l2_word(cx, l2_off, idx * 8, v);
        }
        let (desc, bm) = if v & COMPRESSED != 0 {
            (v, 0)
        } else if v & OFFSET_MASK != 0 {
            (v & !ZERO, SC_ALL_ALLOC)
        } else if v & ZERO != 0 {
            (v & !ZERO, SC_ALL_ZERO)
        } else {
            (v, 0)
        };
        self.l2_set_ext(cx, l2_off, idx, desc, bm)
    }

    /// Set only the descriptor of L2 entry `idx`, keeping its subcluster bitmap (flag edits).
    pub(crate) fn l2_set_desc(
        &mut self,
        cx: Ctx,
        l2_off: u64,
        idx: usize,
        v: u64,
    ) -> BlockResult<()> {
        let at = idx * self.l2_esize();
        self.set_l2_word(cx, l2_off, at, v)
    }

    /// Set descriptor and subcluster bitmap of extended L2 entry `idx`.
    fn l2_set_ext(
        &mut self,
        cx: Ctx,
        l2_off: u64,
        idx: usize,
        desc: u64,
        bm: u64,
    ) -> BlockResult<()> {
        self.set_l2_word(cx, l2_off, idx * 16, desc)?;
        self.set_l2_word(cx, l2_off, idx * 16 + 8, bm)
    }

    /// Check a subcluster bitmap against its cluster's mapping (QEMU's INVALID subcluster
    /// types): no subcluster both allocated and zero, no allocated subcluster without a host
    /// cluster. Compressed clusters ignore the bitmap.
    pub(crate) fn check_bitmap(&self, map: Mapping, bm: u64) -> BlockResult<()> {
        let alloc = bm & SC_ALL_ALLOC;
        let zero = bm >> 32;
        let bad = match map {
            Mapping::Compressed { .. } => false,
            Mapping::Unallocated => alloc != 0,
            _ => alloc & zero != 0,
        };
        if bad {
            return Err(BlockError::Corrupt(format!(
                "extended L2 entry with an invalid subcluster bitmap {bm:#018x} \
                 (subclusters both allocated and zero, or allocated without a host cluster)"
            )));
        }
        Ok(())
    }

    /// State of subcluster `i` of a cluster with mapping `map` and (valid) bitmap `bm`.
    fn sc_mapping(map: Mapping, bm: u64, i: u64) -> Mapping {
        let alloc = bm & (1 << i) != 0;
        let zero = bm & (1 << (32 + i)) != 0;
        match map {
            Mapping::Data { host, .. } if zero => Mapping::Zero { host },
            Mapping::Data { .. } if !alloc => Mapping::Unallocated,
            Mapping::Unallocated if zero => Mapping::Zero { host: 0 },
            other => other,
        }
    }

    /// Decode an L2 entry.
    pub(crate) fn decode(&self, e: u64) -> BlockResult<Mapping> {
        let cb = self.cb();
        if e & COMPRESSED != 0 {
            let x = 62 - (cb - 8);
            let host = e & ((1u64 << x) - 1);
            let nsect = ((e >> x) & ((1u64 << (cb - 8)) - 1)) + 1;
            let len = nsect * 512 - (host & 511);
            return Ok(Mapping::Compressed { host, len });
        }
        let host = e & OFFSET_MASK;
        if host & (self.cs() - 1) != 0 {
            return Err(BlockError::Corrupt(format!(
                "L2 entry {e:#x} points at an unaligned cluster {host:#x}"
            )));
        }
        // With extended L2 the zero flag is unused: the bitmap says which parts read as zero.
        if self.h.version >= 3 && e & ZERO != 0 && !self.ext() {
            return Ok(Mapping::Zero { host });
        }
        if host == 0 {
            return Ok(Mapping::Unallocated);
        }
        Ok(Mapping::Data {
            host,
            copied: e & COPIED != 0,
        })
    }

    /// (L1 index, L2 index) of a guest offset.
    fn indices(&self, goff: u64) -> (usize, usize) {
        let l1i = (goff >> (self.cb() + self.l2_bits())) as usize;
        let l2i = ((goff >> self.cb()) & ((1 << self.l2_bits()) - 1)) as usize;
        (l1i, l2i)
    }

    /// (L2 table offset, index) of the entry for `goff`, if an L2 table covers it.
    fn l2_slot(&mut self, goff: u64) -> BlockResult<Option<(u64, usize)>> {
        let (l1i, l2i) = self.indices(goff);
        let Some(&l1e) = self.l1.get(l1i) else {
            return Ok(None);
        };
        let l2_off = l1e & OFFSET_MASK;
        if l2_off == 0 {
            return Ok(None);
        }
        self.check_meta_offset("L2 table", l2_off)?;
        Ok(Some((l2_off, l2i)))
    }

    /// The mapping of the guest cluster containing `goff` (with extended L2: of the host
    /// cluster, whatever its subclusters say).
    pub(crate) fn lookup(&mut self, cx: Ctx, goff: u64) -> BlockResult<Mapping> {
        let Some((l2_off, l2i)) = self.l2_slot(goff)? else {
            return Ok(Mapping::Unallocated);
        };
        let e = self.l2_get(cx, l2_off, l2i)?;
        self.decode(e)
    }

    /// Cluster mapping and subcluster bitmap (validated) of the cluster containing `goff`.
    fn lookup_bm(&mut self, cx: Ctx, goff: u64) -> BlockResult<(Mapping, u64)> {
        let Some((l2_off, l2i)) = self.l2_slot(goff)? else {
            return Ok((Mapping::Unallocated, 0));
        };
        let e = self.l2_get(cx, l2_off, l2i)?;
        let map = self.decode(e)?;
        let bm = self.l2_bitmap(cx, l2_off, l2i)?;
        if self.ext() {
            self.check_bitmap(map, bm)?;
        }
        Ok((map, bm))
    }

    /// The mapping of the bytes at `goff` and how many bytes from `goff` share it inside the
    /// cluster: the rest of the cluster, or with extended L2 the run of subclusters in the
    /// same state. `Data`/`Zero` hosts are the cluster's host offset.
    pub(crate) fn lookup_sc(&mut self, cx: Ctx, goff: u64) -> BlockResult<(Mapping, u64)> {
        let cs = self.cs();
        let in_cl = goff & (cs - 1);
        let (map, bm) = self.lookup_bm(cx, goff)?;
        if !self.ext() || matches!(map, Mapping::Compressed { .. }) {
            return Ok((map, cs - in_cl));
        }
        let scs = cs / SUBCLUSTERS;
        let i = in_cl / scs;
        let here = Self::sc_mapping(map, bm, i);
        let mut j = i + 1;
        while j < SUBCLUSTERS && Self::sc_mapping(map, bm, j) == here {
            j += 1;
        }
        Ok((here, j * scs - in_cl))
    }

    /// The L2 table for guest offset `goff`, allocated or copied so the active L1 owns it.
    fn writable_l2(&mut self, cx: Ctx, goff: u64) -> BlockResult<u64> {
        let (l1i, _) = self.indices(goff);
        let l1e = *self.l1.get(l1i).ok_or_else(|| {
            BlockError::Invalid(format!("guest offset {goff} beyond the L1 table"))
        })?;
        let old = l1e & OFFSET_MASK;
        if old != 0 {
            self.check_meta_offset("L2 table", old)?;
            if l1e & COPIED != 0 {
                return Ok(old);
            }
            if self.refcount(cx, old / self.cs())? == 1 {
                // Stale flag: the table is not shared after all.
                self.l1[l1i] = old | COPIED;
                self.l1_dirty = true;
                return Ok(old);
            }
        }
        let new = self.alloc_clusters(cx, 1)?;
        let data = if old != 0 {
            self.load_l2(cx, old)?;
            self.l2_cache
                .peek(old)
                .map(|d| d.to_vec())
                .ok_or_else(|| BlockError::Invalid("L2 cache lost a table".into()))?
        } else {
            vec![0u8; self.cs() as usize]
        };
        if let Some((eoff, edata, dirty)) = self.l2_cache.evict_if_full() {
            if dirty {
                if self.write_dirty_rc(cx)? {
                    cx.datasync()?;
                }
                cx.pwrite(&edata, eoff)?;
            }
        }
        self.l2_cache.insert(new, data, true);
        self.l1[l1i] = new | COPIED;
        self.l1_dirty = true;
        if old != 0 {
            self.pending_frees.push(old);
        }
        Ok(new)
    }

    fn mark_dirty_if_lazy(&mut self, cx: Ctx) -> BlockResult<()> {
        if self.h.compatible & header::COMPAT_LAZY_REFCOUNTS != 0
            && self.h.version >= 3
            && !self.marked_dirty
        {
            self.h.incompatible |= header::INCOMPAT_DIRTY;
            cx.pwrite(&self.h.incompatible.to_be_bytes(), 72)?;
            cx.datasync()?;
            self.marked_dirty = true;
        }
        Ok(())
    }

    /// Write all cached metadata back in dependency order and apply pending frees.
    fn flush_meta(&mut self, cx: Ctx) -> BlockResult<()> {
        if self.write_dirty_rc(cx)? {
            cx.datasync()?;
        }
        let dirty = self.l2_cache.dirty_offsets();
        for off in &dirty {
            if let Some(d) = self.l2_cache.peek(*off) {
                cx.pwrite(d, *off)?;
            }
            self.l2_cache.mark_clean(*off);
        }
        if !dirty.is_empty() {
            cx.datasync()?;
        }
        if self.l1_dirty {
            self.write_l1(cx)?;
            cx.datasync()?;
        }
        if !self.pending_frees.is_empty() {
            self.apply_pending_frees(cx)?;
            self.write_dirty_rc(cx)?;
        }
        Ok(())
    }

    fn write_l1(&mut self, cx: Ctx) -> BlockResult<()> {
        let mut b = Vec::with_capacity(self.l1.len() * 8);
        for e in &self.l1 {
            b.extend_from_slice(&e.to_be_bytes());
        }
        cx.pwrite(&b, self.h.l1_table_offset)?;
        self.l1_dirty = false;
        Ok(())
    }

    /// Drop cached tables (after metadata was rewritten behind the caches).
    pub(crate) fn invalidate_caches(&mut self) {
        self.l2_cache.clear();
        self.rc_cache.clear();
        self.free_hint = 1;
        self.compressed_tail = None;
    }
}

/// An open qcow2 image.
pub struct Qcow2 {
    file: File,
    path: PathBuf,
    read_only: bool,
    cache: CacheMode,
    cluster_bits: u32,
    compression: CompressionType,
    size: AtomicU64,
    backing: Option<Arc<dyn BlockBackend>>,
    /// The backing files below this image as opened, nearest first.
    chain: Vec<ChainLink>,
    io_lock: RwLock<()>,
    meta: Mutex<Meta>,
    fault: FaultInjector,
}

/// Extra knobs for internal opens (repair tools).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenFlags {
    /// Open a dirty image writable (the caller repairs the refcounts).
    pub allow_dirty: bool,
    /// Do not open the backing chain.
    pub no_backing: bool,
}

/// One backing file of an open image's chain.
#[derive(Debug, Clone)]
pub struct ChainLink {
    /// Resolved path.
    pub path: PathBuf,
    /// Detected or declared format.
    pub format: Format,
}

impl Qcow2 {
    /// Open a qcow2 image and its backing chain.
    pub fn open(path: &Path, opts: &OpenOptions) -> BlockResult<Self> {
        Self::open_with(path, opts, OpenFlags::default())
    }

    /// Open with internal flags (see [`OpenFlags`]).
    pub fn open_with(path: &Path, opts: &OpenOptions, flags: OpenFlags) -> BlockResult<Self> {
        let mut seen = HashSet::new();
        Self::open_chain(path, opts, flags, 0, &mut seen)
    }

    fn open_chain(
        path: &Path,
        opts: &OpenOptions,
        flags: OpenFlags,
        depth: usize,
        seen: &mut HashSet<(u64, u64)>,
    ) -> BlockResult<Self> {
        let mut read_only = opts.read_only;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(io_err(format!("open {}", path.display())))?;
        let md = file
            .metadata()
            .map_err(io_err(format!("stat {}", path.display())))?;
        if !seen.insert((md.dev(), md.ino())) {
            return Err(BlockError::Invalid(format!(
                "backing chain loops back to {}",
                path.display()
            )));
        }
        let mut first = vec![0u8; 4096];
        pread_zero_tail(&file, &mut first, 0)?;
        let cb = u32::from_be_bytes([first[20], first[21], first[22], first[23]]);
        if (9..=21).contains(&cb) && (1usize << cb) > first.len() {
            first = vec![0u8; 1 << cb];
            pread_zero_tail(&file, &mut first, 0)?;
        }
        let file_len = md.len();
        let cut = (file_len as usize).min(first.len());
        let mut h =
            Header::parse(&first[..cut.max(header::V2_HEADER_LEN as usize).min(first.len())])
                .map_err(|e| annotate(path, e))?;
        if h.incompatible & header::INCOMPAT_CORRUPT != 0 && !read_only {
            log::warn!(
                "{}: the image is marked corrupt; opening it read-only. Repair it with \
                 rvmm-img check -r all",
                path.display()
            );
            read_only = true;
        }
        if h.incompatible & header::INCOMPAT_DIRTY != 0 && !read_only && !flags.allow_dirty {
            return Err(BlockError::Invalid(format!(
                "{} was not closed cleanly (dirty bit set; refcounts may be stale): repair it \
                 with `rvmm-img check -r all {}` or open it read-only",
                path.display(),
                path.display()
            )));
        }
        let cs = h.cluster_size();
        let l1 = read_table(&file, h.l1_table_offset, u64::from(h.l1_size), file_len)
            .map_err(|e| annotate(path, e))?;
        let rc_entries = u64::from(h.refcount_table_clusters) * cs / 8;
        let rc_table = read_table(&file, h.refcount_table_offset, rc_entries, file_len)
            .map_err(|e| annotate(path, e))?;
        let snapshots = if h.nb_snapshots > 0 {
            let max = (64u64 << 20).min(file_len.saturating_sub(h.snapshots_offset));
            let mut b = vec![0u8; max as usize];
            pread_zero_tail(&file, &mut b, h.snapshots_offset)?;
            snapshot::parse_table(&b, h.nb_snapshots, cs)
                .map_err(|e| annotate(path, e))?
                .0
        } else {
            Vec::new()
        };
        let size = h.size;
        let l2_bytes = opts.l2_cache_size.unwrap_or_else(|| {
            let esize = if h.incompatible & header::INCOMPAT_EXTL2 != 0 {
                16
            } else {
                8
            };
            (size.div_ceil(cs) * esize).min(DEFAULT_L2_CACHE_MAX)
        });
        let rc_bytes = opts.refcount_cache_size.unwrap_or(l2_bytes / 4);
        let mut chain = Vec::new();
        let backing = match (&h.backing_file, flags.no_backing) {
            (Some(name), false) => {
                if depth >= MAX_BACKING_DEPTH {
                    return Err(BlockError::Invalid(format!(
                        "{}: backing chain deeper than {MAX_BACKING_DEPTH} images",
                        path.display()
                    )));
                }
                let (bpath, bfmt) = resolve_backing(path, name, h.backing_format.as_deref())?;
                let bopts = OpenOptions {
                    read_only: true,
                    format: Some(bfmt),
                    ..opts.clone()
                };
                chain.push(ChainLink {
                    path: bpath.clone(),
                    format: bfmt,
                });
                let b: Arc<dyn BlockBackend> = match bfmt {
                    Format::Raw => Arc::new(RawFile::open(&bpath, true)?),
                    Format::Qcow2 => {
                        let q = Self::open_chain(
                            &bpath,
                            &bopts,
                            OpenFlags::default(),
                            depth + 1,
                            seen,
                        )?;
                        chain.extend(q.chain.iter().cloned());
                        Arc::new(q)
                    }
                };
                Some(b)
            }
            _ => None,
        };
        if !read_only && h.version >= 3 && h.autoclear != 0 {
            // We maintain none of the autoclear features (bitmaps, raw data file): invalidate them.
            h.autoclear = 0;
            pwrite(&file, &0u64.to_be_bytes(), 88)?;
        }
        let cache_clusters = |bytes: u64| (bytes / cs).max(4) as usize;
        let meta = Meta {
            l1,
            l1_dirty: false,
            rc_table,
            l2_cache: TableCache::new(cache_clusters(l2_bytes)),
            rc_cache: TableCache::new(cache_clusters(rc_bytes)),
            free_hint: 1,
            pending_frees: Vec::new(),
            snapshots,
            marked_dirty: h.incompatible & header::INCOMPAT_DIRTY != 0,
            compressed_tail: None,
            failed: false,
            h,
        };
        Ok(Self {
            cluster_bits: meta.h.cluster_bits,
            compression: meta.h.compression_type,
            size: AtomicU64::new(size),
            file,
            path: path.to_path_buf(),
            read_only,
            cache: opts.cache,
            backing,
            chain,
            io_lock: RwLock::new(()),
            meta: Mutex::new(meta),
            fault: FaultInjector::default(),
        })
    }

    /// The backing files this open image reads through, nearest first (as opened; a later
    /// `set_backing` changes the header, not this list).
    pub fn backing_chain(&self) -> &[ChainLink] {
        &self.chain
    }

    fn cx(&self) -> Ctx<'_> {
        Ctx {
            f: &self.file,
            sync: self.cache != CacheMode::Unsafe,
            fault: &self.fault,
        }
    }

    /// The fault injector of this open image (tests).
    pub fn faults(&self) -> &FaultInjector {
        &self.fault
    }

    /// Take `io_lock` exclusively: no guest I/O runs until the guard drops.
    pub(crate) fn io_exclusive(&self) -> BlockResult<RwLockWriteGuard<'_, ()>> {
        self.io_lock
            .write()
            .map_err(|_| BlockError::Invalid("qcow2 I/O lock poisoned".into()))
    }

    /// Take `io_lock` shared, as reads and in-place writes do.
    pub(crate) fn io_shared(&self) -> BlockResult<RwLockReadGuard<'_, ()>> {
        self.io_lock
            .read()
            .map_err(|_| BlockError::Invalid("qcow2 I/O lock poisoned".into()))
    }

    pub(crate) fn lock_meta(&self) -> BlockResult<MutexGuard<'_, Meta>> {
        self.meta
            .lock()
            .map_err(|_| BlockError::Invalid("qcow2 metadata lock poisoned by a panic".into()))
    }

    /// The image file itself, for host-side copies of plainly stored data
    /// ([`BlockBackend::block_status`] offsets at depth 0 point into it).
    pub fn host_file(&self) -> &File {
        &self.file
    }

    /// Path the image was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A copy of the current header.
    pub fn header(&self) -> BlockResult<Header> {
        Ok(self.lock_meta()?.h.clone())
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// The backing image, if any.
    pub fn backing(&self) -> Option<&Arc<dyn BlockBackend>> {
        self.backing.as_ref()
    }

    /// Internal snapshots.
    pub fn snapshots(&self) -> BlockResult<Vec<Snapshot>> {
        Ok(self.lock_meta()?.snapshots.clone())
    }

    /// Mapping of the guest bytes at `goff` (of their subcluster, with extended L2).
    pub fn mapping(&self, goff: u64) -> BlockResult<Mapping> {
        Ok(self.mapping_run(goff)?.0)
    }

    /// Mapping of the guest bytes at `goff` and how many bytes from there share it within
    /// the cluster.
    fn mapping_run(&self, goff: u64) -> BlockResult<(Mapping, u64)> {
        let cx = self.cx();
        self.lock_meta()?.lookup_sc(cx, goff)
    }

    fn writable(&self) -> BlockResult<()> {
        if self.read_only {
            Err(BlockError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Read a guest cluster's bytes `[in_cl, in_cl+buf.len())` given its mapping.
    fn read_mapped(
        &self,
        m: Mapping,
        cluster_goff: u64,
        in_cl: u64,
        buf: &mut [u8],
    ) -> BlockResult<()> {
        match m {
            Mapping::Zero { .. } => buf.fill(0),
            Mapping::Unallocated => self.read_backing(cluster_goff + in_cl, buf)?,
            Mapping::Data { host, .. } => pread_zero_tail(&self.file, buf, host + in_cl)?,
            Mapping::Compressed { host, len } => {
                let cs = self.cluster_size();
                let mut comp = vec![0u8; len as usize];
                pread_zero_tail(&self.file, &mut comp, host)?;
                let mut out = vec![0u8; cs as usize];
                compress::decompress(self.compression, &comp, &mut out)?;
                buf.copy_from_slice(&out[in_cl as usize..in_cl as usize + buf.len()]);
            }
        }
        Ok(())
    }

    fn read_backing(&self, off: u64, buf: &mut [u8]) -> BlockResult<()> {
        match &self.backing {
            None => buf.fill(0),
            Some(b) => {
                let bs = b.size();
                let avail = bs.saturating_sub(off).min(buf.len() as u64) as usize;
                if avail > 0 {
                    b.read_at(off, &mut buf[..avail])?;
                }
                buf[avail..].fill(0);
            }
        }
        Ok(())
    }

    /// Split `[off, off+len)` into per-mapping extents under one metadata lock.
    fn translate(&self, off: u64, len: u64) -> BlockResult<Vec<(Mapping, u64, u64, u64)>> {
        let cs = self.cluster_size();
        let cx = self.cx();
        let mut m = self.lock_meta()?;
        let mut v: Vec<(Mapping, u64, u64, u64)> = Vec::new();
        let mut pos = 0u64;
        while pos < len {
            let g = off + pos;
            let in_cl = g & (cs - 1);
            let (map, run) = m.lookup_sc(cx, g)?;
            let n = run.min(len - pos);
            // Merge physically contiguous data clusters into one extent.
            if let (Some(last), Mapping::Data { host, copied }) = (v.last_mut(), map) {
                if let Mapping::Data {
                    host: lh,
                    copied: lc,
                } = last.0
                {
                    if lc == copied && in_cl == 0 && lh + last.2 + last.3 == host {
                        last.3 += n;
                        pos += n;
                        continue;
                    }
                }
            }
            v.push((map, g - in_cl, in_cl, n));
            pos += n;
        }
        Ok(v)
    }

    fn write_chunk(&self, m: &mut Meta, goff: u64, data: &[u8]) -> BlockResult<()> {
        if m.ext() {
            return self.write_chunk_ext(m, goff, data);
        }
        let cx = self.cx();
        let cs = m.cs();
        let in_cl = goff & (cs - 1);
        let cl = goff - in_cl;
        let l2_off = m.writable_l2(cx, cl)?;
        let (_, l2i) = m.indices(cl);
        let e = m.l2_get(cx, l2_off, l2i)?;
        let old = m.decode(e)?;
        if let Mapping::Data { host, copied } = old {
            if copied || m.refcount(cx, host / cs)? == 1 {
                if !copied {
                    m.l2_set(cx, l2_off, l2i, host | COPIED)?;
                }
                return self.cx().pwrite(data, host + in_cl);
            }
        }
        let host = m.alloc_clusters(cx, 1)?;
        if data.len() as u64 == cs {
            self.cx().pwrite(data, host)?;
        } else {
            let mut full = vec![0u8; cs as usize];
            self.read_mapped(old, cl, 0, &mut full)?;
            full[in_cl as usize..in_cl as usize + data.len()].copy_from_slice(data);
            self.cx().pwrite(&full, host)?;
        }
        m.l2_set(cx, l2_off, l2i, host | COPIED)?;
        m.free_mapping(old);
        Ok(())
    }

    /// Write within one cluster of an extended-L2 image. Unless the cluster is owned and
    /// fully allocated (then the write goes in place), the whole cluster is rebuilt from its
    /// subclusters' current contents with the write overlaid, written to the owned host
    /// cluster or a fresh one, and marked all-allocated. The L2 update follows the data, so
    /// a crash leaves the old state (plus at most a leaked cluster).
    fn write_chunk_ext(&self, m: &mut Meta, goff: u64, data: &[u8]) -> BlockResult<()> {
        let cx = self.cx();
        let cs = m.cs();
        let in_cl = goff & (cs - 1);
        let cl = goff - in_cl;
        let l2_off = m.writable_l2(cx, cl)?;
        let (_, l2i) = m.indices(cl);
        let e = m.l2_get(cx, l2_off, l2i)?;
        let bm = m.l2_bitmap(cx, l2_off, l2i)?;
        let old = m.decode(e)?;
        m.check_bitmap(old, bm)?;
        let owned = match old {
            Mapping::Data { host, copied } => copied || m.refcount(cx, host / cs)? == 1,
            _ => false,
        };
        if owned && bm == SC_ALL_ALLOC {
            if e & COPIED == 0 {
                m.l2_set_desc(cx, l2_off, l2i, e | COPIED)?;
            }
            return self.cx().pwrite(data, (e & OFFSET_MASK) + in_cl);
        }
        let mut full = vec![0u8; cs as usize];
        if data.len() as u64 != cs {
            self.read_cluster_sc(old, bm, cl, &mut full)?;
        }
        full[in_cl as usize..in_cl as usize + data.len()].copy_from_slice(data);
        let host = if owned {
            e & OFFSET_MASK
        } else {
            m.alloc_clusters(cx, 1)?
        };
        self.cx().pwrite(&full, host)?;
        m.l2_set_ext(cx, l2_off, l2i, host | COPIED, SC_ALL_ALLOC)?;
        if !owned {
            m.free_mapping(old);
        }
        Ok(())
    }

    /// Read a whole cluster of an extended-L2 image subcluster by subcluster.
    fn read_cluster_sc(&self, map: Mapping, bm: u64, cl: u64, full: &mut [u8]) -> BlockResult<()> {
        if matches!(map, Mapping::Compressed { .. }) {
            return self.read_mapped(map, cl, 0, full);
        }
        let scs = full.len() / SUBCLUSTERS as usize;
        for (i, part) in full.chunks_mut(scs).enumerate() {
            let sm = Meta::sc_mapping(map, bm, i as u64);
            self.read_mapped(sm, cl, (i * scs) as u64, part)?;
        }
        Ok(())
    }

    /// Zero the part `[pos, pos+n)` of one cluster of an extended-L2 image: whole
    /// subclusters (a last one cut short by the end of the disk counts as whole) get their
    /// zero bits; the partial edges are written with zeroes unless they already read as zero.
    fn zero_partial_ext(&self, m: &mut Meta, pos: u64, n: u64) -> BlockResult<()> {
        let cx = self.cx();
        let cs = m.cs();
        let scs = cs / SUBCLUSTERS;
        let cl = pos & !(cs - 1);
        let a = pos - cl;
        let b = a + n;
        let first = a.div_ceil(scs);
        let last = if cl + b == self.size() {
            b.div_ceil(scs)
        } else {
            b / scs
        };
        let (map, _) = m.lookup_bm(cx, cl)?;
        let compressed = matches!(map, Mapping::Compressed { .. });
        let (za, zb) = if first < last && !compressed {
            (first * scs, (last * scs).min(b))
        } else {
            (b, b)
        };
        // Edges first: rewriting them may move the cluster; the zero bits go on last.
        for (s, t) in [(a, za.min(b)), (zb.max(a), b)] {
            let mut p = s;
            while p < t {
                let (sm, run) = m.lookup_sc(cx, cl + p)?;
                let k = run.min(t - p);
                let reads_zero = matches!(sm, Mapping::Zero { .. })
                    || (sm == Mapping::Unallocated && self.backing.is_none());
                if !reads_zero {
                    let z = vec![0u8; k as usize];
                    self.write_chunk_ext(m, cl + p, &z)?;
                }
                p += k;
            }
            if za == b {
                break;
            }
        }
        if za < zb {
            let l2_off = m.writable_l2(cx, cl)?;
            let (_, l2i) = m.indices(cl);
            let e = m.l2_get(cx, l2_off, l2i)?;
            let bm = m.l2_bitmap(cx, l2_off, l2i)?;
            let mask = ((1u64 << last) - 1) & !((1u64 << first) - 1);
            let nbm = (bm & !mask) | (mask << 32);
            m.l2_set_ext(cx, l2_off, l2i, e, nbm)?;
        }
        Ok(())
    }

    /// Write a run of at least two whole clusters that all need fresh clusters (unallocated,
    /// zero or compressed) into one contiguous allocation with one write; returns the bytes
    /// written (0: no such run here, use [`Self::write_chunk`]).
    fn write_run(&self, m: &mut Meta, goff: u64, data: &[u8]) -> BlockResult<usize> {
        let cx = self.cx();
        let cs = m.cs();
        let (l1i, _) = m.indices(goff);
        let max = ((data.len() as u64 / cs).min(m.rpb() / 2)) as usize;
        let mut k = 0;
        while k < max {
            let g = goff + k as u64 * cs;
            if m.indices(g).0 != l1i {
                break;
            }
            match m.lookup(cx, g)? {
                Mapping::Unallocated | Mapping::Zero { .. } | Mapping::Compressed { .. } => k += 1,
                Mapping::Data { .. } => break,
            }
        }
        if k < 2 {
            return Ok(0);
        }
        let l2 = m.writable_l2(cx, goff)?;
        let host = m.alloc_clusters(cx, k as u64)?;
        let bytes = k * cs as usize;
        cx.pwrite(&data[..bytes], host)?;
        for j in 0..k as u64 {
            let (_, l2i) = m.indices(goff + j * cs);
            let e = m.l2_get(cx, l2, l2i)?;
            let old = m.decode(e)?;
            m.l2_set(cx, l2, l2i, (host + j * cs) | COPIED)?;
            m.free_mapping(old);
        }
        Ok(bytes)
    }

    /// Set the mapping of a whole guest cluster to zeroes/unallocated.
    fn zero_cluster(&self, m: &mut Meta, cl: u64, discard: bool) -> BlockResult<()> {
        let cx = self.cx();
        let old = m.lookup(cx, cl)?;
        let has_backing = self.backing.is_some();
        let v3 = m.h.version >= 3;
        let target = if !has_backing {
            0
        } else if v3 {
            ZERO
        } else if discard {
            0 // v2 cannot express zeroes; a discard is only a hint.
        } else {
            let z = vec![0u8; m.cs() as usize];
            return self.write_chunk(m, cl, &z);
        };
        if target == 0 && old == Mapping::Unallocated {
            return Ok(());
        }
        if target == ZERO && matches!(old, Mapping::Zero { host: 0 }) {
            return Ok(());
        }
        let l2_off = m.writable_l2(cx, cl)?;
        let (_, l2i) = m.indices(cl);
        m.l2_set(cx, l2_off, l2i, target)?;
        m.free_mapping(old);
        Ok(())
    }

    /// Zero or discard a byte range; partial clusters are written with zeroes (or skipped for
    /// a discard).
    fn zero_range(&self, offset: u64, len: u64, discard: bool) -> BlockResult<()> {
        self.writable()?;
        check_range(offset, len, self.size())?;
        let cs = self.cluster_size();
        let size = self.size();
        {
            let _g = self.io_exclusive()?;
            let mut m = self.lock_meta()?;
            m.mark_dirty_if_lazy(self.cx())?;
            let mut pos = offset;
            let end = offset + len;
            while pos < end {
                let cl = pos & !(cs - 1);
                let n = (cl + cs).min(end) - pos;
                // A cluster cut short by the end of the disk counts as whole.
                let whole = pos == cl && (n == cs || cl + n == size);
                if whole {
                    self.zero_cluster(&mut m, cl, discard)?;
                } else if !discard && m.ext() {
                    self.zero_partial_ext(&mut m, pos, n)?;
                } else if !discard {
                    let cur = m.lookup(self.cx(), cl)?;
                    let reads_zero = matches!(cur, Mapping::Zero { .. })
                        || (cur == Mapping::Unallocated && self.backing.is_none());
                    if !reads_zero {
                        let z = vec![0u8; n as usize];
                        self.write_chunk(&mut m, pos, &z)?;
                    }
                }
                pos += n;
            }
        }
        self.after_write()
    }

    fn after_write(&self) -> BlockResult<()> {
        if self.cache == CacheMode::Writethrough {
            self.flush()?;
        }
        Ok(())
    }

    /// Write one whole guest cluster compressed (as `qemu-io write -c`); data that does not
    /// compress is written plainly. `data` must be one cluster (or the disk's tail).
    pub fn write_compressed(&self, goff: u64, data: &[u8]) -> BlockResult<()> {
        let comp = self.compress_cluster(data)?;
        self.write_compressed_payload(goff, data, comp.as_deref())
    }

    /// Compress one cluster's data (padded with zeroes to a whole cluster) with the image's
    /// compression type; `None` when it does not shrink. Takes no lock, so callers may
    /// compress clusters in parallel and hand the result to
    /// [`Self::write_compressed_payload`].
    pub fn compress_cluster(&self, data: &[u8]) -> BlockResult<Option<Vec<u8>>> {
        let cs = self.cluster_size() as usize;
        if data.len() > cs {
            return Err(BlockError::Invalid(format!(
                "compressed writes must cover one whole cluster ({cs} bytes at a cluster boundary)"
            )));
        }
        if data.len() == cs {
            return compress::compress(self.compression, data);
        }
        let mut full = data.to_vec();
        full.resize(cs, 0);
        compress::compress(self.compression, &full)
    }

    /// Store one guest cluster: `comp` is [`Self::compress_cluster`]'s result for `data`
    /// (`None`: `data` is written plainly).
    pub fn write_compressed_payload(
        &self,
        goff: u64,
        data: &[u8],
        comp: Option<&[u8]>,
    ) -> BlockResult<()> {
        self.writable()?;
        let cs = self.cluster_size();
        if !goff.is_multiple_of(cs) || data.len() as u64 > cs {
            return Err(BlockError::Invalid(format!(
                "compressed writes must cover one whole cluster ({cs} bytes at a cluster boundary)"
            )));
        }
        check_range(goff, data.len() as u64, self.size())?;
        if comp.is_some_and(|c| c.len() as u64 >= cs) {
            return Err(BlockError::Invalid(
                "a compressed payload must be smaller than a cluster".into(),
            ));
        }
        let _g = self.io_exclusive()?;
        let mut m = self.lock_meta()?;
        let cx = self.cx();
        m.mark_dirty_if_lazy(cx)?;
        let Some(comp) = comp else {
            let mut full = data.to_vec();
            full.resize(cs as usize, 0);
            return self.write_chunk(&mut m, goff, &full);
        };
        let clen = comp.len() as u64;
        let tail_room = match m.compressed_tail {
            Some((tail, _)) => m.refcount(cx, tail / cs)? < refcount::max(m.h.refcount_order),
            None => false,
        };
        let host = match m.compressed_tail {
            Some((tail, used)) if used + clen <= cs && tail_room => {
                m.add_refcount(cx, tail / cs, 1)?;
                m.compressed_tail = Some((tail, used + clen));
                tail + used
            }
            _ => {
                let n = clen.div_ceil(cs);
                let h = m.alloc_clusters(cx, n)?;
                let last = h + (n - 1) * cs;
                m.compressed_tail = Some((last, clen - (n - 1) * cs));
                h
            }
        };
        self.cx().pwrite(comp, host)?;
        let cb = m.cb();
        let x = 62 - (cb - 8);
        let nsect = (host + clen - 1) / 512 - host / 512;
        let entry = COMPRESSED | (nsect << x) | host;
        let l2_off = m.writable_l2(cx, goff)?;
        let (_, l2i) = m.indices(goff);
        let e = m.l2_get(cx, l2_off, l2i)?;
        let old = m.decode(e)?;
        m.l2_set(cx, l2_off, l2i, entry)?;
        m.free_mapping(old);
        drop(m);
        drop(_g);
        self.after_write()
    }

    /// Bytes the image file occupies on the host.
    pub fn actual_size(&self) -> BlockResult<u64> {
        let md = self
            .file
            .metadata()
            .map_err(io_err(format!("stat {}", self.path.display())))?;
        Ok(md.blocks() * 512)
    }

    /// Length of the image file.
    pub fn file_length(&self) -> BlockResult<u64> {
        Ok(self
            .file
            .metadata()
            .map_err(io_err(format!("stat {}", self.path.display())))?
            .len())
    }

    /// Flush caches, clear the dirty bit we set and sync (done on drop; call to see errors).
    pub fn close(&self) -> BlockResult<()> {
        if self.read_only {
            return Ok(());
        }
        self.flush()?;
        let cx = self.cx();
        let mut m = self.lock_meta()?;
        if m.marked_dirty && !m.failed {
            m.h.incompatible &= !header::INCOMPAT_DIRTY;
            self.cx().pwrite(&m.h.incompatible.to_be_bytes(), 72)?;
            m.marked_dirty = false;
            cx.datasync()?;
        }
        Ok(())
    }
}

fn annotate(path: &Path, e: BlockError) -> BlockError {
    match e {
        BlockError::Corrupt(m) => BlockError::Corrupt(format!("{}: {m}", path.display())),
        BlockError::Unsupported(m) => BlockError::Unsupported(format!("{}: {m}", path.display())),
        other => other,
    }
}

/// Read a table of `n` big-endian u64 entries at `off`, refusing ones beyond the file.
fn read_table(f: &File, off: u64, n: u64, file_len: u64) -> BlockResult<Vec<u64>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let bytes = n * 8;
    if off.checked_add(bytes).is_none_or(|e| e > file_len) {
        return Err(BlockError::Corrupt(format!(
            "table at {off:#x} of {bytes} bytes lies beyond the end of the file ({file_len} bytes)"
        )));
    }
    let mut b = vec![0u8; bytes as usize];
    f.read_exact_at(&mut b, off)
        .map_err(io_err(format!("read table at {off:#x}")))?;
    Ok(b.chunks_exact(8)
        .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

/// Resolve a backing file name from an image header: relative to the image's directory, never
/// a device node, format from the header extension or probed.
pub fn resolve_backing(
    image: &Path,
    name: &str,
    declared: Option<&str>,
) -> BlockResult<(PathBuf, Format)> {
    if name.contains("://") || name.starts_with("json:") {
        return Err(BlockError::Unsupported(format!(
            "{}: backing file '{name}' is a protocol URL; only local files are supported",
            image.display()
        )));
    }
    let p = Path::new(name);
    let bpath = if p.is_absolute() {
        p.to_path_buf()
    } else {
        image.parent().unwrap_or(Path::new(".")).join(p)
    };
    let md = std::fs::metadata(&bpath).map_err(io_err(format!(
        "{}: open backing file {}",
        image.display(),
        bpath.display()
    )))?;
    let ft = md.file_type();
    if ft.is_block_device()
        || ft.is_char_device()
        || ft.is_fifo()
        || ft.is_socket()
        || !ft.is_file()
    {
        return Err(BlockError::Invalid(format!(
            "{}: backing file {} is not a regular file; refusing to open it",
            image.display(),
            bpath.display()
        )));
    }
    let fmt = match declared {
        Some(d) => Format::from_name(d)?,
        None => detect_format(&bpath)?,
    };
    Ok((bpath, fmt))
}

impl BlockBackend for Qcow2 {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> BlockResult<()> {
        check_range(offset, buf.len() as u64, self.size())?;
        let _g = self.io_shared()?;
        let mut pos = 0usize;
        for (map, cl, in_cl, n) in self.translate(offset, buf.len() as u64)? {
            let n = n as usize;
            self.read_mapped(map, cl, in_cl, &mut buf[pos..pos + n])?;
            pos += n;
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> BlockResult<()> {
        self.writable()?;
        check_range(offset, buf.len() as u64, self.size())?;
        {
            // Fast path: every cluster is owned by the active L1 — no metadata changes.
            let _g = self.io_shared()?;
            let ext = self.translate(offset, buf.len() as u64)?;
            if ext
                .iter()
                .all(|(m, ..)| matches!(m, Mapping::Data { copied: true, .. }))
            {
                let mut pos = 0usize;
                for (m, _, in_cl, n) in ext {
                    if let Mapping::Data { host, .. } = m {
                        self.cx()
                            .pwrite(&buf[pos..pos + n as usize], host + in_cl)?;
                    }
                    pos += n as usize;
                }
                drop(_g);
                return self.after_write();
            }
        }
        {
            let _g = self.io_exclusive()?;
            let mut m = self.lock_meta()?;
            m.mark_dirty_if_lazy(self.cx())?;
            let cs = self.cluster_size();
            let mut pos = 0usize;
            while pos < buf.len() {
                let g = offset + pos as u64;
                if g & (cs - 1) == 0 {
                    let k = self.write_run(&mut m, g, &buf[pos..])?;
                    if k > 0 {
                        pos += k;
                        continue;
                    }
                }
                let n = ((cs - (g & (cs - 1))) as usize).min(buf.len() - pos);
                self.write_chunk(&mut m, g, &buf[pos..pos + n])?;
                pos += n;
            }
        }
        self.after_write()
    }

    fn flush(&self) -> BlockResult<()> {
        if self.read_only {
            return Ok(());
        }
        let cx = self.cx();
        self.lock_meta()?.flush_meta(cx)?;
        cx.sync_all()
    }

    fn discard(&self, offset: u64, len: u64) -> BlockResult<()> {
        self.zero_range(offset, len, true)
    }

    fn block_status(&self, offset: u64, len: u64) -> BlockResult<Extent> {
        check_range(offset, len, self.size())?;
        let cs = self.cluster_size();
        let (first, run) = self.mapping_run(offset)?;
        let in_cl = offset & (cs - 1);
        let mut n = run.min(len);
        // Extend over following clusters (or subclusters) of the same kind (and contiguous
        // host data).
        while n < len {
            let g = offset + n;
            let (next, run) = self.mapping_run(g)?;
            let same = match (first, next) {
                (Mapping::Data { host: a, .. }, Mapping::Data { host: b, .. }) => {
                    b + (g & (cs - 1)) == a + in_cl + n
                }
                (Mapping::Zero { .. }, Mapping::Zero { .. }) => true,
                (Mapping::Unallocated, Mapping::Unallocated) => true,
                _ => false,
            };
            if !same {
                break;
            }
            n += run.min(len - n);
        }
        let e = |present, zero, data, offset, compressed| Extent {
            len: n,
            present,
            zero,
            data,
            depth: 0,
            offset,
            compressed,
        };
        Ok(match first {
            Mapping::Data { host, .. } => e(true, false, true, Some(host + in_cl), false),
            Mapping::Zero { .. } => e(true, true, false, None, false),
            Mapping::Compressed { .. } => e(true, false, true, None, true),
            Mapping::Unallocated => match &self.backing {
                Some(b) if offset < b.size() => {
                    let mut x = b.block_status(offset, n.min(b.size() - offset))?;
                    x.depth += 1;
                    x
                }
                Some(_) => Extent {
                    depth: 1,
                    ..e(false, true, false, None, false)
                },
                None => e(false, true, false, None, false),
            },
        })
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> BlockResult<()> {
        self.zero_range(offset, len, false)
    }
}

impl Drop for Qcow2 {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            log::error!("closing {}: {e}", self.path.display());
        }
    }
}
