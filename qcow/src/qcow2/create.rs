//! Creating new qcow2 images (as `qemu-img create -f qcow2`).

use std::fs::OpenOptions as FsOpen;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::header::{self, CompressionType, Header};
use super::{Mapping, OpenFlags, Qcow2, COPIED};
use crate::backend::{BlockBackend, BlockError, BlockResult};
use crate::open::{CacheMode, Format, OpenOptions};

/// Host space reservation of a new image (qemu-img `preallocation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preallocation {
    /// Allocate nothing up front.
    #[default]
    Off,
    /// Allocate L2 tables and data clusters (sparse file).
    Metadata,
    /// As metadata, and reserve the file's blocks with fallocate.
    Falloc,
    /// As metadata, and write zeroes to every data cluster.
    Full,
}

impl Preallocation {
    /// Parse a qemu-img preallocation name.
    pub fn from_name(s: &str) -> BlockResult<Self> {
        Ok(match s {
            "off" => Self::Off,
            "metadata" => Self::Metadata,
            "falloc" => Self::Falloc,
            "full" => Self::Full,
            _ => {
                return Err(BlockError::Invalid(format!(
                    "preallocation '{s}' (expected off, metadata, falloc or full)"
                )))
            }
        })
    }
}

/// Parameters of a new qcow2 image.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Virtual size in bytes (rounded up to 512); `None` takes the backing file's size.
    pub size: Option<u64>,
    /// Cluster size, a power of two from 512 B to 2 MiB.
    pub cluster_size: u64,
    /// Version 3 (compat 1.1) when true, version 2 (compat 0.10) when false.
    pub v3: bool,
    /// Refcount width: 1, 2, 4, 8, 16, 32 or 64 (v2: 16 only).
    pub refcount_bits: u32,
    /// Set the lazy refcounts compatible feature (v3 only).
    pub lazy_refcounts: bool,
    /// Space reservation.
    pub preallocation: Preallocation,
    /// Compression algorithm for compressed clusters (zstd needs v3).
    pub compression_type: CompressionType,
    /// Backing file name as stored in the header.
    pub backing_file: Option<String>,
    /// Backing file format stored in the header extension.
    pub backing_format: Option<Format>,
    /// 128-bit L2 entries with subcluster bitmaps (v3, clusters of 16 KiB or more).
    pub extended_l2: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            size: None,
            cluster_size: 65536,
            v3: true,
            refcount_bits: 16,
            lazy_refcounts: false,
            preallocation: Preallocation::Off,
            compression_type: CompressionType::Zlib,
            backing_file: None,
            backing_format: None,
            extended_l2: false,
        }
    }
}

fn invalid(msg: impl Into<String>) -> BlockError {
    BlockError::Invalid(msg.into())
}

