//! Guest RAM: anonymous (optionally huge-page) mappings laid out around the PCI hole and
//! registered with KVM, plus extra slots (for example VRAM with dirty logging).

use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap, MmapRegion};

use devices::GuestMemoryMmap;

/// Map `size` bytes of anonymous memory: private and MAP_NORESERVE (host RAM is only used as
/// the guest touches it) — or, with huge pages, reserved up front, so that a shortage of huge
/// pages fails here instead of as a SIGBUS when the guest touches memory.
pub fn map_anonymous(size: usize, hugepages: bool) -> Result<MmapRegion<()>> {
    let flags = if hugepages {
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB
    } else {
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE
    };
    vm_memory::mmap::MmapRegionBuilder::new(size)
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(flags)
        .build()
        .with_context(|| {
            if hugepages {
                format!(
                    "cannot map {} MiB of huge pages for guest RAM: reserve enough 2 MiB pages \
                     (echo N > /proc/sys/vm/nr_hugepages) or drop --hugepages",
                    size >> 20
                )
            } else {
                format!(
                    "cannot map {} MiB for guest RAM: use a smaller --memory",
                    size >> 20
                )
            }
        })
}

/// Create guest RAM for `mem_size` bytes, laid out as `arch::e820::ram_ranges` says.
pub fn create_guest_memory(mem_size: u64, hugepages: bool) -> Result<GuestMemoryMmap> {
    let mut regions = Vec::new();
    for (start, len) in arch::e820::ram_ranges(mem_size) {
        let len = usize::try_from(len).context("guest RAM size does not fit in usize")?;
        let map = map_anonymous(len, hugepages)?;
        // Transparent huge pages where the host offers them on request (as QEMU asks too):
        // O_DIRECT disk I/O pins and maps guest buffers far faster (1 MiB virtio-blk +40%).
        // SAFETY: advice only, on a live mapping we own; failure just means small pages.
        unsafe { libc::madvise(map.as_ptr().cast(), map.size(), libc::MADV_HUGEPAGE) };
        let r = GuestRegionMmap::new(map, GuestAddress(start))
            .context("guest RAM region wraps the address space")?;
        regions.push(r);
    }
    GuestMemoryMmap::from_regions(regions).context("cannot assemble the guest memory map")
}

/// Page size of KVM's dirty bitmaps.
pub const DIRTY_PAGE_SIZE: usize = 4096;

/// Turn a KVM dirty bitmap (one bit per 4 KiB page, LSB first) of a region of `size` bytes
/// into merged byte ranges `(start, end)`.
pub fn dirty_ranges(bitmap: &[u64], size: usize) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (w, bits) in bitmap.iter().enumerate() {
        let mut b = *bits;
        while b != 0 {
            let bit = b.trailing_zeros() as usize;
            b &= b - 1;
            let start = (w * 64 + bit) * DIRTY_PAGE_SIZE;
            if start >= size {
                break;
            }
            let end = (start + DIRTY_PAGE_SIZE).min(size);
            match out.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => out.push((start, end)),
            }
        }
    }
    out
}

struct SlotState {
    next: u32,
    max: u32,
}

/// Hands out KVM memory slot numbers and registers regions. Cheap to clone: clones share the
/// slot allocator, so a device (for example a VGA BAR being moved) can hold one.
#[derive(Clone)]
pub struct MemorySlots {
    vm: Arc<VmFd>,
    state: Arc<Mutex<SlotState>>,
}

/// An extra region mapped into the guest outside RAM. Dropping it removes the slot from the
/// guest before the host mapping goes away.
pub struct ExtraRegion {
    vm: Arc<VmFd>,
    /// KVM slot number.
    pub slot: u32,
    /// Guest-physical base.
    pub guest_addr: u64,
    /// The host mapping (kept alive as long as the slot exists).
    pub mapping: Arc<MmapRegion<()>>,
    /// Whether KVM tracks writes to it.
    pub dirty_log: bool,
}

impl Drop for ExtraRegion {
    fn drop(&mut self) {
        let region = kvm_userspace_memory_region {
            slot: self.slot,
            flags: 0,
            guest_phys_addr: self.guest_addr,
            memory_size: 0,
            userspace_addr: self.mapping.as_ptr() as u64,
        };
        // SAFETY: a zero-sized region deletes the slot; KVM stops using the mapping, which is
        // still alive here.
        if let Err(e) = unsafe { self.vm.set_user_memory_region(region) } {
            log::warn!("cannot remove KVM memory slot {}: {e}", self.slot);
        }
    }
}

impl ExtraRegion {
    fn flags(&self) -> u32 {
        if self.dirty_log {
            KVM_MEM_LOG_DIRTY_PAGES
        } else {
            0
        }
    }
}

impl MemorySlots {
    /// Slot allocator for `vm`, which supports `max` slots.
    pub fn new(vm: Arc<VmFd>, max: u32) -> Self {
        Self {
            vm,
            state: Arc::new(Mutex::new(SlotState { next: 0, max })),
        }
    }

