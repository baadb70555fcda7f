//! Reading and writing refcount entries of any width (1 to 64 bits) inside a refcount block.

/// Refcount `index` of a block whose entries are `1 << order` bits wide.
pub fn get(block: &[u8], order: u32, index: usize) -> u64 {
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let per_byte = 8 / bits;
            let byte = block[index / per_byte];
            let shift = (index % per_byte) * bits;
            u64::from((byte >> shift) & ((1u16 << bits) - 1) as u8)
        }
        3 => u64::from(block[index]),
        4 => u64::from(u16::from_be_bytes([block[index * 2], block[index * 2 + 1]])),
        5 => {
            let o = index * 4;
            u64::from(u32::from_be_bytes([
                block[o],
                block[o + 1],
                block[o + 2],
                block[o + 3],
            ]))
        }
        _ => {
            let o = index * 8;
            let mut a = [0u8; 8];
            a.copy_from_slice(&block[o..o + 8]);
            u64::from_be_bytes(a)
        }
    }
}

/// Set refcount `index`; `value` must fit in the width (see [`max`]).
pub fn set(block: &mut [u8], order: u32, index: usize, value: u64) {
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let per_byte = 8 / bits;
            let shift = (index % per_byte) * bits;
            let mask = (((1u16 << bits) - 1) as u8) << shift;
            let b = &mut block[index / per_byte];
            *b = (*b & !mask) | (((value as u8) << shift) & mask);
        }
        3 => block[index] = value as u8,
        4 => block[index * 2..index * 2 + 2].copy_from_slice(&(value as u16).to_be_bytes()),
        5 => block[index * 4..index * 4 + 4].copy_from_slice(&(value as u32).to_be_bytes()),
        _ => block[index * 8..index * 8 + 8].copy_from_slice(&value.to_be_bytes()),
    }
}

/// Largest refcount the width holds.
pub fn max(order: u32) -> u64 {
    if order >= 6 {
        u64::MAX
    } else {
        (1u64 << (1u32 << order)) - 1
    }
}

/// Entries in one refcount block of `cluster_bits`.
pub fn entries_per_block(cluster_bits: u32, order: u32) -> u64 {
    1u64 << (cluster_bits + 3 - order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_widths_roundtrip_without_touching_neighbours() {
        for order in 0..=6u32 {
            let mut block = vec![0u8; 512];
            let n = entries_per_block(9, order) as usize;
            let m = max(order);
            for i in 0..n {
                set(&mut block, order, i, (i as u64 * 7 + 3) & m);
            }
            for i in 0..n {
                assert_eq!(
                    get(&block, order, i),
                    (i as u64 * 7 + 3) & m,
                    "order {order}"
                );
            }
            set(&mut block, order, 5, m);
            assert_eq!(get(&block, order, 5), m);
            assert_eq!(get(&block, order, 4), (4 * 7 + 3) & m);
            assert_eq!(get(&block, order, 6), (6 * 7 + 3) & m);
        }
        // 1-bit refcounts are packed least significant bit first, as QEMU does.
        let mut b = [0u8; 1];
        set(&mut b, 0, 1, 1);
        assert_eq!(b[0], 0b10);
    }
}
