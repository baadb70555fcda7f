//! Disk image engine for rvmm: raw and qcow2 images behind one [`BlockBackend`] trait.
//!
//! Usable without KVM — by the VMM's virtio-blk workers, by `rvmm-vhost`, by `rvmm-img` and by
//! tests on temporary files. No QEMU code is used at run time. Everything read from an image
//! file is treated as hostile: offsets and sizes are bounds-checked and a bad value fails the
//! request with an error, never a panic.

pub mod backend;
pub mod open;
pub mod qcow2;
pub mod raw;

pub use backend::{BlockBackend, BlockError, BlockResult, Extent};
pub use open::{detect_format, open_image, CacheMode, Format, OpenOptions};
pub use qcow2::check::{CheckReport, Repair};
pub use qcow2::create::{create, CreateOptions, Preallocation};
pub use qcow2::header::CompressionType;
pub use qcow2::{Mapping, Qcow2};
pub use raw::RawFile;
