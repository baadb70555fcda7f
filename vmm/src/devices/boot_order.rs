//! The boot order: what the VM starts from given `--kernel`, `--cdrom`, `--disk` and `--boot`.
//!
//! rvmm has no firmware yet, so it boots kernels directly: the one `--kernel` names, or the
//! installer kernel of the `--cdrom` ISO. A disk cannot be booted by itself; when the boot
//! order picks one, rvmm says so and stops instead of starting a VM that would hang.

use std::path::Path;

use crate::cli::BootDevice;

/// What the VM boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootTarget {
    /// The `--kernel` image.
    Kernel,
    /// The installer on the `--cdrom` ISO.
    Cdrom,
}

/// What the command line says about booting.
#[derive(Clone, Copy, Debug)]
pub struct BootInputs<'a> {
    /// `--kernel` was given.
    pub kernel: bool,
    /// `--boot`.
    pub boot: Option<BootDevice>,
    /// `--cdrom` was given.
    pub cdrom: bool,
    /// The first `--disk`, if any.
    pub first_disk: Option<&'a Path>,
}

/// Why there is nothing rvmm can boot.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BootOrderError {
    /// `--boot cdrom` without an ISO.
    #[error("--boot cdrom needs --cdrom ISO")]
    NoCdrom,
    /// `--boot disk` without a disk.
    #[error("--boot disk needs a --disk")]
    NoDisk,
    /// `--boot cdrom` and `--kernel` both say what to boot.
    #[error(
        "--boot cdrom and --kernel both name the kernel to boot: drop --kernel to boot the \
         CD's installer, or --boot cdrom to boot your kernel with the CD attached"
    )]
    KernelAndCdrom,
    /// The disk would boot, which needs firmware.
    #[error(
        "the boot order picks the disk {disk} ({why}), but booting a disk needs firmware, \
         which rvmm does not have yet: boot the installed system with --kernel PATH (and \
         --initrd, --cmdline \"root=/dev/vda1 …\"), or give --boot cdrom to boot the installer \
         again"
    )]
    DiskNeedsKernel {
        /// The disk.
        disk: String,
        /// Why it was picked.
        why: &'static str,
    },
}

/// Decide what boots. `first_disk_empty` is asked only when the answer depends on it (it may
/// read the disk).
pub fn decide(
    inp: &BootInputs,
    first_disk_empty: impl FnOnce() -> anyhow::Result<bool>,
) -> anyhow::Result<BootTarget> {
    let disk_error = |why| BootOrderError::DiskNeedsKernel {
        disk: inp
            .first_disk
            .map_or_else(String::new, |p| p.display().to_string()),
        why,
    };
    Ok(match inp.boot {
        Some(BootDevice::Cdrom) if !inp.cdrom => return Err(BootOrderError::NoCdrom.into()),
        Some(BootDevice::Cdrom) if inp.kernel => return Err(BootOrderError::KernelAndCdrom.into()),
        Some(BootDevice::Cdrom) => BootTarget::Cdrom,
        Some(BootDevice::Disk) if inp.first_disk.is_none() => {
            return Err(BootOrderError::NoDisk.into())
        }
        Some(BootDevice::Disk) if inp.kernel => BootTarget::Kernel,
        Some(BootDevice::Disk) => return Err(disk_error("--boot disk").into()),
        None if inp.kernel => BootTarget::Kernel,
        None if inp.cdrom => {
            if inp.first_disk.is_none() || first_disk_empty()? {
                BootTarget::Cdrom
            } else {
                return Err(disk_error("it is not empty").into());
            }
        }
        None => return Err(disk_error("there is no --kernel or --cdrom").into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        kernel: bool,
        boot: Option<BootDevice>,
        cdrom: bool,
        disk: bool,
        empty: Option<bool>,
    ) -> Result<BootTarget, String> {
        let inp = BootInputs {
            kernel,
            boot,
            cdrom,
            first_disk: disk.then_some(Path::new("/vm/vda.qcow2")),
        };
        decide(
            &inp,
            || Ok(empty.expect("emptiness asked but not expected")),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn cd_boots_while_the_disk_is_empty_and_the_disk_after_install() {
        use BootTarget::*;
        assert_eq!(run(false, None, true, true, Some(true)), Ok(Cdrom));
        assert_eq!(run(false, None, true, false, None), Ok(Cdrom));
        let e = run(false, None, true, true, Some(false)).unwrap_err();
        assert!(
            e.contains("/vm/vda.qcow2") && e.contains("not empty"),
            "{e}"
        );
        assert!(e.contains("--kernel") && e.contains("--boot cdrom"), "{e}");
    }

    #[test]
    fn boot_flag_overrides_and_kernel_wins_without_it() {
        use BootTarget::*;
        assert_eq!(
            run(false, Some(BootDevice::Cdrom), true, true, None),
            Ok(Cdrom)
        );
        assert_eq!(run(true, None, true, true, None), Ok(Kernel));
        assert_eq!(
            run(true, Some(BootDevice::Disk), true, true, None),
            Ok(Kernel)
        );
        let e = run(false, Some(BootDevice::Disk), true, true, None).unwrap_err();
        assert!(e.contains("--boot disk") && e.contains("firmware"), "{e}");
        assert_eq!(
            run(false, Some(BootDevice::Cdrom), false, true, None),
            Err(BootOrderError::NoCdrom.to_string())
        );
        assert_eq!(
            run(true, Some(BootDevice::Disk), false, false, None),
            Err(BootOrderError::NoDisk.to_string())
        );
        assert_eq!(
            run(true, Some(BootDevice::Cdrom), true, false, None),
            Err(BootOrderError::KernelAndCdrom.to_string())
        );
        let e = run(false, None, false, true, None).unwrap_err();
        assert!(e.contains("needs firmware"), "{e}");
    }
}
