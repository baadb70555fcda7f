//! Raw images: the file is the disk.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, IoSliceMut};
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

/// Most buffers one `preadv`/`pwritev` takes (Linux's `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// Run a vectored syscall, retrying on EINTR; returns the bytes it moved.
fn vectored(mut call: impl FnMut() -> libc::ssize_t) -> std::io::Result<u64> {
    loop {
        let r = call();
        if r >= 0 {
            return Ok(r as u64);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
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

    fn read_vectored_at(&self, offset: u64, bufs: &mut [IoSliceMut<'_>]) -> BlockResult<()> {
        let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        check_range(offset, total, self.size)?;
        let nbufs = bufs.len();
        let ctx = || format!("read raw image at {offset} ({total} bytes, {nbufs} buffers)");
        let n = vectored(|| {
            // SAFETY: IoSliceMut is ABI-compatible with iovec; every buffer is a live, writable
            // borrow for the duration of the call and at most IOV_MAX of them are passed.
            unsafe {
                libc::preadv(
                    self.file.as_raw_fd(),
                    bufs.as_ptr().cast::<libc::iovec>(),
                    bufs.len().min(IOV_MAX) as libc::c_int,
                    offset as libc::off_t,
                )
            }
        })
        .map_err(io_err(ctx()))?;
        // A short read (or more than IOV_MAX buffers) is finished buffer by buffer.
        let mut pos = 0u64;
        for b in bufs.iter_mut() {
            let len = b.len() as u64;
            if pos + len > n {
                let skip = n.saturating_sub(pos);
                self.file
                    .read_exact_at(&mut b[skip as usize..], offset + pos + skip)
                    .map_err(io_err(ctx()))?;
            }
            pos += len;
        }
        Ok(())
    }

    fn write_vectored_at(&self, offset: u64, bufs: &[IoSlice<'_>]) -> BlockResult<()> {
        self.writable()?;
        let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        check_range(offset, total, self.size)?;
        let nbufs = bufs.len();
        let ctx = || format!("write raw image at {offset} ({total} bytes, {nbufs} buffers)");
        let n = vectored(|| {
            // SAFETY: IoSlice is ABI-compatible with iovec; every buffer is a live borrow for
            // the duration of the call and at most IOV_MAX of them are passed.
            unsafe {
                libc::pwritev(
                    self.file.as_raw_fd(),
                    bufs.as_ptr().cast::<libc::iovec>(),
                    bufs.len().min(IOV_MAX) as libc::c_int,
                    offset as libc::off_t,
                )
            }
        })
        .map_err(io_err(ctx()))?;
        let mut pos = 0u64;
        for b in bufs {
            let len = b.len() as u64;
            if pos + len > n {
                let skip = n.saturating_sub(pos);
                self.file
                    .write_all_at(&b[skip as usize..], offset + pos + skip)
                    .map_err(io_err(ctx()))?;
            }
            pos += len;
        }
        Ok(())
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

    #[test]
    fn raw_vectored_read_write_match_plain_io() {
        let path = std::env::temp_dir().join(format!("rvmm-rawv-{}.img", std::process::id()));
        let init: Vec<u8> = (0..16384u32).map(|i| (i * 7 + 3) as u8).collect();
        std::fs::write(&path, &init).unwrap();
        let raw = RawFile::open(&path, false).unwrap();
        // Three uneven buffers read from offset 1000 see what one plain read sees.
        let (mut a, mut b, mut c) = (vec![0u8; 1], vec![0u8; 4096], vec![0u8; 3000]);
        let mut bufs = [
            IoSliceMut::new(&mut a),
            IoSliceMut::new(&mut b),
            IoSliceMut::new(&mut c),
        ];
        raw.read_vectored_at(1000, &mut bufs).unwrap();
        let got: Vec<u8> = [a, b, c].concat();
        assert_eq!(got, init[1000..1000 + 7097]);
        // A gather write lands contiguously, in buffer order.
        let (x, y) = (vec![0x11u8; 700], vec![0x22u8; 5000]);
        raw.write_vectored_at(9000, &[IoSlice::new(&x), IoSlice::new(&y)])
            .unwrap();
        let mut back = vec![0u8; 5700];
        raw.read_at(9000, &mut back).unwrap();
        assert_eq!(back, [x, y].concat());
        let mut before = [0u8; 1];
        raw.read_at(8999, &mut before).unwrap();
        assert_eq!(before[0], init[8999]);
        // The whole list must lie inside the disk, and nothing is written when it does not.
        let mut tail = vec![0u8; 2000];
        assert!(matches!(
            raw.read_vectored_at(15000, &mut [IoSliceMut::new(&mut tail)]),
            Err(BlockError::OutOfRange { .. })
        ));
        let z = vec![0x33u8; 2000];
        assert!(matches!(
            raw.write_vectored_at(15000, &[IoSlice::new(&z)]),
            Err(BlockError::OutOfRange { .. })
        ));
        raw.read_at(15000, &mut tail[..1384]).unwrap();
        assert_eq!(tail[..1384], init[15000..]);
        drop(raw);
        let ro = RawFile::open(&path, true).unwrap();
        assert!(matches!(
            ro.write_vectored_at(0, &[IoSlice::new(b"x")]),
            Err(BlockError::ReadOnly)
        ));
        std::fs::remove_file(&path).unwrap();
    }
}
