//! Installer-like ISO images for tests, built with xorriso and grub-mkrescue (which
//! scripts/setup.sh installs): CentOS 7 (ISOLINUX with the media check as menu default, EFI
//! GRUB, `.treeinfo`), Debian netinst (ISOLINUX includes, `install.amd/`) and a GRUB-only
//! grub-mkrescue image laid out like Rocky Linux. The caller supplies the kernel and initrd, so
//! the same layouts serve discovery tests and boots of a test guest; each fixture says which
//! entry a correct discovery picks and with which command line.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// An image built by this module and what booting it should choose.
#[derive(Clone, Debug)]
pub struct Fixture {
    /// The image file.
    pub path: PathBuf,
    /// Its volume label.
    pub volume_id: &'static str,
    /// Label of the install entry discovery must choose.
    pub label: &'static str,
    /// That entry's command line, exactly.
    pub cmdline: &'static str,
    /// Path of the chosen kernel on the image.
    pub kernel: &'static str,
    /// Path of the chosen initrd on the image.
    pub initrd: &'static str,
}

/// ISOLINUX configuration of CentOS 7 (abridged): `check` is the menu default.
pub const CENTOS7_ISOLINUX_CFG: &str = r"default vesamenu.c32
timeout 600

display boot.msg
menu clear
menu background splash.png
menu title CentOS 7
menu tabmsg Press Tab for full configuration options on menu items.
menu separator # insert an empty line

label linux
  menu label ^Install CentOS 7
  kernel vmlinuz
  append initrd=initrd.img inst.stage2=hd:LABEL=CentOS\x207\x20x86_64 quiet

label check
  menu label Test this ^media & install CentOS 7
  menu default
  kernel vmlinuz
  append initrd=initrd.img inst.stage2=hd:LABEL=CentOS\x207\x20x86_64 rd.live.check quiet

menu separator # insert an empty line

# utilities submenu
menu begin ^Troubleshooting
  menu title Troubleshooting

label vesa
  menu indent count 5
  menu label Install CentOS 7 in ^basic graphics mode
  text help
	Try this option out if you're having trouble installing
	CentOS 7. label notalabel
  endtext
  kernel vmlinuz
  append initrd=initrd.img inst.stage2=hd:LABEL=CentOS\x207\x20x86_64 xdriver=vesa nomodeset quiet

label rescue
  menu indent count 5
  menu label ^Rescue a CentOS system
  kernel vmlinuz
  append initrd=initrd.img inst.stage2=hd:LABEL=CentOS\x207\x20x86_64 rescue quiet

label memtest
  menu label Run a ^memory test
  kernel memtest

label local
  menu label Boot from ^local drive
  localboot 0xffff

label returntomain
  menu label Return to ^main menu
  menu exit

menu end
";

/// EFI GRUB configuration of CentOS 7: `set default="1"` is the media check.
pub const CENTOS7_EFI_GRUB_CFG: &str = r#"set default="1"

function load_video {
  insmod efi_gop
  insmod all_video
}

load_video
set gfxpayload=keep
insmod gzio
set timeout=60
### END /etc/grub.d/00_header ###

search --no-floppy --set=root -l 'CentOS 7 x86_64'

### BEGIN /etc/grub.d/10_linux ###
menuentry 'Install CentOS 7' --class fedora --class gnu-linux --class gnu --class os {
	linuxefi /images/pxeboot/vmlinuz inst.stage2=hd:LABEL=CentOS\x207\x20x86_64 quiet
	initrdefi /images/pxeboot/initrd.img
}
menuentry 'Test this media & install CentOS 7' --class fedora --class gnu-linux --class gnu --class os {
	linuxefi /images/pxeboot/vmlinuz inst.stage2=hd:LABEL=CentOS\x207\x20x86_64 rd.live.check quiet
	initrdefi /images/pxeboot/initrd.img
}
submenu 'Troubleshooting -->' {
	menuentry 'Install CentOS 7 in basic graphics mode' --class fedora --class gnu-linux --class gnu --class os {
		linuxefi /images/pxeboot/vmlinuz inst.stage2=hd:LABEL=CentOS\x207\x20x86_64 xdriver=vesa nomodeset quiet
		initrdefi /images/pxeboot/initrd.img
	}
	menuentry 'Rescue a CentOS system' --class fedora --class gnu-linux --class gnu --class os {
		linuxefi /images/pxeboot/vmlinuz inst.stage2=hd:LABEL=CentOS\x207\x20x86_64 rescue quiet
		initrdefi /images/pxeboot/initrd.img
	}
}
"#;

