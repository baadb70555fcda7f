//! Video memory as the display model sees it, so the VMM can back it with guest memory (a KVM
//! memory slot with dirty logging) and tests with a plain buffer.

use std::sync::Arc;

use vm_memory::{MmapRegion, VolatileMemory};

/// Dirty-tracking granularity of [`HeapVram`] (a guest page).
pub const PAGE_SIZE: usize = 4096;

/// The VRAM behind BAR0 and the banked 0xA0000 window.
pub trait Vram: Send {
    /// Size in bytes.
    fn size(&self) -> usize;
    /// Copy bytes at `offset` into `out`; bytes past the end read as zero.
    fn read(&self, offset: usize, out: &mut [u8]);
    /// Store `data` at `offset`; bytes past the end are dropped.
    fn write(&mut self, offset: usize, data: &[u8]);
    /// Byte ranges `(start, end)` written since the previous call (guest writes through the
    /// memory slot included); `None` when unknown, which means "everything".
    fn take_dirty(&mut self) -> Option<Vec<(usize, usize)>>;
}

/// VRAM in a heap buffer that records which pages were written through [`Vram::write`].
pub struct HeapVram {
    data: Vec<u8>,
    dirty: Vec<bool>,
    any_dirty: bool,
}

impl HeapVram {
    /// Zeroed VRAM of `size` bytes.
    pub fn new(size: usize) -> Self {
        HeapVram {
            data: vec![0; size],
            dirty: vec![false; size.div_ceil(PAGE_SIZE)],
            any_dirty: false,
        }
    }
}

impl Vram for HeapVram {
    fn size(&self) -> usize {
        self.data.len()
    }

    fn read(&self, offset: usize, out: &mut [u8]) {
        out.fill(0);
        if offset < self.data.len() {
            let n = out.len().min(self.data.len() - offset);
            out[..n].copy_from_slice(&self.data[offset..offset + n]);
        }
    }

    fn write(&mut self, offset: usize, data: &[u8]) {
        if offset >= self.data.len() || data.is_empty() {
            return;
        }
        let n = data.len().min(self.data.len() - offset);
        self.data[offset..offset + n].copy_from_slice(&data[..n]);
        for p in offset / PAGE_SIZE..=(offset + n - 1) / PAGE_SIZE {
            self.dirty[p] = true;
        }
        self.any_dirty = true;
    }

    fn take_dirty(&mut self) -> Option<Vec<(usize, usize)>> {
        let mut v: Vec<(usize, usize)> = Vec::new();
        if !std::mem::take(&mut self.any_dirty) {
            return Some(v);
        }
        for (p, d) in self.dirty.iter_mut().enumerate() {
            if std::mem::take(d) {
                let (s, e) = (p * PAGE_SIZE, ((p + 1) * PAGE_SIZE).min(self.data.len()));
                match v.last_mut() {
                    Some(last) if last.1 == s => last.1 = e,
                    _ => v.push((s, e)),
                }
            }
        }
        Some(v)
    }
}

/// Reports the byte ranges the guest wrote directly (e.g. KVM's dirty log of the VRAM slot);
/// `None` when unknown.
pub type DirtySource = Box<dyn FnMut() -> Option<Vec<(usize, usize)>> + Send>;

/// VRAM in a mapped region the VMM also registers as a KVM memory slot (BAR0): the guest
/// writes it directly, `dirty` reports those writes, and writes made by the device model
/// itself (banked window, clear on mode set) are tracked here.
pub struct RegionVram {
    region: Arc<MmapRegion<()>>,
    dirty: DirtySource,
    written: Vec<(usize, usize)>,
}

impl RegionVram {
    /// VRAM backed by `region`, with guest writes reported by `dirty`.
    pub fn new(region: Arc<MmapRegion<()>>, dirty: DirtySource) -> Self {
        RegionVram {
            region,
            dirty,
            written: Vec::new(),
        }
    }

    /// The mapping (to register as a memory slot).
    pub fn region(&self) -> &Arc<MmapRegion<()>> {
        &self.region
    }
}

impl Vram for RegionVram {
    fn size(&self) -> usize {
        self.region.size()
    }

    fn read(&self, offset: usize, out: &mut [u8]) {
        out.fill(0);
        let n = out.len().min(self.size().saturating_sub(offset));
        if n == 0 {
            return;
        }
        if let Ok(s) = self.region.get_slice(offset, n) {
            s.copy_to(&mut out[..n]);
        }
    }

    fn write(&mut self, offset: usize, data: &[u8]) {
        let n = data.len().min(self.size().saturating_sub(offset));
        if n == 0 {
            return;
        }
        if let Ok(s) = self.region.get_slice(offset, n) {
            s.copy_from(&data[..n]);
            match self.written.last_mut() {
                Some(last) if last.1 == offset => last.1 = offset + n,
                _ => self.written.push((offset, offset + n)),
            }
        }
    }

    fn take_dirty(&mut self) -> Option<Vec<(usize, usize)>> {
        let mut all = (self.dirty)()?;
        all.append(&mut self.written);
        all.sort_unstable();
        Some(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_vram_merges_guest_and_model_writes() {
        let region = Arc::new(MmapRegion::<()>::new(4 * PAGE_SIZE).unwrap());
        let reports = Arc::new(std::sync::Mutex::new(vec![
            Some(vec![(PAGE_SIZE, 2 * PAGE_SIZE)]),
            None,
        ]));
        let r2 = reports.clone();
        let mut v = RegionVram::new(
            region.clone(),
            Box::new(move || {
                let mut q = r2.lock().unwrap();
                if q.is_empty() {
                    Some(vec![])
                } else {
                    q.remove(0)
                }
            }),
        );
        // The guest writes through the mapping; the model sees it.
        region
            .as_volatile_slice()
            .subslice(100, 3)
            .unwrap()
            .copy_from(&[1u8, 2, 3]);
        let mut b = [0u8; 4];
        v.read(100, &mut b);
        assert_eq!(b, [1, 2, 3, 0]);
        v.write(4 * PAGE_SIZE - 2, &[9, 9, 9]);
        assert_eq!(
            v.take_dirty(),
            Some(vec![
                (PAGE_SIZE, 2 * PAGE_SIZE),
                (4 * PAGE_SIZE - 2, 4 * PAGE_SIZE)
            ])
        );
        // Unknown dirty state means "everything".
        assert_eq!(v.take_dirty(), None);
        assert_eq!(v.take_dirty(), Some(vec![]));
        v.read(4 * PAGE_SIZE + 10, &mut b);
        assert_eq!(b, [0; 4]);
    }

    #[test]
    fn tracks_written_pages_and_bounds() {
        let mut v = HeapVram::new(3 * PAGE_SIZE);
        assert_eq!(v.take_dirty(), Some(vec![]));
        v.write(PAGE_SIZE - 1, &[1, 2]);
        v.write(3 * PAGE_SIZE - 1, &[7, 8, 9]);
        assert_eq!(v.take_dirty(), Some(vec![(0, 3 * PAGE_SIZE)]));
        assert_eq!(v.take_dirty(), Some(vec![]));
        let mut b = [0xaau8; 4];
        v.read(3 * PAGE_SIZE - 2, &mut b);
        assert_eq!(b, [0, 7, 0, 0]);
    }
}
