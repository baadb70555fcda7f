//! Internal snapshot operations (create, apply, delete) and header rewrites (backing file).
//!
//! Refcount semantics follow QEMU: a cluster's refcount is the number of L1 tables (active and
//! snapshots) through which it is reachable. Increments reach disk before a new table references
//! them; decrements happen only after the reference is gone from disk.

use std::time::{SystemTime, UNIX_EPOCH};

use super::snapshot::{serialize_table, Snapshot};
use super::{pread_zero_tail, Ctx, Mapping, Meta, Qcow2, COPIED, OFFSET_MASK};
use crate::backend::{BlockBackend, BlockError, BlockResult};
use crate::open::Format;

impl Meta {
    /// Add `delta` to the refcount of every L2 table and data cluster reachable from `l1`;
    /// with `clear_copied`, drop OFLAG_COPIED from the (active) tables on the way.
    fn tree_refcount(
        &mut self,
        cx: Ctx,
        l1: &[u64],
        delta: i64,
        clear_copied: bool,
    ) -> BlockResult<()> {
        let cs = self.cs();
        for (i, &l1e) in l1.iter().enumerate() {
            let l2 = l1e & OFFSET_MASK;
            if l2 == 0 {
                continue;
            }
            self.check_meta_offset("L2 table", l2)?;
            for j in 0..self.l2_entries() {
                let e = self.l2_get(cx, l2, j)?;
                let map = self.decode(e)?;
                let mut hosts = Vec::new();
                match map {
                    Mapping::Data { host, .. } | Mapping::Zero { host } if host != 0 => {
                        hosts.push(host)
                    }
                    Mapping::Compressed { host, len } => {
                        let mut c = host & !(cs - 1);
                        while c <= (host + len.max(1) - 1) & !(cs - 1) {
                            hosts.push(c);
                            c += cs;
                        }
                    }
                    _ => {}
                }
                for h in hosts {
                    if self.add_refcount(cx, h / cs, delta)? == 0 {
                        self.free_hint = self.free_hint.min(h / cs);
                    }
                }
                if clear_copied && e & COPIED != 0 {
                    self.l2_set_desc(cx, l2, j, e & !COPIED)?;
                }
            }
            if self.add_refcount(cx, l2 / cs, delta)? == 0 {
                self.l2_cache.remove(l2);
                self.free_hint = self.free_hint.min(l2 / cs);
            }
            if clear_copied {
                self.l1[i] &= !COPIED;
                self.l1_dirty = true;
            }
        }
        Ok(())
    }

    /// Set OFLAG_COPIED on active entries exactly where the refcount is 1 (never editing a
    /// shared L2 table).
    pub(crate) fn fix_copied(&mut self, cx: Ctx) -> BlockResult<()> {
        let cs = self.cs();
        for i in 0..self.l1.len() {
            let l1e = self.l1[i];
            let l2 = l1e & OFFSET_MASK;
            if l2 == 0 || !l2.is_multiple_of(cs) {
                continue;
            }
            let rc = self.refcount(cx, l2 / cs)?;
            let want = if rc == 1 { l2 | COPIED } else { l2 };
            if want != l1e {
                self.l1[i] = want;
                self.l1_dirty = true;
            }
            if rc != 1 {
                continue;
            }
            for j in 0..self.l2_entries() {
                let e = self.l2_get(cx, l2, j)?;
                let host = e & OFFSET_MASK;
                if e & super::COMPRESSED != 0 || host == 0 || !host.is_multiple_of(cs) {
                    continue;
                }
                let rc = self.refcount(cx, host / cs)?;
                let want = if rc == 1 { e | COPIED } else { e & !COPIED };
                if want != e {
                    self.l2_set_desc(cx, l2, j, want)?;
                }
            }
        }
        Ok(())
    }

