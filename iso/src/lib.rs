//! Installer ISOs for `rvmm --cdrom`: an ISO 9660 reader (Joliet and Rock Ridge names, El Torito
//! boot catalog) and discovery of the installer's kernel, initrd and command line from its boot
//! configuration (ISOLINUX/SYSLINUX, GRUB 2, `.treeinfo`, Debian trees). Every structure read
//! from an image is treated as hostile: a bad one is an error, never a panic or a hang.

pub mod boot;
pub mod eltorito;
pub mod error;
pub mod image;
mod rockridge;
pub mod source;

pub use boot::{discover_boot, BootChoice, BootFile, BootSource, InstallerBoot};
pub use eltorito::{BootCatalog, BootEntry, Platform};
pub use error::{IsoError, Result};
pub use image::{DirEntry, Extent, Iso, NameSource, BLOCK};
pub use source::ReadAt;
