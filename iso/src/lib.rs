//! Installer ISOs for `rvmm --cdrom`: an ISO 9660 reader (Joliet and Rock Ridge names, El Torito
//! boot catalog) and discovery of the installer's kernel, initrd and command line from its boot
//! configuration (ISOLINUX/SYSLINUX, GRUB 2, `.treeinfo`, Debian trees). Every structure read
//! from an image is treated as hostile: a bad one is an error, never a panic or a hang.
//!
//! What `rvmm --cdrom` does with it:
//! ```no_run
//! let iso = iso::Iso::open("centos.iso")?;
//! let choice = iso::BootChoice { entry: None, append: Some("console=ttyS0".into()) };
//! let boot = iso::discover_boot(&iso, &choice)?;
//! eprintln!("rvmm: booting {}", boot); // isolinux entry "linux" (/isolinux/isolinux.cfg): …
//! let kernel: Vec<u8> = boot.read_kernel(&iso)?;
//! let initrd: Vec<u8> = boot.read_initrd(&iso)?;
//! # let _ = (kernel, initrd);
//! # Ok::<(), iso::IsoError>(())
//! ```
//! The same file is then attached read-only as the guest's CD-ROM through
//! `devices::virtio::scsi::VirtioScsi::new(devices::scsi::CdRom::new(Arc::new(raw), serial))`.

pub mod boot;
pub mod eltorito;
pub mod error;
pub mod fixtures;
pub mod image;
mod rockridge;
pub mod source;

pub use boot::{discover_boot, BootChoice, BootFile, BootSource, InstallerBoot};
pub use eltorito::{BootCatalog, BootEntry, Platform};
pub use error::{IsoError, Result};
pub use image::{DirEntry, Extent, Iso, NameSource, BLOCK};
pub use source::ReadAt;
