//! Guest RAM: anonymous (optionally huge-page) mappings laid out around the PCI hole and
//! registered with KVM, plus extra slots (for example VRAM with dirty logging).

use std::sync::Arc;

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
        let r = GuestRegionMmap::new(map, GuestAddress(start))
            .context("guest RAM region wraps the address space")?;
        regions.push(r);
    }
    GuestMemoryMmap::from_regions(regions).context("cannot assemble the guest memory map")
}

/// Hands out KVM memory slot numbers and registers regions.
pub struct MemorySlots {
    vm: Arc<VmFd>,
    next: u32,
    max: u32,
}

/// An extra region mapped into the guest outside RAM.
pub struct ExtraRegion {
    /// KVM slot number.
    pub slot: u32,
    /// Guest-physical base.
    pub guest_addr: u64,
    /// The host mapping (kept alive as long as the slot exists).
    pub mapping: Arc<MmapRegion<()>>,
    /// Whether KVM tracks writes to it.
    pub dirty_log: bool,
}

impl MemorySlots {
    /// Slot allocator for `vm`, which supports `max` slots.
    pub fn new(vm: Arc<VmFd>, max: u32) -> Self {
        Self { vm, next: 0, max }
    }

    fn alloc(&mut self) -> Result<u32> {
        if self.next >= self.max {
            bail!("out of KVM memory slots ({} in use)", self.next);
        }
        self.next += 1;
        Ok(self.next - 1)
    }

    fn set(&self, slot: u32, guest_addr: u64, size: u64, host: u64, flags: u32) -> Result<()> {
        let region = kvm_userspace_memory_region {
            slot,
            flags,
            guest_phys_addr: guest_addr,
            memory_size: size,
            userspace_addr: host,
        };
        // SAFETY: the host range is a live mapping owned by the guest memory map or by an
        // `ExtraRegion`, both of which outlive the VM's use of the slot.
        unsafe { self.vm.set_user_memory_region(region) }.with_context(|| {
            format!("KVM_SET_USER_MEMORY_REGION slot {slot} at {guest_addr:#x}+{size:#x} failed")
        })
    }

    /// Register every region of guest RAM.
    pub fn register_ram(&mut self, mem: &GuestMemoryMmap) -> Result<()> {
        for r in mem.iter() {
            let slot = self.alloc()?;
            let host = r.as_ptr() as u64;
            self.set(slot, r.start_addr().0, r.len(), host, 0)?;
        }
        Ok(())
    }

    /// Map `size` bytes of fresh anonymous memory at `guest_addr` (for example VRAM),
    /// with KVM dirty-page logging if `dirty_log`.
    pub fn add_region(
        &mut self,
        guest_addr: u64,
        size: usize,
        dirty_log: bool,
    ) -> Result<ExtraRegion> {
        let mapping = Arc::new(map_anonymous(size, false)?);
        let slot = self.alloc()?;
        let flags = if dirty_log {
            KVM_MEM_LOG_DIRTY_PAGES
        } else {
            0
        };
        self.set(
            slot,
            guest_addr,
            size as u64,
            mapping.as_ptr() as u64,
            flags,
        )?;
        Ok(ExtraRegion {
            slot,
            guest_addr,
            mapping,
            dirty_log,
        })
    }

    /// Remove an extra region from the guest (the slot number is not reused).
    pub fn remove_region(&mut self, region: &ExtraRegion) -> Result<()> {
        self.set(
            region.slot,
            region.guest_addr,
            0,
            region.mapping.as_ptr() as u64,
            0,
        )
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

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
