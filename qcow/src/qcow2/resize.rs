//! Changing the virtual size of a qcow2 image (`rvmm-img resize`).

use std::sync::atomic::Ordering;

use super::{Qcow2, OFFSET_MASK};
use crate::backend::{BlockBackend, BlockError, BlockResult};

impl Qcow2 {
    /// Grow or (with `shrink`) shrink the virtual disk to `new_size` bytes (rounded up to 512).
    pub fn resize(&self, new_size: u64, shrink: bool) -> BlockResult<()> {
        self.writable()?;
        if new_size > 1 << 62 {
            return Err(BlockError::Invalid(format!(
                "size {new_size} is too large (at most 4 EiB)"
            )));
        }
        let new_size = new_size.div_ceil(512) * 512;
        let old_size = self.size();
        if new_size < old_size && !shrink {
            return Err(BlockError::Invalid(
                "shrinking the image would drop data; use --shrink to confirm".into(),
            ));
        }
        let cs = self.cluster_size();
        let cx = self.cx();
        let _g = self.io_exclusive()?;
        let mut m = self.lock_meta()?;
        if !m.snapshots.is_empty() && new_size < old_size {
            return Err(BlockError::Unsupported(
                "shrinking an image with internal snapshots; delete them first".into(),
            ));
        }
        if new_size < old_size {
            // Free the clusters past the new end.
            m.unmap_clusters(cx, new_size.div_ceil(cs) * cs, old_size)?;
            let per_l1 = cs * m.l2_entries() as u64;
            let keep = new_size.div_ceil(per_l1) as usize;
            for i in keep..m.l1.len() {
                let e = m.l1[i] & OFFSET_MASK;
                if e != 0 {
                    m.l1[i] = 0;
                    m.pending_frees.push(e);
                }
            }
            m.l1_dirty = true;
            m.flush_meta(cx)?;
        }
        let per_l1 = cs * m.l2_entries() as u64;
        let needed = new_size.div_ceil(per_l1) as usize;
        if needed > m.l1.len() {
            if needed as u64 * 8 > super::header::MAX_L1_BYTES {
                return Err(BlockError::Invalid(format!(
                    "a {new_size} byte disk needs an L1 table over 32 MiB; use larger clusters"
                )));
            }
            m.flush_meta(cx)?;
            let clusters = (needed as u64 * 8).div_ceil(cs);
            let entries = (clusters * cs / 8) as usize;
            let new_off = m.alloc_clusters(cx, clusters)?;
            let mut l1 = m.l1.clone();
            l1.resize(needed, 0);
            let mut b = vec![0u8; entries * 8];
            for (i, e) in l1.iter().enumerate() {
                b[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
            }
            cx.pwrite(&b, new_off)?;
            m.write_dirty_rc(cx)?;
            cx.datasync()?;
            let old_off = m.h.l1_table_offset;
            let old_clusters = (m.l1.len() as u64 * 8).div_ceil(cs);
            m.h.l1_table_offset = new_off;
            m.h.l1_size = needed as u32;
            m.h.size = new_size;
            m.l1 = l1;
            write_size_fields(&mut m, cx)?;
            cx.datasync()?;
            for i in 0..old_clusters {
                m.pending_frees.push(old_off + i * cs);
            }
            m.flush_meta(cx)?;
        } else {
            m.h.size = new_size;
            write_size_fields(&mut m, cx)?;
            cx.datasync()?;
        }
        self.size.store(new_size, Ordering::Relaxed);
        Ok(())
    }
}

/// Write size, L1 size and L1 offset (bytes 24..48 of the header, one sector).
fn write_size_fields(m: &mut super::Meta, cx: super::Ctx) -> BlockResult<()> {
    let mut b = [0u8; 24];
    b[0..8].copy_from_slice(&m.h.size.to_be_bytes());
    b[8..12].copy_from_slice(&m.h.crypt_method.to_be_bytes());
    b[12..16].copy_from_slice(&m.h.l1_size.to_be_bytes());
    b[16..24].copy_from_slice(&m.h.l1_table_offset.to_be_bytes());
    cx.pwrite(&b, 24)
}
