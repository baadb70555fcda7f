//! Opening a disk image by path: format detection and backend selection.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::backend::{BlockBackend, BlockError, BlockResult};
use crate::qcow2::Qcow2;
use crate::raw::RawFile;

/// Image file formats the engine understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The file is the disk.
    Raw,
    /// QEMU copy-on-write version 2 (compat 0.10) or 3 (compat 1.1).
    Qcow2,
}

impl Format {
    /// The name qemu-img uses for this format.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }

    /// Parse a qemu-img format name (`raw`, `qcow2`).
    pub fn from_name(name: &str) -> BlockResult<Self> {
        match name {
            "raw" => Ok(Format::Raw),
            "qcow2" => Ok(Format::Qcow2),
            other => Err(BlockError::Unsupported(format!(
                "image format '{other}' (supported: raw, qcow2)"
            ))),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Host page-cache behaviour of an open image, as QEMU's `cache=` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// Writes complete into the host page cache; `flush` makes them durable.
    #[default]
    Writeback,
    /// Every write is made durable before it completes.
    Writethrough,
    /// `flush` only writes caches back to the file, without fsync (tests, scratch images).
    Unsafe,
}

/// How to open an image.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Refuse writes (and open the file read-only).
    pub read_only: bool,
    /// The expected format; `None` detects it from the qcow2 magic (raw otherwise).
    pub format: Option<Format>,
    /// Host cache behaviour.
    pub cache: CacheMode,
    /// Bytes of L2 tables to cache; `None` sizes the cache like QEMU (whole disk, at most 32 MiB).
    pub l2_cache_size: Option<u64>,
    /// Bytes of refcount blocks to cache; `None` means a quarter of the L2 cache.
    pub refcount_cache_size: Option<u64>,
}

/// Maximum length of a backing chain below the top image.
pub const MAX_BACKING_DEPTH: usize = 16;

/// Detect the format of the file at `path`: qcow2 if it starts with the qcow2 magic, raw otherwise.
pub fn detect_format(path: &Path) -> BlockResult<Format> {
    let mut f = File::open(path).map_err(|source| BlockError::Io {
        context: format!("open {} to detect its format", path.display()),
        source,
    })?;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match f.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(BlockError::Io {
                    context: format!("read {} to detect its format", path.display()),
                    source,
                })
            }
        }
    }
    if got == 4 && magic == crate::qcow2::header::QCOW2_MAGIC.to_be_bytes() {
        Ok(Format::Qcow2)
    } else {
        Ok(Format::Raw)
    }
}

/// Open the image at `path` as a block backend (qcow2 images with their backing chain).
pub fn open_image(path: &Path, opts: &OpenOptions) -> BlockResult<Arc<dyn BlockBackend>> {
    let format = match opts.format {
        Some(f) => f,
        None => {
            let f = detect_format(path)?;
            if f == Format::Raw {
                log::warn!(
                    "{}: no format given and no qcow2 magic found; opening it as raw. \
                     Give format=raw explicitly to silence this warning",
                    path.display()
                );
            }
            f
        }
    };
    Ok(match format {
        Format::Raw => Arc::new(RawFile::open(path, opts.read_only)?),
        Format::Qcow2 => Arc::new(Qcow2::open(path, opts)?),
    })
}