    fn read_l1_at(&self, cx: Ctx, off: u64, n: u32) -> BlockResult<Vec<u64>> {
        let mut b = vec![0u8; n as usize * 8];
        pread_zero_tail(cx.f, &mut b, off)?;
        Ok(b.chunks_exact(8)
            .map(|x| u64::from_be_bytes([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]]))
            .collect())
    }

    fn write_table_at(&mut self, cx: Ctx, entries: &[u64]) -> BlockResult<u64> {
        let cs = self.cs();
        let bytes = entries.len() as u64 * 8;
        let off = self.alloc_clusters(cx, bytes.div_ceil(cs).max(1))?;
        let mut b = Vec::with_capacity(bytes as usize);
        for e in entries {
            b.extend_from_slice(&e.to_be_bytes());
        }
        cx.pwrite(&b, off)?;
        Ok(off)
    }

    /// Write the snapshot list to new clusters and point the header at it.
    fn store_snapshots(&mut self, cx: Ctx, snaps: Vec<Snapshot>) -> BlockResult<()> {
        let cs = self.cs();
        let old_off = self.h.snapshots_offset;
        let old_len = serialize_table(&self.snapshots).len() as u64;
        let had = self.h.nb_snapshots > 0;
        let table = serialize_table(&snaps);
        let new_off = if snaps.is_empty() {
            0
        } else {
            let off = self.alloc_clusters(cx, (table.len() as u64).div_ceil(cs))?;
            cx.pwrite(&table, off)?;
            off
        };
        if self.write_dirty_rc(cx)? {
            cx.datasync()?;
        }
        cx.datasync()?;
        let mut hb = [0u8; 12];
        hb[..4].copy_from_slice(&(snaps.len() as u32).to_be_bytes());
        hb[4..].copy_from_slice(&new_off.to_be_bytes());
        cx.pwrite(&hb, 60)?;
        cx.datasync()?;
        self.h.nb_snapshots = snaps.len() as u32;
        self.h.snapshots_offset = new_off;
        self.snapshots = snaps;
        if had {
            for i in 0..old_len.div_ceil(cs) {
                self.pending_frees.push(old_off + i * cs);
            }
        }
        Ok(())
    }
}

impl Qcow2 {
    fn find_snapshot(m: &Meta, name: &str) -> BlockResult<usize> {
        m.snapshots
            .iter()
            .position(|s| s.name == name)
            .or_else(|| m.snapshots.iter().position(|s| s.id == name))
            .ok_or_else(|| BlockError::Invalid(format!("snapshot '{name}' not found")))
    }

