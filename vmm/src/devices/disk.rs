//! `--disk`: opening and locking the images, asking whether one is still empty (for the boot
//! order), and attaching each as a virtio-blk function.

use std::fs::File;
use std::io::Read;
use std::os::unix::io::AsRawFd;

use anyhow::{anyhow, Context, Result};

use ::devices::virtio::block::{settings_for, Block, Disk, DiskConfig, DiskFormat};

use crate::vm::Vm;

/// Bytes of stored data [`is_empty`] reads before giving up and calling the disk used.
pub const EMPTY_SCAN_BUDGET: u64 = 256 << 20;
const CHUNK: u64 = 1 << 20;

/// Open (and lock) every disk, in order.
pub fn open_all(cfgs: &[DiskConfig]) -> Result<Vec<Disk>> {
    cfgs.iter()
        // DiskError's message already names its cause; chaining it would say it twice.
        .map(|c| {
            c.open()
                .map_err(|e| anyhow!("cannot attach --disk {}: {e}", c.path.display()))
        })
        .collect()
}

/// Attach `disk` to `vm` as a virtio-blk PCI function with `queues` request queues.
pub fn attach(vm: &Vm, disk: &Disk, queues: u16) -> Result<u8> {
    let dev = Block::with_settings(settings_for(disk), queues);
    super::pci::add_virtio(
        vm,
        Box::new(dev),
        &format!("virtio-blk {}", disk.config.path.display()),
    )
}

fn is_qcow2(disk: &Disk) -> bool {
    match disk.config.format {
        Some(f) => f == DiskFormat::Qcow2,
        None => {
            let mut magic = [0u8; 4];
            File::open(&disk.config.path)
                .and_then(|mut f| f.read_exact(&mut magic))
                .is_ok()
                && magic == *b"QFI\xfb"
        }
    }
}

/// Data runs `[start, end)` of a raw image file, found with SEEK_DATA/SEEK_HOLE so that the
/// holes of a sparse file are never read; the whole file when the file system cannot say.
fn raw_data_runs(file: &File, size: u64) -> Vec<(u64, u64)> {
    let fd = file.as_raw_fd();
    let mut runs = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let Ok(at) = libc::off_t::try_from(pos) else {
            break;
        };
        // SAFETY: lseek on an fd we own; no memory is passed.
        let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENXIO) && runs.is_empty() && pos == 0 {
                // No SEEK_DATA support: everything may be data.
                return vec![(0, size)];
            }
            break; // ENXIO: no data after pos.
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let (start, end) = (data as u64, if hole < 0 { size } else { hole as u64 });
        if end <= start {
            break;
        }
        runs.push((start, end.min(size)));
        pos = end;
    }
    runs
}

/// True when every byte of `[start, end)` of the disk reads as zero. `budget` is charged with
/// the bytes read; `None` when it ran out before an answer.
fn reads_zero(disk: &Disk, start: u64, end: u64, budget: &mut u64) -> Result<Option<bool>> {
    let mut buf = vec![0u8; CHUNK as usize];
    let mut off = start;
    while off < end {
        if *budget == 0 {
            return Ok(None);
        }
        let n = (end - off).min(CHUNK).min(*budget);
        let b = &mut buf[..n as usize];
        disk.backend
            .read_at(off, b)
            .with_context(|| format!("cannot read {} at {off}", disk.config.path.display()))?;
        if b.iter().any(|&x| x != 0) {
            return Ok(Some(false));
        }
        *budget -= n;
        off += n;
    }
    Ok(Some(true))
}

/// Whether `disk` holds nothing yet (every cluster unallocated, or all its data zero), which
/// makes `--cdrom` the boot device. A disk too full of zeroes to scan within
/// [`EMPTY_SCAN_BUDGET`] counts as used (give `--boot cdrom` to install on it anyway).
pub fn is_empty(disk: &Disk) -> Result<bool> {
    let size = disk.backend.size();
    let path = disk.config.path.display();
    let mut budget = EMPTY_SCAN_BUDGET;
    let runs = if is_qcow2(disk) {
        let mut runs = Vec::new();
        let mut off = 0u64;
        while off < size {
            let ext = disk
                .backend
                .block_status(off, size - off)
                .with_context(|| format!("cannot map the clusters of {path}"))?;
            // A zero-length answer would never advance: treat the rest as data.
            let len = if ext.len == 0 {
                size - off
            } else {
                ext.len.min(size - off)
            };
            if ext.data && !ext.zero {
                runs.push((off, off + len));
            }
            off += len;
        }
        runs
    } else {
        let f = File::open(&disk.config.path)
            .with_context(|| format!("cannot open {path} to see whether it is empty"))?;
        raw_data_runs(&f, size)
    };
    for (start, end) in runs {
        match reads_zero(disk, start, end, &mut budget)? {
            Some(true) => {}
            Some(false) => return Ok(false),
            None => {
                log::warn!(
                    "{path}: more than {} MiB of stored zeroes; treating the disk as used",
                    EMPTY_SCAN_BUDGET >> 20
                );
                return Ok(false);
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn open(path: &std::path::Path, opts: &str) -> Disk {
        format!("{}{opts}", path.display())
            .parse::<DiskConfig>()
            .unwrap()
            .open()
            .unwrap()
    }

    #[test]
    fn sparse_raw_is_empty_until_something_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.raw");
        let f = File::create(&p).unwrap();
        f.set_len(1 << 30).unwrap();
        drop(f);
        assert!(is_empty(&open(&p, ",format=raw")).unwrap());
        // Zeroes written explicitly still count as empty.
        std::fs::write(&p, vec![0u8; 8192]).unwrap();
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        assert!(is_empty(&open(&p, ",format=raw")).unwrap());
        let d = open(&p, ",format=raw");
        d.backend.write_at((1 << 30) - 512, &[1u8; 512]).unwrap();
        assert!(!is_empty(&d).unwrap(), "a byte at the very end counts");
    }

    #[test]
    fn fresh_qcow2_is_empty_and_written_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.qcow2");
        let st = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&p)
            .arg("10G")
            .status()
            .unwrap();
        assert!(st.success());
        assert!(is_empty(&open(&p, "")).unwrap());
        {
            let d = open(&p, "");
            d.backend.write_at(5 << 30, &[0u8; 4096]).unwrap();
            d.backend.flush().unwrap();
            assert!(
                is_empty(&d).unwrap(),
                "an allocated zero cluster is still empty"
            );
            d.backend.write_at(7 << 30, b"MBR!").unwrap();
            d.backend.flush().unwrap();
        }
        assert!(!is_empty(&open(&p, "")).unwrap());
    }
}
