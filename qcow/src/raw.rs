//! Raw images: the file is the disk.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::backend::{check_range, BlockBackend, BlockError, BlockResult};

/// A raw disk image file.
pub struct RawFile {
    file: File,
    size: u64,
    read_only: bool,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BlockError {
    let context = context.into();
    move |source| BlockError::Io { context, source }
}

impl RawFile {
    /// Open `path` as a raw image.
    pub fn open(path: &Path, read_only: bool) -> BlockResult<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(io_err(format!("open {}", path.display())))?;
        Self::from_file(file, read_only)
    }

    /// Use an already open file as a raw image.
    pub fn from_file(file: File, read_only: bool) -> BlockResult<Self> {
        let size = file.metadata().map_err(io_err("stat raw image"))?.len();
        Ok(Self {
            file,
            size,
            read_only,
        })
    }

    /// The underlying file (for host-side copies).
    pub fn file(&self) -> &File {
        &self.file
    }

    fn writable(&self) -> BlockResult<()> {
        if self.read_only {
            Err(BlockError::ReadOnly)
        } else {
            Ok(())
        }
    }

    fn punch(&self, offset: u64, len: u64) -> BlockResult<bool> {
        // SAFETY: fallocate on an fd we own with plain integer arguments; no memory is shared.
        let r = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        Ok(r == 0)
    }
}

impl BlockBackend for RawFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> BlockResult<()> {
        check_range(offset, buf.len() as u64, self.size)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(io_err(format!("read raw image at {offset}")))
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> BlockResult<()> {
        self.writable()?;
        check_range(offset, buf.len() as u64, self.size)?;
        self.file
            .write_all_at(buf, offset)
            .map_err(io_err(format!("write raw image at {offset}")))
    }

    fn flush(&self) -> BlockResult<()> {
        self.file.sync_all().map_err(io_err("fsync raw image"))
    }

    fn discard(&self, offset: u64, len: u64) -> BlockResult<()> {
        self.writable()?;
        check_range(offset, len, self.size)?;
        // A file system without hole punching keeps the data: discard is only a hint.
        self.punch(offset, len).map(|_| ())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> BlockResult<()> {
        self.writable()?;
        check_range(offset, len, self.size)?;
        if self.punch(offset, len)? {
            return Ok(());
        }
        let zeroes = vec![0u8; 1 << 20];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeroes.len() as u64) as usize;
            self.write_at(offset + done, &zeroes[..n])?;
            done += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_read_write_zero_and_bounds() {
        let path = std::env::temp_dir().join(format!("rvmm-raw-{}.img", std::process::id()));
        std::fs::write(&path, vec![0xAAu8; 8192]).unwrap();
        let raw = RawFile::open(&path, false).unwrap();
        assert_eq!(raw.size(), 8192);
        raw.write_at(100, b"hello").unwrap();
        let mut b = [0u8; 5];
        raw.read_at(100, &mut b).unwrap();
        assert_eq!(&b, b"hello");
        raw.write_zeroes(4096, 4096).unwrap();
        let mut z = vec![1u8; 4096];
        raw.read_at(4096, &mut z).unwrap();
        assert!(z.iter().all(|&x| x == 0));
        assert!(matches!(
            raw.read_at(8190, &mut b),
            Err(BlockError::OutOfRange { .. })
        ));
        drop(raw);
        let ro = RawFile::open(&path, true).unwrap();
        assert!(matches!(ro.write_at(0, b"x"), Err(BlockError::ReadOnly)));
        std::fs::remove_file(&path).unwrap();
    }
}