/// Create a qcow2 image at `path` (overwriting an existing file).
pub fn create(path: &Path, o: &CreateOptions) -> BlockResult<()> {
    let cs = o.cluster_size;
    if !cs.is_power_of_two() || !(512..=2 << 20).contains(&cs) {
        return Err(invalid(format!(
            "cluster size {cs}: must be a power of two between 512 and 2097152"
        )));
    }
    if !o.refcount_bits.is_power_of_two() || o.refcount_bits > 64 {
        return Err(invalid(format!(
            "refcount_bits {}: must be a power of two up to 64",
            o.refcount_bits
        )));
    }
    if !o.v3 {
        if o.refcount_bits != 16 {
            return Err(invalid("compat=0.10 images only support refcount_bits=16"));
        }
        if o.lazy_refcounts {
            return Err(invalid("lazy refcounts need compat=1.1"));
        }
        if o.compression_type != CompressionType::Zlib {
            return Err(invalid("compression_type=zstd needs compat=1.1"));
        }
    }
    if o.extended_l2 && !o.v3 {
        return Err(invalid(
            "Extended L2 entries are only supported with compatibility level 1.1 and above \
             (use version=v3 or greater)",
        ));
    }
    if o.extended_l2 && cs < 16384 {
        return Err(invalid(
            "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes",
        ));
    }
    if o.backing_file.is_none() && o.backing_format.is_some() {
        return Err(invalid("a backing format was given without a backing file"));
    }
    if o.backing_file.is_some() && o.preallocation != Preallocation::Off {
        return Err(invalid(
            "preallocation is not supported together with a backing file",
        ));
    }
    let size = match (o.size, &o.backing_file) {
        (Some(s), _) => s,
        (None, Some(b)) => {
            let (bpath, bfmt) =
                super::resolve_backing(path, b, o.backing_format.map(|f| f.name()))?;
            let opts = OpenOptions {
                read_only: true,
                format: Some(bfmt),
                ..Default::default()
            };
            crate::open::open_image(&bpath, &opts)?.size()
        }
        (None, None) => return Err(invalid("an image size is required")),
    };
    if size > 1 << 62 {
        return Err(invalid(format!("size {size} is too large (at most 4 EiB)")));
    }
    let size = size.div_ceil(512) * 512;
    let cluster_bits = cs.trailing_zeros();
    let order = o.refcount_bits.trailing_zeros();
    let mut h = Header {
        version: if o.v3 { 3 } else { 2 },
        backing_file_offset: 0,
        backing_file_size: 0,
        cluster_bits,
        size: 0,
        crypt_method: 0,
        l1_size: 0,
        l1_table_offset: 0,
        refcount_table_offset: cs,
        refcount_table_clusters: 1,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible: (if o.compression_type != CompressionType::Zlib {
            header::INCOMPAT_COMPRESSION
        } else {
            0
        }) | if o.extended_l2 {
            header::INCOMPAT_EXTL2
        } else {
            0
        },
        compatible: if o.lazy_refcounts {
            header::COMPAT_LAZY_REFCOUNTS
        } else {
            0
        },
        autoclear: 0,
        refcount_order: order,
        header_length: 0,
        compression_type: o.compression_type,
        extra_header: Vec::new(),
        backing_file: o.backing_file.clone(),
        backing_format: o.backing_format.map(|f| f.name().to_string()),
        feature_names: if o.v3 {
            header::default_feature_names()
        } else {
            Vec::new()
        },
        other_extensions: Vec::new(),
    };
    let hb = h.serialize()?;
    let file = FsOpen::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|source| BlockError::Io {
            context: format!("create {}", path.display()),
            source,
        })?;
    let werr = |source| BlockError::Io {
        context: format!("write new image {}", path.display()),
        source,
    };
    file.write_all_at(&hb, 0).map_err(werr)?;
    let mut rt = vec![0u8; cs as usize];
    rt[..8].copy_from_slice(&(2 * cs).to_be_bytes());
    file.write_all_at(&rt, cs).map_err(werr)?;
    let mut rb = vec![0u8; cs as usize];
    for i in 0..3 {
        super::refcount::set(&mut rb, order, i, 1);
    }
    file.write_all_at(&rb, 2 * cs).map_err(werr)?;
    drop(file);
    // Grow from size 0 through the engine, which lays out the L1 table and refcounts.
    let opts = OpenOptions {
        read_only: false,
        format: Some(Format::Qcow2),
        cache: CacheMode::Writeback,
        ..Default::default()
    };
    let q = Qcow2::open_with(
        path,
        &opts,
        OpenFlags {
            allow_dirty: false,
            no_backing: true,
        },
    )?;
    q.resize(size, false)?;
    if o.preallocation != Preallocation::Off {
        q.preallocate(o.preallocation)?;
    }
    q.close()
}

impl Qcow2 {
    /// Allocate every guest cluster (preallocation=metadata|falloc|full).
    pub fn preallocate(&self, mode: Preallocation) -> BlockResult<()> {
        let cs = self.cluster_size();
        let size = self.size();
        let cx = self.cx();
        let mut end = 0u64;
        {
            let _g = self.io_exclusive()?;
            let mut m = self.lock_meta()?;
            let per_l2 = m.l2_entries() as u64;
            let mut cl = 0u64;
            while cl < size {
                let l2 = m.writable_l2(cx, cl)?;
                let n = ((size - cl).div_ceil(cs)).min(per_l2 - ((cl / cs) % per_l2));
                let mut i = 0;
                while i < n {
                    let goff = cl + i * cs;
                    if m.lookup(cx, goff)? != Mapping::Unallocated {
                        i += 1;
                        continue;
                    }
                    let run = (n - i).min(m.rpb() / 2).max(1);
                    let host = m.alloc_clusters(cx, run)?;
                    for j in 0..run {
                        let g = goff + j * cs;
                        let (_, l2i) = m.indices(g);
                        if m.ext() {
                            // Preallocated but unallocated subclusters: reads still fall
                            // through to the backing file (as QEMU's preallocation).
                            m.l2_set_ext(cx, l2, l2i, (host + j * cs) | COPIED, 0)?;
                        } else {
                            m.l2_set(cx, l2, l2i, (host + j * cs) | COPIED)?;
                        }
                    }
                    if mode != Preallocation::Metadata {
                        self.reserve(host, run * cs, mode == Preallocation::Full)?;
                    }
                    end = end.max(host + run * cs);
                    i += run;
                }
                cl += n * cs;
            }
        }
        self.flush()?;
        if self.file_length()? < end {
            self.file.set_len(end).map_err(|source| BlockError::Io {
                context: format!("extend {}", self.path.display()),
                source,
            })?;
        }
        Ok(())
    }

    fn reserve(&self, off: u64, len: u64, write_zeroes: bool) -> BlockResult<()> {
        use std::os::unix::io::AsRawFd;
        if !write_zeroes {
            // SAFETY: fallocate on our own fd with integer arguments.
            let r = unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    0,
                    off as libc::off_t,
                    len as libc::off_t,
                )
            };
            if r == 0 {
                return Ok(());
            }
        }
        let z = vec![0u8; (1 << 20).min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(z.len() as u64) as usize;
            self.file
                .write_all_at(&z[..n], off + done)
                .map_err(|source| BlockError::Io {
                    context: format!("preallocate {}", self.path.display()),
                    source,
                })?;
            done += n as u64;
        }
        Ok(())
    }
}