/// GRUB configuration of a Rocky-like GRUB-only image: `set default="1"` is the media check.
pub const ROCKY_GRUB_CFG: &str = r#"set timeout=5
set default="1"
set stage2="inst.stage2=hd:LABEL=Rocky-9-3-x86_64-dvd"
menuentry 'Test this media & install Rocky Linux 9' --class rocky {
	linux /images/pxeboot/vmlinuz $stage2 rd.live.check quiet
	initrd /images/pxeboot/initrd.img
}
menuentry 'Install Rocky Linux 9' --class rocky $menuentry_id_option 'install' {
	linux ($root)/images/pxeboot/vmlinuz ${stage2} quiet
	initrd /images/pxeboot/initrd.img
}
submenu 'Troubleshooting -->' {
	menuentry 'Rescue a Rocky Linux system' {
		linux /images/pxeboot/vmlinuz $stage2 inst.rescue quiet
		initrd /images/pxeboot/initrd.img
	}
}
"#;

/// A directory tree that becomes an image.
struct Tree(PathBuf);

impl Tree {
    fn new(dir: &Path, name: &str) -> io::Result<Tree> {
        let root = dir.join(format!("{name}-tree"));
        if root.exists() {
            fs::remove_dir_all(&root)?;
        }
        fs::create_dir_all(&root)?;
        Ok(Tree(root))
    }

    fn file(&self, path: &str, data: impl AsRef<[u8]>) -> io::Result<()> {
        let p = self.0.join(path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(p, data)
    }

    fn copy(&self, path: &str, from: &str) -> io::Result<()> {
        let data = fs::read(from).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{from}: {e} (scripts/setup.sh installs isolinux)"),
            )
        })?;
        self.file(path, data)
    }
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{cmd:?}: {e} (scripts/setup.sh installs it)"),
        )
    })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// xorriso's mkisofs emulation on `tree`, writing `out`.
fn mkisofs(tree: &Tree, out: &Path, args: &[&str]) -> io::Result<()> {
    run(Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet"])
        .args(args)
        .arg("-o")
        .arg(out)
        .arg(&tree.0))
}

/// ISOLINUX El Torito options of an isohybrid image (MBR in front, like the real ones).
const ISOLINUX_BOOT: &[&str] = &[
    "-isohybrid-mbr",
    "/usr/lib/ISOLINUX/isohdpfx.bin",
    "-b",
    "isolinux/isolinux.bin",
    "-c",
    "isolinux/boot.cat",
    "-no-emul-boot",
    "-boot-load-size",
    "4",
    "-boot-info-table",
];

/// A CentOS 7 DVD layout in `dir`; without `bios` only EFI GRUB and `.treeinfo` remain.
pub fn centos7(dir: &Path, kernel: &[u8], initrd: &[u8], bios: bool) -> io::Result<Fixture> {
    let t = Tree::new(dir, "centos7")?;
    if bios {
        t.copy("isolinux/isolinux.bin", "/usr/lib/ISOLINUX/isolinux.bin")?;
        t.file("isolinux/isolinux.cfg", CENTOS7_ISOLINUX_CFG)?;
        t.file("isolinux/vmlinuz", kernel)?;
        t.file("isolinux/initrd.img", initrd)?;
        t.file("isolinux/memtest", "memtest")?;
    }
    t.file("EFI/BOOT/grub.cfg", CENTOS7_EFI_GRUB_CFG)?;
    t.file("images/pxeboot/vmlinuz", kernel)?;
    t.file("images/pxeboot/initrd.img", initrd)?;
    t.file(
        ".treeinfo",
        "[general]\nfamily = CentOS\nversion = 7\n[images-x86_64]\nkernel = images/pxeboot/vmlinuz\n\
         initrd = images/pxeboot/initrd.img\n[stage2]\nmainimage = LiveOS/squashfs.img\n",
    )?;
    let path = dir.join(if bios {
        "centos7.iso"
    } else {
        "centos7-efi.iso"
    });
    let mut args = vec!["-R", "-J", "-V", "CentOS 7 x86_64"];
    if bios {
        args.extend(ISOLINUX_BOOT);
    }
    mkisofs(&t, &path, &args)?;
    Ok(if bios {
        Fixture {
            path,
            volume_id: "CentOS 7 x86_64",
            label: "linux",
            cmdline: r"initrd=initrd.img inst.stage2=hd:LABEL=CentOS\x207\x20x86_64 quiet",
            kernel: "/isolinux/vmlinuz",
            initrd: "/isolinux/initrd.img",
        }
    } else {
        Fixture {
            path,
            volume_id: "CentOS 7 x86_64",
            label: "Install CentOS 7",
            cmdline: r"inst.stage2=hd:LABEL=CentOS\x207\x20x86_64 quiet",
            kernel: "/images/pxeboot/vmlinuz",
            initrd: "/images/pxeboot/initrd.img",
        }
    })
}

