//! The block backend interface every disk format implements.

use std::io::{self, IoSlice, IoSliceMut};

/// Errors of block I/O and image handling.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// Host I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (path, operation, offset).
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The request lies (partly) outside the virtual disk.
    #[error("request at offset {offset} length {len} is beyond the disk size {size}")]
    OutOfRange {
        /// Start of the request in bytes.
        offset: u64,
        /// Length of the request in bytes.
        len: u64,
        /// Virtual disk size in bytes.
        size: u64,
    },
    /// A write, discard or write-zeroes request on a read-only image.
    #[error("the image is read-only")]
    ReadOnly,
    /// The image metadata is invalid or inconsistent.
    #[error("corrupt image: {0}")]
    Corrupt(String),
    /// The image uses a feature this engine does not implement.
    #[error("unsupported image feature: {0}")]
    Unsupported(String),
    /// Any other invalid argument or state.
    #[error("{0}")]
    Invalid(String),
}

/// Result of block operations.
pub type BlockResult<T> = Result<T, BlockError>;

/// Allocation status of a run of the virtual disk (as `qemu-img map` reports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Bytes the status holds for, starting at the queried offset.
    pub len: u64,
    /// Some layer of the chain holds this run (data or an explicit zero).
    pub present: bool,
    /// The run reads as zeroes.
    pub zero: bool,
    /// The run is backed by stored data.
    pub data: bool,
    /// Which layer answered: 0 this image, 1 its backing file, and so on.
    pub depth: u32,
    /// Host offset of the data in the answering layer's file, when it is stored plainly.
    pub offset: Option<u64>,
    /// The run is stored compressed.
    pub compressed: bool,
}

/// A virtual disk addressed in bytes.
///
/// Implementations are `Send + Sync` and take `&self`, so several virtio-blk worker threads can
/// serve one disk at once; each implementation does its own locking of metadata.
pub trait BlockBackend: Send + Sync {
    /// Virtual disk size in bytes.
    fn size(&self) -> u64;
    /// Whether writes are refused.
    fn is_read_only(&self) -> bool;
    /// Fill `buf` from the disk at `offset`; the whole range must lie inside the disk.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> BlockResult<()>;
    /// Write `buf` to the disk at `offset`; the whole range must lie inside the disk.
    fn write_at(&self, offset: u64, buf: &[u8]) -> BlockResult<()>;
    /// Make every completed write durable (fsync of data and metadata).
    fn flush(&self) -> BlockResult<()>;
    /// Hint that `[offset, offset+len)` is unused; reading it afterwards may return anything
    /// the format allows (zeroes for qcow2 and punched raw files).
    fn discard(&self, offset: u64, len: u64) -> BlockResult<()>;
    /// Make `[offset, offset+len)` read as zeroes.
    fn write_zeroes(&self, offset: u64, len: u64) -> BlockResult<()>;
    /// Allocation status of the run starting at `offset` (at most `len` bytes, at least one
    /// byte). The default reports plain data, as for a raw file.
    fn block_status(&self, offset: u64, len: u64) -> BlockResult<Extent> {
        check_range(offset, len, self.size())?;
        Ok(Extent {
            len,
            present: true,
            zero: false,
            data: true,
            depth: 0,
            offset: Some(offset),
            compressed: false,
        })
    }
    /// Fill `bufs` in order from the disk starting at `offset` (one scatter read; the whole
    /// range must lie inside the disk). The default reads each buffer in turn; backends that
    /// can hand the list to the host (`preadv`) override it to avoid a bounce copy.
    fn read_vectored_at(&self, offset: u64, bufs: &mut [IoSliceMut<'_>]) -> BlockResult<()> {
        let mut off = offset;
        for b in bufs.iter_mut() {
            self.read_at(off, b)?;
            off += b.len() as u64;
        }
        Ok(())
    }
    /// Write `bufs` in order to the disk starting at `offset` (one gather write; the whole
    /// range must lie inside the disk). The default writes each buffer in turn.
    fn write_vectored_at(&self, offset: u64, bufs: &[IoSlice<'_>]) -> BlockResult<()> {
        let mut off = offset;
        for b in bufs {
            self.write_at(off, b)?;
            off += b.len() as u64;
        }
        Ok(())
    }
}

/// Check that `[offset, offset+len)` lies inside a disk of `size` bytes.
pub fn check_range(offset: u64, len: u64, size: u64) -> BlockResult<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(BlockError::OutOfRange { offset, len, size }),
    }
}
