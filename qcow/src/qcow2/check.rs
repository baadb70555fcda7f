//! Consistency check and repair of qcow2 metadata (`rvmm-img check [-r leaks|all]`).
//!
//! References are counted from the structures (header, L1/L2 tables of the active state and of
//! every snapshot, refcount table and blocks, snapshot table) and compared with the stored
//! refcounts. Stored < counted is a corruption (a cluster could be reallocated while in use),
//! stored > counted a leak (wasted space). Repair of corruptions rebuilds the whole refcount
//! structure at the end of the file.

use super::{header, pread_zero_tail, refcount, Mapping, Meta, Qcow2, COPIED, OFFSET_MASK};
use crate::backend::{BlockBackend, BlockError, BlockResult};

/// What to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Only drop leaked references.
    Leaks,
    /// Fix leaks and corruptions (rebuilding refcounts when needed).
    All,
}

/// Result of a check, with qemu-img's counters.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Refcounts lower than the references found, or invalid pointers.
    pub corruptions: u64,
    /// Refcounts higher than the references found.
    pub leaks: u64,
    /// Errors that prevented checking parts of the image.
    pub check_errors: u64,
    /// Corruptions repaired.
    pub corruptions_fixed: u64,
    /// Leaks repaired.
    pub leaks_fixed: u64,
    /// End of the last cluster in use.
    pub image_end_offset: u64,
    /// Guest clusters of the virtual disk.
    pub total_clusters: u64,
    /// Guest clusters allocated in this image.
    pub allocated_clusters: u64,
    /// Allocated guest clusters not contiguous with their predecessor.
    pub fragmented_clusters: u64,
    /// Compressed guest clusters.
    pub compressed_clusters: u64,
    /// Human-readable findings, one per line (as qemu-img prints them).
    pub messages: Vec<String>,
}

struct Counter {
    refs: Vec<u32>,
    cs: u64,
    file_clusters: u64,
}

impl Counter {
    fn mark(&mut self, r: &mut CheckReport, off: u64, len: u64, what: &str) {
        if len == 0 {
            return;
        }
        let first = off / self.cs;
        let last = (off + len - 1) / self.cs;
        for c in first..=last {
            if c >= self.file_clusters {
                r.messages.push(format!(
                    "ERROR: {what} at {:#x} is beyond the end of the image file",
                    c * self.cs
                ));
                r.corruptions += 1;
                continue;
            }
            let v = &mut self.refs[c as usize];
            *v = v.saturating_add(1);
        }
    }
}

impl Qcow2 {
    /// Check the image and optionally repair it (the image must be writable to repair).
    pub fn check(&self, repair: Option<Repair>) -> BlockResult<CheckReport> {
        if repair.is_some() {
            self.writable()?;
        }
        // Pending frees would otherwise show up as leaks.
        self.flush()?;
        let _g = self.io_exclusive()?;
        let cx = self.cx();
        let mut m = self.lock_meta()?;
        let mut res = self.count(&mut m)?;
        if let Some(mode) = repair {
            self.repair(&mut m, &mut res, mode)?;
        }
        let r = res.0;
        drop(m);
        drop(_g);
        if repair.is_some() {
            self.flush()?;
            let mut m = self.lock_meta()?;
            if r.corruptions == r.corruptions_fixed && r.leaks == r.leaks_fixed {
                let was = m.h.incompatible;
                m.h.incompatible &= !(header::INCOMPAT_DIRTY | header::INCOMPAT_CORRUPT);
                m.marked_dirty = false;
                if was != m.h.incompatible {
                    cx.pwrite(&m.h.incompatible.to_be_bytes(), 72)?;
                    cx.datasync()?;
                }
            }
        }
        Ok(r)
    }

