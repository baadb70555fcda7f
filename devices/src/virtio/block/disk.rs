//! `--disk` options, opening the image behind them, and image locking.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, IoSliceMut};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use qcow::BlockBackend;

/// Errors of disk option parsing and opening.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The option string is malformed.
    #[error("invalid disk option '{0}': {1}")]
    Option(String, String),
    /// Another process (or another disk of this one) holds the image.
    #[error("image {0} is in use by another process (locked); stop it or use readonly=on on both")]
    Locked(PathBuf),
    /// Opening or locking failed.
    #[error("cannot open disk image {path}: {source}")]
    Io {
        /// The image path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The block engine refused the image.
    #[error("cannot open disk image {path}: {source}")]
    Image {
        /// The image path.
        path: PathBuf,
        /// The cause.
        source: qcow::BlockError,
    },
}

/// Image format as given by `format=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFormat {
    /// The file is the disk.
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
}

/// Host caching, as QEMU's `cache=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DiskCache {
    /// Host page cache; guest flushes fsync.
    #[default]
    Writeback,
    /// O_DIRECT, bypassing the host page cache; guest flushes fsync.
    None,
    /// Guest flushes are ignored (scratch disks, tests).
    Unsafe,
}

/// What to do with guest discards, as QEMU's `discard=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DiskDiscard {
    /// Do not offer discard (QEMU's default).
    #[default]
    Ignore,
    /// Offer discard and free the space in the image.
    Unmap,
}

/// One `--disk PATH[,format=qcow2|raw][,readonly=on][,cache=…][,serial=STR][,discard=…]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    /// Image path.
    pub path: PathBuf,
    /// Format; `None` detects qcow2 by its magic and treats anything else as raw (with a warning).
    pub format: Option<DiskFormat>,
    /// Refuse guest writes.
    pub readonly: bool,
    /// Host caching.
    pub cache: DiskCache,
    /// Serial number reported by GET_ID (at most 20 bytes).
    pub serial: Option<String>,
    /// Discard handling.
    pub discard: DiskDiscard,
}

/// Longest serial virtio-blk can report.
pub const SERIAL_LEN: usize = 20;

fn on_off(key: &str, v: &str, s: &str) -> Result<bool, DiskError> {
    match v {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        _ => Err(DiskError::Option(
            s.into(),
            format!("{key}= takes on or off"),
        )),
    }
}

impl FromStr for DiskConfig {
    type Err = DiskError;

    fn from_str(s: &str) -> Result<Self, DiskError> {
        let bad = |m: &str| DiskError::Option(s.into(), m.into());
        let mut parts = s.split(',');
        let first = parts.next().unwrap_or_default();
        let path = first.strip_prefix("path=").unwrap_or(first);
        if path.is_empty() {
            return Err(bad("the image path is missing (PATH[,option=value…])"));
        }
        let mut cfg = DiskConfig {
            path: PathBuf::from(path),
            format: None,
            readonly: false,
            cache: DiskCache::default(),
            serial: None,
            discard: DiskDiscard::default(),
        };
        for kv in parts {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| bad(&format!("'{kv}' is not key=value")))?;
            match k {
                "format" => {
                    cfg.format = Some(match v {
                        "raw" => DiskFormat::Raw,
                        "qcow2" => DiskFormat::Qcow2,
                        _ => return Err(bad("format= takes raw or qcow2")),
                    })
                }
                "readonly" => cfg.readonly = on_off(k, v, s)?,
                "cache" => {
                    cfg.cache = match v {
                        "writeback" => DiskCache::Writeback,
                        "none" => DiskCache::None,
                        "unsafe" => DiskCache::Unsafe,
                        _ => return Err(bad("cache= takes writeback, none or unsafe")),
                    }
                }
                "serial" => {
                    if v.len() > SERIAL_LEN || !v.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(bad("serial= takes up to 20 printable ASCII characters"));
                    }
                    cfg.serial = Some(v.to_string());
                }
                "discard" => {
                    cfg.discard = match v {
                        "unmap" | "on" => DiskDiscard::Unmap,
                        "ignore" | "off" => DiskDiscard::Ignore,
                        _ => return Err(bad("discard= takes unmap or ignore")),
                    }
                }
                _ => return Err(bad(&format!("unknown option '{k}'"))),
            }
        }
        Ok(cfg)
    }
}

/// An OFD lock on an image: exclusive for writers, shared for readers, released on drop.
///
/// OFD locks belong to the open file, so two opens conflict even inside one process, and they
/// are released when the process dies.
pub struct ImageLock {
    _file: File,
}

impl ImageLock {
    /// Lock `path` (without waiting): shared when `readonly`, exclusive otherwise.
    pub fn acquire(path: &Path, readonly: bool) -> Result<Self, DiskError> {
        let io = |source| DiskError::Io {
            path: path.to_path_buf(),
            source,
        };
        // A write lock needs a file opened for writing.
        let file = OpenOptions::new()
            .read(true)
            .write(!readonly)
            .open(path)
            .map_err(io)?;
        // SAFETY: flock is plain data; zeroed is a valid starting value.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = if readonly {
            libc::F_RDLCK
        } else {
            libc::F_WRLCK
        } as i16;
        fl.l_whence = libc::SEEK_SET as i16;
        fl.l_start = 0;
        fl.l_len = 1;
        // SAFETY: F_OFD_SETLK on an fd we own with a pointer to a live flock.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EACCES) => DiskError::Locked(path.to_path_buf()),
                _ => io(e),
            });
        }
        Ok(Self { _file: file })
    }
}