/// A Debian 12 netinst layout in `dir` (the graphical installer's initrd gets `initrd` too).
pub fn debian_netinst(dir: &Path, kernel: &[u8], initrd: &[u8]) -> io::Result<Fixture> {
    let t = Tree::new(dir, "debian")?;
    t.copy("isolinux/isolinux.bin", "/usr/lib/ISOLINUX/isolinux.bin")?;
    t.file(
        "isolinux/isolinux.cfg",
        "# D-I config version 2.0\n# search path for the c32 support libraries (libcom32, libutil etc.)\n\
         path \ninclude menu.cfg\ndefault vesamenu.c32\nprompt 0\ntimeout 0\n",
    )?;
    t.file(
        "isolinux/menu.cfg",
        "menu hshift 4\nmenu width 70\n\nmenu title Debian GNU/Linux installer menu (BIOS mode)\n\
         include stdmenu.cfg\ninclude gtk.cfg\ninclude txt.cfg\nmenu begin advanced\n\
         \tmenu label ^Advanced options\n\tmenu title Advanced options\n\tinclude stdmenu.cfg\n\
         \tlabel mainmenu\n\t\tmenu label ^Back..\n\t\tmenu exit\n\tinclude adgtk.cfg\n\
         \tinclude adtxt.cfg\nmenu end\nlabel help\n\tmenu label ^Help\n\ttext help\n   Display help screens\n\
         \tendtext\n\tconfig prompt.cfg\n",
    )?;
    t.file(
        "isolinux/stdmenu.cfg",
        "menu background splash.png\nmenu color title * #FFFFFFFF *\n",
    )?;
    t.file(
        "isolinux/gtk.cfg",
        "default installgui\nlabel installgui\n\tmenu label ^Graphical install\n\tmenu default\n\
         \tkernel /install.amd/vmlinuz\n\tappend vga=788 initrd=/install.amd/gtk/initrd.gz --- quiet \n",
    )?;
    t.file(
        "isolinux/txt.cfg",
        "label install\n\tmenu label ^Install\n\tkernel /install.amd/vmlinuz\n\
         \tappend vga=788 initrd=/install.amd/initrd.gz --- quiet \n",
    )?;
    t.file(
        "isolinux/adtxt.cfg",
        "label expert\n\tmenu label E^xpert install\n\tkernel /install.amd/vmlinuz\n\
         \tappend priority=low vga=788 initrd=/install.amd/initrd.gz --- \n\
         include rqtxt.cfg\nlabel auto\n\tmenu label ^Automated install\n\tkernel /install.amd/vmlinuz\n\
         \tappend auto=true priority=critical vga=788 initrd=/install.amd/initrd.gz --- quiet \n",
    )?;
    t.file(
        "isolinux/rqtxt.cfg",
        "label rescue\n\tmenu label ^Rescue mode\n\tkernel /install.amd/vmlinuz\n\
         \tappend vga=788 initrd=/install.amd/initrd.gz rescue/enable=true --- quiet \n",
    )?;
    t.file("isolinux/adgtk.cfg", "")?;
    t.file(
        "boot/grub/grub.cfg",
        "if [ x$feature_default_font_path = xy ] ; then\n   font=unicode\nelse\n   font=$prefix/font.pf2\nfi\n\
         menuentry --hotkey=g 'Graphical install' {\n    set background_color=black\n\
         \x20   linux    /install.amd/vmlinuz vga=788 --- quiet \n    initrd   /install.amd/gtk/initrd.gz\n}\n\
         menuentry --hotkey=i 'Install' {\n    set background_color=black\n\
         \x20   linux    /install.amd/vmlinuz vga=788 --- quiet \n    initrd   /install.amd/initrd.gz\n}\n",
    )?;
    t.file("install.amd/vmlinuz", kernel)?;
    t.file("install.amd/initrd.gz", initrd)?;
    t.file("install.amd/gtk/initrd.gz", initrd)?;
    let path = dir.join("debian.iso");
    let mut args = vec!["-R", "-J", "-V", "Debian 12.8.0 amd64 n"];
    args.extend(ISOLINUX_BOOT);
    mkisofs(&t, &path, &args)?;
    Ok(Fixture {
        path,
        volume_id: "Debian 12.8.0 amd64 n",
        label: "installgui",
        cmdline: "vga=788 initrd=/install.amd/gtk/initrd.gz --- quiet",
        kernel: "/install.amd/vmlinuz",
        initrd: "/install.amd/gtk/initrd.gz",
    })
}

/// A GRUB-only image made by grub-mkrescue (BIOS platform), laid out like Rocky Linux 9.
pub fn grub_rescue(dir: &Path, kernel: &[u8], initrd: &[u8]) -> io::Result<Fixture> {
    let t = Tree::new(dir, "rocky")?;
    t.file("boot/grub/grub.cfg", ROCKY_GRUB_CFG)?;
    t.file("images/pxeboot/vmlinuz", kernel)?;
    t.file("images/pxeboot/initrd.img", initrd)?;
    let path = dir.join("rocky.iso");
    run(Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&path)
        .arg(&t.0)
        .args(["--", "-volid", "Rocky-9-3-x86_64-dvd"]))?;
    Ok(Fixture {
        path,
        volume_id: "Rocky-9-3-x86_64-dvd",
        label: "Install Rocky Linux 9",
        cmdline: "inst.stage2=hd:LABEL=Rocky-9-3-x86_64-dvd quiet",
        kernel: "/images/pxeboot/vmlinuz",
        initrd: "/images/pxeboot/initrd.img",
    })
}