    /// Take an internal snapshot of the current disk state.
    pub fn snapshot_create(&self, name: &str) -> BlockResult<()> {
        self.writable()?;
        let cx = self.cx();
        let _g = self.io_exclusive()?;
        let mut m = self.lock_meta()?;
        if m.snapshots.iter().any(|s| s.name == name) {
            return Err(BlockError::Invalid(format!(
                "snapshot '{name}' already exists"
            )));
        }
        if m.h.refcount_order == 0 {
            return Err(BlockError::Unsupported(
                "snapshots need refcounts wider than 1 bit (refcount_bits >= 2)".into(),
            ));
        }
        if name.len() > 65535 {
            return Err(BlockError::Invalid("snapshot name too long".into()));
        }
        m.flush_meta(cx)?;
        let l1 = m.l1.clone();
        m.tree_refcount(cx, &l1, 1, true)?;
        m.flush_meta(cx)?;
        let copy = m.l1.clone();
        let l1_off = if copy.is_empty() {
            0
        } else {
            m.write_table_at(cx, &copy)?
        };
        let id = m
            .snapshots
            .iter()
            .filter_map(|s| s.id.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut snaps = m.snapshots.clone();
        snaps.push(Snapshot {
            l1_table_offset: l1_off,
            l1_size: copy.len() as u32,
            id: id.to_string(),
            name: name.to_string(),
            date_sec: now.as_secs() as u32,
            date_nsec: now.subsec_nanos(),
            vm_clock_nsec: 0,
            vm_state_size: 0,
            disk_size: Some(m.h.size),
            extra_tail: Vec::new(),
        });
        m.store_snapshots(cx, snaps)?;
        m.flush_meta(cx)
    }

    /// Revert the disk to a snapshot (the snapshot stays).
    pub fn snapshot_apply(&self, name: &str) -> BlockResult<()> {
        self.writable()?;
        let cx = self.cx();
        let cs = self.cluster_size();
        let _g = self.io_exclusive()?;
        let mut m = self.lock_meta()?;
        let s = m.snapshots[Self::find_snapshot(&m, name)?].clone();
        m.flush_meta(cx)?;
        let snap_l1 = m.read_l1_at(cx, s.l1_table_offset, s.l1_size)?;
        m.tree_refcount(cx, &snap_l1, 1, false)?;
        if m.write_dirty_rc(cx)? {
            cx.datasync()?;
        }
        let old = m.l1.clone();
        let size = s.disk_size.unwrap_or(m.h.size);
        let needed = (size.div_ceil(cs * m.l2_entries() as u64) as usize).max(snap_l1.len());
        let mut new_l1: Vec<u64> = snap_l1.iter().map(|e| e & !COPIED).collect();
        new_l1.resize(needed, 0);
        let cur_cap = (old.len() as u64 * 8).div_ceil(cs) * cs / 8;
        if new_l1.len() as u64 > cur_cap || m.h.l1_table_offset == 0 {
            let off = m.write_table_at(cx, &new_l1)?;
            let old_off = m.h.l1_table_offset;
            for i in 0..(old.len() as u64 * 8).div_ceil(cs) {
                m.pending_frees.push(old_off + i * cs);
            }
            m.h.l1_table_offset = off;
        }
        m.l1 = new_l1;
        m.h.l1_size = m.l1.len() as u32;
        m.h.size = size;
        m.write_l1(cx)?;
        cx.datasync()?;
        let mut b = [0u8; 24];
        b[0..8].copy_from_slice(&m.h.size.to_be_bytes());
        b[8..12].copy_from_slice(&m.h.crypt_method.to_be_bytes());
        b[12..16].copy_from_slice(&m.h.l1_size.to_be_bytes());
        b[16..24].copy_from_slice(&m.h.l1_table_offset.to_be_bytes());
        cx.pwrite(&b, 24)?;
        cx.datasync()?;
        m.tree_refcount(cx, &old, -1, false)?;
        m.fix_copied(cx)?;
        m.flush_meta(cx)?;
        self.size.store(size, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Delete a snapshot, releasing the clusters only it referenced.
    pub fn snapshot_delete(&self, name: &str) -> BlockResult<()> {
        self.writable()?;
        let cx = self.cx();
        let cs = self.cluster_size();
        let _g = self.io_exclusive()?;
        let mut m = self.lock_meta()?;
        let idx = Self::find_snapshot(&m, name)?;
        let s = m.snapshots[idx].clone();
        m.flush_meta(cx)?;
        let snap_l1 = m.read_l1_at(cx, s.l1_table_offset, s.l1_size)?;
        let mut snaps = m.snapshots.clone();
        snaps.remove(idx);
        m.store_snapshots(cx, snaps)?;
        m.flush_meta(cx)?;
        m.tree_refcount(cx, &snap_l1, -1, false)?;
        for i in 0..(u64::from(s.l1_size) * 8).div_ceil(cs) {
            m.add_refcount(cx, s.l1_table_offset / cs + i, -1)?;
        }
        m.fix_copied(cx)?;
        m.flush_meta(cx)
    }

    /// Deallocate every cluster so the image shows its backing file again (after commit).
    pub fn make_empty(&self) -> BlockResult<()> {
        self.writable()?;
        let cx = self.cx();
        let size = self.size();
        {
            let _g = self.io_exclusive()?;
            let mut m = self.lock_meta()?;
            m.unmap_clusters(cx, 0, size)?;
        }
        self.flush()
    }

    /// Change the backing file name and format recorded in the header (no data is copied).
    pub fn set_backing(&self, name: Option<&str>, fmt: Option<Format>) -> BlockResult<()> {
        self.writable()?;
        self.flush()?;
        let cx = self.cx();
        let mut m = self.lock_meta()?;
        let mut h = m.h.clone();
        h.backing_file = name.map(str::to_string);
        h.backing_format = name.and(fmt).map(|f| f.name().to_string());
        let buf = h.serialize()?;
        cx.pwrite(&buf, 0)?;
        cx.datasync()?;
        m.h = h;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{create, BlockBackend, CreateOptions, OpenOptions, Qcow2};

    #[test]
    fn snapshot_keeps_old_content_and_apply_restores_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.qcow2");
        create(
            &p,
            &CreateOptions {
                size: Some(4 << 20),
                cluster_size: 4096,
                ..Default::default()
            },
        )
        .unwrap();
        let q = Qcow2::open(&p, &OpenOptions::default()).unwrap();
        q.write_at(0, &[1u8; 10000]).unwrap();
        q.snapshot_create("one").unwrap();
        q.write_at(4096, &[2u8; 4096]).unwrap();
        let mut b = vec![0u8; 10000];
        q.read_at(0, &mut b).unwrap();
        assert!(b[..4096].iter().all(|&x| x == 1) && b[4096..8192].iter().all(|&x| x == 2));
        let r = q.check(None).unwrap();
        assert_eq!((r.corruptions, r.leaks), (0, 0), "{:?}", r.messages);
        q.snapshot_apply("one").unwrap();
        q.read_at(0, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 1));
        q.snapshot_delete("one").unwrap();
        let r = q.check(None).unwrap();
        assert_eq!((r.corruptions, r.leaks), (0, 0), "{:?}", r.messages);
        assert!(q.snapshots().unwrap().is_empty());
    }
}