/// An open disk: the backend, its settings, and the lock that keeps others out.
pub struct Disk {
    /// Block I/O.
    pub backend: Arc<dyn BlockBackend>,
    /// The options it was opened with.
    pub config: DiskConfig,
    _lock: ImageLock,
    _backing_locks: Vec<ImageLock>,
}

impl DiskConfig {
    /// Lock and open the image.
    pub fn open(&self) -> Result<Disk, DiskError> {
        let lock = ImageLock::acquire(&self.path, self.readonly)?;
        let mut backing_locks = Vec::new();
        let img = |source| DiskError::Image {
            path: self.path.clone(),
            source,
        };
        let (format, probed) = match self.format {
            Some(f) => (f, false),
            None => (detect(&self.path)?, true),
        };
        let backend: Arc<dyn BlockBackend> = match format {
            // A probed raw disk must not become a qcow2 (with a backing file naming any host
            // file) by a guest writing the magic into its first sector.
            DiskFormat::Raw if probed => Arc::new(ProbedRaw(self.open_raw()?)),
            DiskFormat::Raw => Arc::new(self.open_raw()?),
            DiskFormat::Qcow2 => {
                let opts = qcow::OpenOptions {
                    read_only: self.readonly,
                    format: Some(qcow::Format::Qcow2),
                    cache: match self.cache {
                        // qcow2 metadata goes through the engine's own caches; data writes
                        // are made durable before they complete, as O_DIRECT would not
                        // promise but a cache=none user expects on power loss.
                        DiskCache::None => qcow::CacheMode::Writethrough,
                        DiskCache::Writeback => qcow::CacheMode::Writeback,
                        DiskCache::Unsafe => qcow::CacheMode::Unsafe,
                    },
                    ..qcow::OpenOptions::default()
                };
                let q = qcow::Qcow2::open(&self.path, &opts).map_err(img)?;
                // Backing files are read through: share-lock them so that no other VM opens
                // one writable underneath us (and we refuse one that is open writable).
                for link in q.backing_chain() {
                    backing_locks.push(ImageLock::acquire(&link.path, true)?);
                }
                Arc::new(q)
            }
        };
        Ok(Disk {
            backend,
            config: self.clone(),
            _lock: lock,
            _backing_locks: backing_locks,
        })
    }
}

impl DiskConfig {
    fn open_raw(&self) -> Result<qcow::RawFile, DiskError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| DiskError::Io {
            path: self.path.clone(),
            source,
        };
        let mut o = OpenOptions::new();
        o.read(true).write(!self.readonly);
        let file = if self.cache == DiskCache::None {
            match o.clone().custom_flags(libc::O_DIRECT).open(&self.path) {
                Ok(f) => f,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    log::warn!(
                        "{}: the host file system refuses O_DIRECT; cache=none falls back to \
                         the page cache",
                        self.path.display()
                    );
                    o.open(&self.path).map_err(io)?
                }
                Err(e) => return Err(io(e)),
            }
        } else {
            o.open(&self.path).map_err(io)?
        };
        qcow::RawFile::from_file(file, self.readonly).map_err(|source| DiskError::Image {
            path: self.path.clone(),
            source,
        })
    }
}

/// The qcow2 magic at the start of an image.
const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// A raw image whose format was guessed: writes that would put an image-format magic at its
/// start are refused, as QEMU does for probed raw images.
struct ProbedRaw(qcow::RawFile);

impl BlockBackend for ProbedRaw {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn is_read_only(&self) -> bool {
        self.0.is_read_only()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> qcow::BlockResult<()> {
        self.0.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> qcow::BlockResult<()> {
        if offset < 4 {
            // Bytes of the magic this write would set; the rest comes from the disk.
            let mut head = [0u8; 4];
            self.0
                .read_at(0, &mut head[..(self.0.size().min(4) as usize)])?;
            for (i, b) in buf.iter().enumerate() {
                if let Some(h) = head.get_mut(offset as usize + i) {
                    *h = *b;
                }
            }
            if head == QCOW2_MAGIC {
                log::warn!(
                    "refused a guest write of the qcow2 magic to a raw disk opened without \
                     format=raw; give format=raw to allow it"
                );
                return Err(qcow::BlockError::Invalid(
                    "write would turn a probed raw image into a qcow2 image".into(),
                ));
            }
        }
        self.0.write_at(offset, buf)
    }
    fn read_vectored_at(&self, offset: u64, bufs: &mut [IoSliceMut<'_>]) -> qcow::BlockResult<()> {
        self.0.read_vectored_at(offset, bufs)
    }
    fn write_vectored_at(&self, offset: u64, bufs: &[IoSlice<'_>]) -> qcow::BlockResult<()> {
        if offset < 4 {
            // Check the magic on the joined data, so a refused write changes nothing.
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            return self.write_at(offset, &joined);
        }
        self.0.write_vectored_at(offset, bufs)
    }
    fn flush(&self) -> qcow::BlockResult<()> {
        self.0.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> qcow::BlockResult<()> {
        self.0.discard(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> qcow::BlockResult<()> {
        self.0.write_zeroes(offset, len)
    }
}

/// qcow2 if the file starts with the qcow2 magic, raw otherwise (with a warning, since a
/// guest could write that magic into a raw disk: give format= explicitly).
fn detect(path: &Path) -> Result<DiskFormat, DiskError> {
    use std::io::Read;
    let mut f = File::open(path).map_err(|source| DiskError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).unwrap_or(0);
    if n == 4 && magic == QCOW2_MAGIC {
        return Ok(DiskFormat::Qcow2);
    }
    log::warn!(
        "{}: no qcow2 magic, treating it as raw; give format=raw to silence this",
        path.display()
    );
    Ok(DiskFormat::Raw)
}
