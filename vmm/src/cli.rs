//! The `rvmm` command line.

use std::path::PathBuf;

use clap::{ArgAction, Parser, ValueEnum};

/// Default kernel command line: serial console, reboot through the keyboard controller, and
/// reboot (rather than hang) on panic.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";

/// CPU feature model (`--cpu-model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CpuModelArg {
    /// Everything KVM supports on this host.
    Host,
    /// No xsave family, cmpxchg16b, AVX or TSX: portable, and safe on nested or
    /// software-assisted KVM.
    Baseline,
}

/// Boot device (`--boot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BootDevice {
    /// The --cdrom ISO's installer.
    Cdrom,
    /// The first --disk.
    Disk,
}

/// rvmm: boot a kernel in a KVM virtual machine.
#[derive(Debug, Parser)]
#[command(name = "rvmm", version, about, long_about = None)]
pub struct Cli {
    /// Kernel to boot: a bzImage, or an ELF vmlinux (entered through its PVH note if it has
    /// one, else at its 64-bit entry point).
    #[arg(long, value_name = "PATH", required_unless_present_any = ["cdrom", "disks"])]
    pub kernel: Option<PathBuf>,

    /// Initial ramdisk, loaded page-aligned below the kernel's initrd_addr_max.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,

    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = DEFAULT_CMDLINE)]
    pub cmdline: String,

    /// Guest RAM: a number of MiB (1024) or a size with a K/M/G/T suffix (512M, 2G). Above
    /// 3 GiB the rest is placed above 4 GiB, leaving the PCI hole free.
    #[arg(long, short = 'm', value_name = "SIZE", default_value = "512M")]
    pub memory: String,

    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u32,

    /// Where COM1 goes: stdio (raw terminal; Ctrl-A x quits; the default), file:PATH, or
    /// none. Given explicitly, a kernel booted from --cdrom also gets console=ttyS0.
    #[arg(long, value_name = "stdio|file:PATH|none")]
    pub serial: Option<String>,

    /// Exit (status 0) when the guest reboots instead of restarting it.
    #[arg(long)]
    pub no_reboot: bool,

    /// CPU feature model.
    #[arg(long, value_enum, default_value_t = CpuModelArg::Host)]
    pub cpu_model: CpuModelArg,

    /// Back guest RAM with 2 MiB huge pages (needs free pages in
    /// /proc/sys/vm/nr_hugepages).
    #[arg(long)]
    pub hugepages: bool,

    /// A disk as virtio-blk on PCI (repeatable, in guest order vda, vdb, …); the format is
    /// detected by the qcow2 magic unless given. The image is locked while rvmm runs.
    #[arg(
        long = "disk",
        value_name = "PATH[,format=qcow2|raw][,readonly=on][,cache=writeback|none|unsafe][,serial=STR][,discard=unmap|ignore]"
    )]
    pub disks: Vec<devices::virtio::block::DiskConfig>,

    /// An installer ISO: attached read-only as a virtio-scsi CD-ROM, and booted directly (its
    /// installer kernel, initrd and command line) when the boot order picks the CD.
    #[arg(long, value_name = "ISO")]
    pub cdrom: Option<PathBuf>,

    /// What to boot: cdrom, or disk (needs --kernel until firmware exists). Default: the CD
    /// when the first --disk is empty (or there is none), else the disk.
    #[arg(long, value_enum, value_name = "cdrom|disk")]
    pub boot: Option<BootDevice>,

    /// The ISO boot menu entry to boot (its label or title) instead of the install entry.
    #[arg(long, value_name = "LABEL", requires = "cdrom")]
    pub boot_entry: Option<String>,

    /// Text added to the command line of the kernel booted from --cdrom.
    #[arg(long, value_name = "STR", requires = "cdrom")]
    pub append: Option<String>,

    /// Serve the screen over VNC: HOST[:DISPLAY] listens on port 5900+DISPLAY (0.0.0.0 is
    /// display :0); none = no server. Options: password-file=PATH (VNC authentication),
    /// websocket=PORT (noVNC), lossy=on (Tight JPEG), tls-cert=PEM,tls-key=PEM (VeNCrypt).
    /// Adds a std-VGA display, a virtio tablet and routes keys/pointer to the guest.
    #[arg(long, value_name = "HOST[:DISPLAY][,OPTION=VALUE...]|none")]
    pub vnc: Option<String>,

    /// Display device: vga (Bochs std-VGA on PCI) or none. Default: vga with --vnc or
    /// --screenshot-on-exit, else none.
    #[arg(long, value_name = "vga|none")]
    pub display: Option<String>,

    /// Screen mode a directly booted kernel finds (boot_params.screen_info), WxH at 32 bpp
    /// (default 1024x768).
    #[arg(long, value_name = "WxH")]
    pub display_size: Option<String>,

    /// Write a PNG of the screen when rvmm exits.
    #[arg(long, value_name = "PATH")]
    pub screenshot_on_exit: Option<PathBuf>,

    /// A NIC on a new tap made a port of bridge BR (virtio-net on PCI; needs CAP_NET_ADMIN;
    /// the tap is deleted when rvmm exits). Repeatable, like --tap and --net-fd.
    #[arg(long = "bridge", value_name = "BR[,mac=MAC][,queues=N]", value_parser = crate::devices::net::parse_bridge)]
    pub bridges: Vec<crate::devices::net::NicArg>,

    /// A NIC on an existing tap (no privileges needed when you own it).
    #[arg(long = "tap", value_name = "NAME[,mac=MAC][,queues=N]", value_parser = crate::devices::net::parse_tap)]
    pub taps: Vec<crate::devices::net::NicArg>,

    /// A NIC on inherited tap fds, one per queue pair.
    #[arg(long = "net-fd", value_name = "N[:M…][,mac=MAC]", value_parser = crate::devices::net::parse_net_fd)]
    pub net_fds: Vec<crate::devices::net::NicArg>,

    /// A NIC as bridge=BR, tap=NAME or fd=N (with ,mac= and ,queues=), or none for no NIC.
    #[arg(long = "net", value_name = "none|bridge=BR|tap=NAME|fd=N", value_parser = crate::devices::net::parse_net)]
    pub nets: Vec<crate::devices::net::NicArg>,

    /// Guest MAC of the NIC flag just before it. Default: a stable 52:54:00 address derived
    /// from the first disk (else the CD, else the kernel) path and the NIC's index.
    #[arg(long = "mac", value_name = "XX:XX:XX:XX:XX:XX", value_parser = crate::devices::net::parse_mac)]
    pub macs: Vec<crate::devices::net::MacArg>,

    /// More logging on stderr: -v info (boot markers), -vv debug, -vvv trace.
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,

    /// KVM device node (for testing error handling).
    #[arg(long, value_name = "PATH", default_value = "/dev/kvm", hide = true)]
    pub kvm_device: PathBuf,
}
