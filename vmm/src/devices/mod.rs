//! Storage attached on the command line (`--disk`, `--cdrom`) and the boot order that picks
//! what the VM starts from.
//!
//! Images are opened and locked once per rvmm process ([`prepare`]), so their locks are held
//! for the VM's whole life, reboots included; their PCI functions are built anew on every VM
//! build ([`Storage::attach`]), since a reboot rebuilds the machine.

pub mod boot_order;
pub mod cdrom;
pub mod disk;
pub mod net;
pub(crate) mod pci;

use anyhow::Result;

use ::devices::virtio::block::Disk;

use crate::cli::Cli;
use crate::config::{SerialMode, VmConfig};
use crate::vm::Vm;

use boot_order::BootTarget;

/// The disks and CD of one rvmm process, open and locked.
pub struct Storage {
    disks: Vec<Disk>,
    cdrom: Option<cdrom::CdMedium>,
    /// virtio-blk queues per disk (one per vCPU).
    queues: u16,
    /// Keeps the in-memory copies of a CD-booted kernel and initrd alive.
    _boot_files: Option<cdrom::BootFiles>,
}

/// Open and lock every `--disk` and the `--cdrom`, decide the boot order, and point `cfg` at
/// the kernel to boot (the CD's installer when the CD boots).
pub fn prepare(cli: &Cli, cfg: &mut VmConfig) -> Result<Storage> {
    let disks = disk::open_all(&cli.disks)?;
    let cdrom = cli
        .cdrom
        .as_deref()
        .map(cdrom::CdMedium::open)
        .transpose()?;
    let first_disk = disks.first();
    let target = boot_order::decide(
        &boot_order::BootInputs {
            kernel: cli.kernel.is_some(),
            boot: cli.boot,
            cdrom: cdrom.is_some(),
            first_disk: first_disk.map(|d| d.config.path.as_path()),
        },
        || first_disk.map_or(Ok(true), disk::is_empty),
    )?;
    let mut boot_files = None;
    if target == BootTarget::Cdrom {
        if let Some(cd) = &cdrom {
            let console = cli.serial.is_some() && cfg.serial != SerialMode::None;
            let choice = cdrom::boot_choice(cli.boot_entry.clone(), cli.append.as_deref(), console);
            boot_files = Some(cd.boot_into(cfg, &choice)?);
        }
    }
    Ok(Storage {
        disks,
        cdrom,
        queues: u16::try_from(cfg.cpus).unwrap_or(u16::MAX),
        _boot_files: boot_files,
    })
}

impl Storage {
    /// Put the disks (in `--disk` order) and then the CD-ROM on the PCI bus of `vm`.
    pub fn attach(&self, vm: &Vm) -> Result<()> {
        for d in &self.disks {
            disk::attach(vm, d, self.queues)?;
        }
        if let Some(cd) = &self.cdrom {
            cd.attach(vm)?;
        }
        Ok(())
    }
}
