//! Disk image engine for rvmm: raw and qcow2 images behind one [`BlockBackend`] trait.
//!
//! Usable without KVM — by the VMM's virtio-blk workers, by `rvmm-vhost`, by `rvmm-img` and by
//! tests on temporary files. No QEMU code is used at run time. Everything read from an image
//! file is treated as hostile: offsets and sizes are bounds-checked and a bad value fails the
//! request with an error, never a panic.
//!
//! Opening a disk (what virtio-blk and rvmm-vhost do):
//!
//! ```no_run
//! use qcow::{open_image, BlockBackend, Format, OpenOptions};
//! let disk = open_image(
//!     std::path::Path::new("disk.qcow2"),
//!     &OpenOptions { read_only: false, format: Some(Format::Qcow2), ..Default::default() },
//! )?;
//! let mut sector = [0u8; 512];
//! disk.read_at(0, &mut sector)?;
//! disk.flush()?; // on VIRTIO_BLK_T_FLUSH
//! # Ok::<(), qcow::BlockError>(())
//! ```
//!
//! The returned backend is `Send + Sync`; several worker threads may call it at once (reads and
//! writes into already-owned clusters run in parallel; allocation is serialised). Dropping the
//! last reference writes the metadata caches back and clears the dirty bit of lazy-refcount
//! images; call [`BlockBackend::flush`] to see errors.

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
