//! `--cdrom ISO`: the ISO as a read-only virtio-scsi CD-ROM, and the direct boot of the
//! installer entry its boot configuration describes (chosen by the `iso` crate).

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

use ::devices::scsi::CdRom;
use ::devices::virtio::block::ImageLock;
use ::devices::virtio::scsi::VirtioScsi;
use qcow::BlockBackend;

use crate::config::VmConfig;
use crate::vm::Vm;

/// Serial number the drive reports (VPD page 0x80).
pub const CD_SERIAL: &str = "RVMM-CD0";

/// The ISO behind the CD-ROM, open and share-locked for the life of rvmm.
pub struct CdMedium {
    path: PathBuf,
    backend: Arc<dyn BlockBackend>,
    _lock: ImageLock,
}

/// The CD's kernel and initrd copied into memory files, which `VmConfig` names by
/// `/proc/self/fd` path; they live as long as this value.
pub struct BootFiles {
    _kernel: File,
    _initrd: Option<File>,
}

/// The `--boot-entry`/`--append` choice, with `console=ttyS0` added when the user asked for
/// the serial console (and the extra text does not already pick a console).
pub fn boot_choice(entry: Option<String>, append: Option<&str>, console: bool) -> iso::BootChoice {
    let mut extra: Vec<&str> = append.into_iter().filter(|a| !a.is_empty()).collect();
    if console && !append.is_some_and(|a| a.split_whitespace().any(|w| w.starts_with("console="))) {
        extra.push("console=ttyS0");
    }
    iso::BootChoice {
        entry,
        append: (!extra.is_empty()).then(|| extra.join(" ")),
    }
}

/// A sealed-in-memory copy of `data`, named `name` in /proc/self/fd listings.
fn memory_file(name: &str, data: &[u8]) -> Result<(File, PathBuf)> {
    // memfd names are at most 249 bytes; the name is only a label.
    let label: String = name.chars().take(200).collect();
    let cname = std::ffi::CString::new(label).context("memory file name has a NUL")?;
    // SAFETY: memfd_create with a valid C string; the result is checked before use.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot create a memory file for {name}"));
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(data)
        .with_context(|| format!("cannot copy {name} into memory"))?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
    Ok((f, path))
}

impl CdMedium {
    /// Open `path` read-only with a shared image lock (other readers may share the ISO).
    pub fn open(path: &Path) -> Result<Self> {
        let lock = ImageLock::acquire(path, true)
            .map_err(|e| anyhow::anyhow!("cannot attach --cdrom {}: {e}", path.display()))?;
        let file =
            File::open(path).with_context(|| format!("cannot open --cdrom {}", path.display()))?;
        let raw = qcow::RawFile::from_file(file, true)
            .with_context(|| format!("cannot open --cdrom {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            backend: Arc::new(raw),
            _lock: lock,
        })
    }

    /// Find the installer entry (`choice` may name another one and add to its command
    /// line), tell the user what was chosen, and make `cfg` boot its kernel and initrd.
    pub fn boot_into(&self, cfg: &mut VmConfig, choice: &iso::BootChoice) -> Result<BootFiles> {
        let p = self.path.display();
        let image = iso::Iso::open(&self.path)
            .with_context(|| format!("cannot boot --cdrom {p}: not a readable ISO 9660 image"))?;
        let boot = iso::discover_boot(&image, choice)
            .with_context(|| format!("cannot find an installer to boot on {p}"))?;
        eprintln!("rvmm: booting {p}: {boot}");
        let kernel = boot
            .read_kernel(&image)
            .with_context(|| format!("cannot read the kernel {} from {p}", boot.kernel.path))?;
        let initrd = boot
            .read_initrd(&image)
            .with_context(|| format!("cannot read the initrd from {p}"))?;
        if boot.cmdline.as_bytes().contains(&0) {
            anyhow::bail!(
                "the boot entry {:?} on {p} has a NUL in its command line",
                boot.label
            );
        }
        let (kfile, kpath) = memory_file(&format!("cdrom:{}", boot.kernel.path), &kernel)?;
        cfg.kernel = kpath;
        let initrd_file = if initrd.is_empty() {
            cfg.initrd = None;
            None
        } else {
            let (f, path) = memory_file("cdrom:initrd", &initrd)?;
            cfg.initrd = Some(path);
            Some(f)
        };
        cfg.cmdline = boot.cmdline.clone();
        Ok(BootFiles {
            _kernel: kfile,
            _initrd: initrd_file,
        })
    }

    /// Attach the ISO to `vm` as the CD-ROM LUN of a virtio-scsi host on PCI.
    pub fn attach(&self, vm: &Vm) -> Result<u8> {
        let drive = CdRom::new(self.backend.clone(), CD_SERIAL);
        super::pci::add_virtio(
            vm,
            Box::new(VirtioScsi::new(drive)),
            &format!("virtio-scsi CD-ROM {}", self.path.display()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_is_added_only_when_asked_and_not_twice() {
        let c = boot_choice(None, None, false);
        assert_eq!(c.append, None);
        let c = boot_choice(Some("rescue".into()), Some("inst.text"), true);
        assert_eq!(c.entry.as_deref(), Some("rescue"));
        assert_eq!(c.append.as_deref(), Some("inst.text console=ttyS0"));
        let c = boot_choice(None, Some("console=hvc0"), true);
        assert_eq!(c.append.as_deref(), Some("console=hvc0"));
        let c = boot_choice(None, None, true);
        assert_eq!(c.append.as_deref(), Some("console=ttyS0"));
    }

    #[test]
    fn memory_files_read_back_by_path() {
        let (_f, p) = memory_file("t", b"kernel bytes").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"kernel bytes");
        let long = format!("cdrom:/{}", "d/".repeat(300));
        let (_g, q) = memory_file(&long, b"x").unwrap();
        assert_eq!(std::fs::read(&q).unwrap(), b"x");
    }
}
