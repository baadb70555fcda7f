//! Disk image engine of rvmm: raw and qcow2 (versions 2 and 3) behind one block backend API.
//!
//! Used by the VMM's virtio-blk workers, by `rvmm-vhost` and by `rvmm-img`; it needs no VM and
//! contains no QEMU code. Every offset and size read from an image file is bounds-checked, so a
//! hostile image yields an error, never a panic, a hang or an unbounded allocation.