    fn count(&self, m: &mut Meta) -> BlockResult<(CheckReport, Counter)> {
        let cx = self.cx();
        let cs = m.cs();
        let file_len = self.file_length()?;
        let file_clusters = file_len.div_ceil(cs);
        let mut r = CheckReport {
            total_clusters: self.size().div_ceil(cs),
            ..Default::default()
        };
        let mut c = Counter {
            refs: vec![0; file_clusters as usize],
            cs,
            file_clusters,
        };
        c.mark(&mut r, 0, cs, "header");
        // Active L1 (with statistics) and the snapshots' L1 tables.
        let active = m.l1.clone();
        c.mark(
            &mut r,
            m.h.l1_table_offset,
            active.len() as u64 * 8,
            "L1 table",
        );
        self.walk_l1(m, &active, &mut c, &mut r, true)?;
        for s in m.snapshots.clone() {
            c.mark(
                &mut r,
                s.l1_table_offset,
                u64::from(s.l1_size) * 8,
                "snapshot L1 table",
            );
            let mut b = vec![0u8; s.l1_size as usize * 8];
            pread_zero_tail(cx.f, &mut b, s.l1_table_offset)?;
            let l1: Vec<u64> = b
                .chunks_exact(8)
                .map(|x| u64::from_be_bytes([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]]))
                .collect();
            self.walk_l1(m, &l1, &mut c, &mut r, false)?;
        }
        if m.h.nb_snapshots > 0 {
            let len = super::snapshot::serialize_table(&m.snapshots).len() as u64;
            c.mark(&mut r, m.h.snapshots_offset, len, "snapshot table");
        }
        c.mark(
            &mut r,
            m.h.refcount_table_offset,
            u64::from(m.h.refcount_table_clusters) * cs,
            "refcount table",
        );
        for (i, &e) in m.rc_table.clone().iter().enumerate() {
            let off = e & !(cs - 1);
            if off == 0 {
                continue;
            }
            if e & (cs - 1) != 0 || off >= 1 << 56 {
                r.messages.push(format!(
                    "ERROR refcount block {i} is not cluster aligned; refcount table corrupted"
                ));
                r.corruptions += 1;
                continue;
            }
            c.mark(&mut r, off, cs, "refcount block");
        }
        // Compare.
        let rpb = m.rpb();
        let covered = m.rc_table.len() as u64 * rpb;
        let nblocks = covered.max(file_clusters).div_ceil(rpb);
        let mut end = 0u64;
        for b in 0..nblocks {
            let has_block = m
                .rc_table
                .get(b as usize)
                .is_some_and(|&e| e & !(cs - 1) != 0);
            let lo = b * rpb;
            // As qemu-img: refcounts of clusters past the end of the file are not examined.
            let hi = (lo + rpb).min(file_clusters);
            for cl in lo..hi {
                let counted = c.refs.get(cl as usize).copied().unwrap_or(0) as u64;
                let stored = if has_block { m.refcount(cx, cl)? } else { 0 };
                if counted > 0 || stored > 0 {
                    end = end.max((cl + 1) * cs);
                }
                if stored < counted {
                    r.messages.push(format!(
                        "ERROR cluster {cl} refcount={stored} reference={counted}"
                    ));
                    r.corruptions += 1;
                } else if stored > counted {
                    r.messages.push(format!(
                        "Leaked cluster {cl} refcount={stored} reference={counted}"
                    ));
                    r.leaks += 1;
                }
            }
        }
        // OFLAG_COPIED must be set exactly when the refcount is 1 (active tables only).
        for (i, &l1e) in active.iter().enumerate() {
            let l2 = l1e & OFFSET_MASK;
            if l2 == 0 || !l2.is_multiple_of(cs) {
                continue;
            }
            let rc = m.refcount(cx, l2 / cs)?;
            if (rc == 1) != (l1e & COPIED != 0) {
                r.messages.push(format!(
                    "ERROR OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={l1e:x} refcount={rc}"
                ));
                r.corruptions += 1;
            }
            for j in 0..m.l2_entries() {
                let e = m.l2_get(cx, l2, j)?;
                let host = e & OFFSET_MASK;
                if e & super::COMPRESSED != 0 || host == 0 || !host.is_multiple_of(cs) {
                    continue;
                }
                let rc = m.refcount(cx, host / cs)?;
                if (rc == 1) != (e & COPIED != 0) {
                    r.messages.push(format!(
                        "ERROR OFLAG_COPIED data cluster: l2_entry={e:x} refcount={rc}"
                    ));
                    r.corruptions += 1;
                }
            }
        }
        r.image_end_offset = end.max(cs);
        Ok((r, c))
    }

    fn walk_l1(
        &self,
        m: &mut Meta,
        l1: &[u64],
        c: &mut Counter,
        r: &mut CheckReport,
        active: bool,
    ) -> BlockResult<()> {
        let cx = self.cx();
        let cs = m.cs();
        let mut prev_end = 0u64;
        for (i, &l1e) in l1.iter().enumerate() {
            let l2 = l1e & OFFSET_MASK;
            if l2 == 0 {
                continue;
            }
            if !l2.is_multiple_of(cs) {
                r.messages.push(format!(
                    "ERROR l2_offset={l2:x}: Table is not cluster aligned; L1 entry corrupted"
                ));
                r.corruptions += 1;
                continue;
            }
            if l2 / cs >= c.file_clusters {
                r.messages.push(format!(
                    "ERROR l2_offset={l2:x}: L2 table beyond the end of the file (L1 index {i})"
                ));
                r.corruptions += 1;
                continue;
            }
            c.mark(r, l2, cs, "L2 table");
            for j in 0..m.l2_entries() {
                let e = m.l2_get(cx, l2, j)?;
                let map = match m.decode(e) {
                    Ok(x) => x,
                    Err(_) => {
                        r.messages.push(format!(
                            "ERROR offset={:x}: Cluster is not properly aligned; L2 entry corrupted",
                            e & OFFSET_MASK
                        ));
                        r.corruptions += 1;
                        continue;
                    }
                };
                if m.ext() {
                    let bm = m.l2_bitmap(cx, l2, j)?;
                    let bad = if matches!(map, Mapping::Compressed { .. }) {
                        bm != 0
                    } else {
                        m.check_bitmap(map, bm).is_err()
                    };
                    if bad {
                        r.messages.push(format!(
                            "ERROR invalid subcluster bitmap: l2_offset={l2:x} index={j} \
                             l2_entry={e:x} l2_bitmap={bm:x}"
                        ));
                        r.corruptions += 1;
                    }
                }
                match map {
                    Mapping::Unallocated | Mapping::Zero { host: 0 } => {}
                    Mapping::Data { host, .. } | Mapping::Zero { host } => {
                        c.mark(r, host, cs, "data cluster");
                        if active {
                            r.allocated_clusters += 1;
                            if prev_end != 0 && host != prev_end {
                                r.fragmented_clusters += 1;
                            }
                            prev_end = host + cs;
                        }
                    }
                    Mapping::Compressed { host, len } => {
                        c.mark(r, host & !511, len + (host & 511), "compressed cluster");
                        if active {
                            r.allocated_clusters += 1;
                            r.compressed_clusters += 1;
                            prev_end = 0;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn repair(
        &self,
        m: &mut Meta,
        res: &mut (CheckReport, Counter),
        mode: Repair,
    ) -> BlockResult<()> {
        let cx = self.cx();
        let cs = m.cs();
        let (r, c) = res;
        let need_rebuild = mode == Repair::All && r.corruptions > 0;
        if need_rebuild {
            self.rebuild_refcounts(m, c)?;
            // Recount to fix OFLAG_COPIED and report what remains.
            m.fix_copied(cx)?;
            m.flush_meta(cx)?;
            let (after, _) = self.count(m)?;
            r.corruptions_fixed = r.corruptions.saturating_sub(after.corruptions);
            r.leaks_fixed = r.leaks.saturating_sub(after.leaks);
            return Ok(());
        }
        // Leaks: lower each stored refcount to the counted value.
        let rpb = m.rpb();
        let upto = (m.rc_table.len() as u64 * rpb).min(c.file_clusters);
        for cl in 0..upto {
            let counted = c.refs.get(cl as usize).copied().unwrap_or(0) as u64;
            let stored = m.refcount(cx, cl)?;
            if stored > counted {
                m.add_refcount(cx, cl, -((stored - counted) as i64))?;
                r.leaks_fixed += 1;
            }
        }
        m.write_dirty_rc(cx)?;
        m.free_hint = 1;
        let _ = cs;
        Ok(())
    }

    /// Write a fresh refcount table and blocks past the end of the file holding the counted
    /// references, then point the header at them.
    fn rebuild_refcounts(&self, m: &mut Meta, c: &Counter) -> BlockResult<()> {
        let cx = self.cx();
        let cs = m.cs();
        let rpb = m.rpb();
        let order = m.h.refcount_order;
        // Old refcount structures are not carried over.
        let mut refs = c.refs.clone();
        let rt = m.h.refcount_table_offset / cs;
        for i in 0..u64::from(m.h.refcount_table_clusters) {
            if let Some(v) = refs.get_mut((rt + i) as usize) {
                *v = v.saturating_sub(1);
            }
        }
        for &e in &m.rc_table {
            let off = e & !(cs - 1);
            if off != 0 && e & (cs - 1) == 0 {
                if let Some(v) = refs.get_mut((off / cs) as usize) {
                    *v = v.saturating_sub(1);
                }
            }
        }
        let e0 = c.file_clusters;
        let (mut nblocks, mut tclusters) = (1u64, 1u64);
        loop {
            let total = e0 + nblocks + tclusters;
            let nb = total.div_ceil(rpb);
            let tc = (nb * 8).div_ceil(cs);
            if nb == nblocks && tc == tclusters {
                break;
            }
            nblocks = nb;
            tclusters = tc;
        }
        if tclusters * cs > header::MAX_REFTABLE_BYTES {
            return Err(BlockError::Invalid(
                "rebuilt refcount table would exceed 8 MiB".into(),
            ));
        }
        refs.resize((e0 + nblocks + tclusters) as usize, 0);
        for cl in e0..e0 + nblocks + tclusters {
            refs[cl as usize] = 1;
        }
        let maxv = refcount::max(order);
        let mut table = vec![0u64; (tclusters * cs / 8) as usize];
        for b in 0..nblocks {
            let mut blk = vec![0u8; cs as usize];
            let mut any = false;
            for i in 0..rpb {
                let cl = b * rpb + i;
                let v = refs.get(cl as usize).copied().unwrap_or(0) as u64;
                if v > maxv {
                    return Err(BlockError::Invalid(format!(
                        "cluster {cl} needs refcount {v}, more than {}-bit refcounts hold",
                        1u32 << order
                    )));
                }
                if v != 0 {
                    any = true;
                    refcount::set(&mut blk, order, i as usize, v);
                }
            }
            let off = (e0 + b) * cs;
            let _ = any;
            cx.pwrite(&blk, off)?;
            table[b as usize] = off;
        }
        let toff = (e0 + nblocks) * cs;
        let mut tb = Vec::with_capacity(table.len() * 8);
        for e in &table {
            tb.extend_from_slice(&e.to_be_bytes());
        }
        cx.pwrite(&tb, toff)?;
        cx.datasync()?;
        let mut hb = [0u8; 12];
        hb[..8].copy_from_slice(&toff.to_be_bytes());
        hb[8..].copy_from_slice(&(tclusters as u32).to_be_bytes());
        cx.pwrite(&hb, 48)?;
        cx.datasync()?;
        m.h.refcount_table_offset = toff;
        m.h.refcount_table_clusters = tclusters as u32;
        m.rc_table = table;
        m.invalidate_caches();
        m.pending_frees.clear();
        m.failed = false;
        Ok(())
    }
}
