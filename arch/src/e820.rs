//! The guest's RAM layout: which ranges are backed by RAM and the e820 map that describes them.

use crate::layout::*;

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// One e820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// The guest-physical ranges `(start, length)` backed by RAM for a guest of `mem_size` bytes:
/// RAM up to the 3 GiB hole, the rest above 4 GiB.
pub fn ram_ranges(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_HOLE_START {
        vec![(RAM_START, mem_size)]
    } else {
        vec![
            (RAM_START, MMIO_HOLE_START),
            (HIGH_RAM_START, mem_size - MMIO_HOLE_START),
        ]
    }
}

/// End (exclusive) of the RAM below the 32-bit hole.
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO_HOLE_START)
}

/// End (exclusive) of all RAM: the highest guest-physical RAM address plus one.
pub fn ram_end(mem_size: u64) -> u64 {
    ram_ranges(mem_size).last().map(|(s, l)| s + l).unwrap_or(0)
}

/// The e820 map of a guest with `mem_size` bytes of RAM (at least 1 MiB + 1 byte, checked by
/// the caller): low RAM below the EBDA, the reserved BIOS area, RAM from 1 MiB, the PCIe ECAM
/// window reserved (Linux only trusts MMCONFIG that the firmware reserved) and RAM above 4 GiB.
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: RAM_START,
            size: EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    let low_end = low_ram_end(mem_size);
    if low_end > HIMEM_START {
        map.push(E820Entry {
            addr: HIMEM_START,
            size: low_end - HIMEM_START,
            kind: E820_RAM,
        });
    }
    map.push(E820Entry {
        addr: PCIE_ECAM_START,
        size: PCIE_ECAM_SIZE,
        kind: E820_RESERVED,
    });
    if mem_size > MMIO_HOLE_START {
        map.push(E820Entry {
            addr: HIGH_RAM_START,
            size: mem_size - MMIO_HOLE_START,
            kind: E820_RAM,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn small_guest_has_one_ram_range_and_no_high_ram() {
        assert_eq!(ram_ranges(512 * MIB), vec![(0, 512 * MIB)]);
        let map = e820_map(512 * MIB);
        assert_eq!(map.len(), 4);
        assert_eq!(
            map[0],
            E820Entry {
                addr: 0,
                size: 0x9fc00,
                kind: E820_RAM
            }
        );
        assert_eq!(
            map[1],
            E820Entry {
                addr: 0x9fc00,
                size: 0x100000 - 0x9fc00,
                kind: E820_RESERVED
            }
        );
        assert_eq!(
            map[2],
            E820Entry {
                addr: 0x100000,
                size: 511 * MIB,
                kind: E820_RAM
            }
        );
        assert_eq!(map[3].kind, E820_RESERVED);
        assert_eq!(ram_end(512 * MIB), 512 * MIB);
    }

    #[test]
    fn large_guest_splits_around_the_pci_hole() {
        let size = 5 * GIB;
        assert_eq!(ram_ranges(size), vec![(0, 3 * GIB), (4 * GIB, 2 * GIB)]);
        let map = e820_map(size);
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        // Everything but the reserved BIOS area below 1 MiB is usable RAM.
        assert_eq!(ram, size - (0x100000 - 0x9fc00));
        assert!(map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .all(|e| e.addr + e.size <= 3 * GIB || e.addr >= 4 * GIB));
        assert_eq!(
            map.last(),
            Some(&E820Entry {
                addr: 4 * GIB,
                size: 2 * GIB,
                kind: E820_RAM
            })
        );
        assert_eq!(ram_end(size), 6 * GIB);
    }

    #[test]
    fn exactly_three_gib_needs_no_high_range() {
        assert_eq!(ram_ranges(3 * GIB).len(), 1);
        assert!(e820_map(3 * GIB).iter().all(|e| e.addr < 4 * GIB));
        assert_eq!(
            ram_ranges(3 * GIB + 4096),
            vec![(0, 3 * GIB), (4 * GIB, 4096)]
        );
    }

    #[test]
    fn entries_are_sorted_and_disjoint() {
        for size in [2 * MIB, 512 * MIB, 3 * GIB, 8 * GIB] {
            let map = e820_map(size);
            for w in map.windows(2) {
                assert!(w[0].addr + w[0].size <= w[1].addr, "{size:#x}: {w:?}");
            }
        }
    }

    #[test]
    fn mmio64_window_starts_on_a_gib_boundary_above_ram() {
        assert_eq!(crate::layout::pci_mmio64_start(512 * MIB), 4 * GIB);
        assert_eq!(crate::layout::pci_mmio64_start(6 * GIB), 6 * GIB);
        assert_eq!(crate::layout::pci_mmio64_start(6 * GIB + 1), 7 * GIB);
    }
}