    fn alloc(&self) -> Result<u32> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.next >= s.max {
            bail!("out of KVM memory slots ({} in use)", s.next);
        }
        s.next += 1;
        Ok(s.next - 1)
    }

    fn set(&self, slot: u32, guest_addr: u64, size: u64, host: u64, flags: u32) -> Result<()> {
        let region = kvm_userspace_memory_region {
            slot,
            flags,
            guest_phys_addr: guest_addr,
            memory_size: size,
            userspace_addr: host,
        };
        // SAFETY: the host range is a live mapping owned by the guest memory map (which lives
        // as long as the VM) or by an `ExtraRegion`, which deletes its slot when dropped.
        unsafe { self.vm.set_user_memory_region(region) }.with_context(|| {
            format!("KVM_SET_USER_MEMORY_REGION slot {slot} at {guest_addr:#x}+{size:#x} failed")
        })
    }

    /// Register every region of guest RAM.
    pub fn register_ram(&self, mem: &GuestMemoryMmap) -> Result<()> {
        for r in mem.iter() {
            let slot = self.alloc()?;
            let host = r.as_ptr() as u64;
            self.set(slot, r.start_addr().0, r.len(), host, 0)?;
        }
        Ok(())
    }

    /// Map `size` bytes of fresh anonymous memory at `guest_addr` (for example VRAM),
    /// with KVM dirty-page logging if `dirty_log`.
    pub fn add_region(&self, guest_addr: u64, size: usize, dirty_log: bool) -> Result<ExtraRegion> {
        let mapping = Arc::new(map_anonymous(size, false)?);
        let region = ExtraRegion {
            vm: self.vm.clone(),
            slot: self.alloc()?,
            guest_addr,
            mapping,
            dirty_log,
        };
        self.set(
            region.slot,
            guest_addr,
            size as u64,
            region.mapping.as_ptr() as u64,
            region.flags(),
        )?;
        Ok(region)
    }

    fn unmap(&self, region: &ExtraRegion) -> Result<()> {
        self.set(
            region.slot,
            region.guest_addr,
            0,
            region.mapping.as_ptr() as u64,
            0,
        )
    }

    /// Move `region` to `new_addr` (for example when the guest reprograms a BAR): KVM needs
    /// the slot deleted and created again at the new address.
    pub fn move_region(&self, region: &mut ExtraRegion, new_addr: u64) -> Result<()> {
        if region.guest_addr == new_addr {
            return Ok(());
        }
        self.unmap(region)?;
        let size = region.mapping.size() as u64;
        self.set(
            region.slot,
            new_addr,
            size,
            region.mapping.as_ptr() as u64,
            region.flags(),
        )?;
        region.guest_addr = new_addr;
        Ok(())
    }

    /// The dirty-page bitmap of `region` since the last call (one bit per 4 KiB page).
    pub fn dirty_log(&self, region: &ExtraRegion) -> Result<Vec<u64>> {
        if !region.dirty_log {
            bail!("slot {} was registered without dirty logging", region.slot);
        }
        self.vm
            .get_dirty_log(region.slot, region.mapping.size())
            .with_context(|| format!("KVM_GET_DIRTY_LOG on slot {} failed", region.slot))
    }

    /// A closure returning the byte ranges of `region` the guest wrote since the previous call
    /// (`None` if KVM cannot tell, meaning "assume everything"), for display models.
    pub fn dirty_source(
        &self,
        region: &ExtraRegion,
    ) -> impl FnMut() -> Option<Vec<(usize, usize)>> + Send + 'static {
        let vm = self.vm.clone();
        let (slot, size, logged) = (region.slot, region.mapping.size(), region.dirty_log);
        move || {
            if !logged {
                return None;
            }
            match vm.get_dirty_log(slot, size) {
                Ok(bitmap) => Some(dirty_ranges(&bitmap, size)),
                Err(e) => {
                    log::debug!("KVM_GET_DIRTY_LOG on slot {slot} failed: {e}");
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn dirty_bitmaps_become_merged_byte_ranges() {
        assert_eq!(dirty_ranges(&[0], 1 << 20), vec![]);
        // Pages 0, 1, 2 and 5 dirty; page 64 (second word) too.
        assert_eq!(
            dirty_ranges(&[0b100111, 1], 1 << 20),
            vec![(0, 3 * 4096), (5 * 4096, 6 * 4096), (64 * 4096, 65 * 4096)]
        );
        // Bits past the region's end are ignored and the last page is clipped.
        assert_eq!(dirty_ranges(&[0b11], 4096 + 100), vec![(0, 4196)]);
        assert_eq!(dirty_ranges(&[u64::MAX], 2 * 4096), vec![(0, 8192)]);
    }

    #[test]
    fn extra_regions_register_move_and_report_dirty_pages_with_kvm() {
        let kvm = kvm_ioctls::Kvm::new().expect("this test needs /dev/kvm");
        let vm = Arc::new(kvm.create_vm().unwrap());
        let slots = MemorySlots::new(vm, 32);
        let ram = create_guest_memory(16 << 20, false).unwrap();
        slots.register_ram(&ram).unwrap();
        let mut vram = slots.add_region(0xc000_0000, 1 << 20, true).unwrap();
        assert_eq!(vram.slot, 1);
        let mut dirty = slots.dirty_source(&vram);
        // Nothing ran, so nothing is dirty.
        assert_eq!(dirty(), Some(vec![]));
        assert!(slots.dirty_log(&vram).unwrap().iter().all(|w| *w == 0));
        slots.move_region(&mut vram, 0xc100_0000).unwrap();
        assert_eq!(vram.guest_addr, 0xc100_0000);
        drop(vram);
        let plain = slots.add_region(0xd000_0000, 4096, false).unwrap();
        assert!(slots.dirty_log(&plain).is_err());
        assert_eq!(slots.dirty_source(&plain)(), None);
    }

    #[test]
    fn ram_above_3g_goes_above_4g_and_is_readable() {
        let mem = create_guest_memory(3 * (1 << 30) + (64 << 20), false).unwrap();
        assert_eq!(mem.num_regions(), 2);
        mem.write_obj(0x1234u32, GuestAddress(0x1_0000_0000))
            .unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x1_0000_0000)).unwrap(),
            0x1234
        );
        assert!(
            mem.read_obj::<u32>(GuestAddress(0xC000_0000)).is_err(),
            "hole is unbacked"
        );
        assert!(mem.read_obj::<u8>(GuestAddress(0xBFFF_FFFF)).is_ok());
    }
}
