//! Installer discovery on ISOs laid out like CentOS 7, Debian netinst, a GRUB-only
//! grub-mkrescue image and bare installer trees.

mod common;

use common::Tree;
use iso::{discover_boot, BootChoice, BootSource, Iso, IsoError};

/// A temp dir holding a fixture image.
fn fixture(
    build: impl FnOnce(&std::path::Path) -> std::io::Result<iso::fixtures::Fixture>,
) -> (tempfile::TempDir, iso::fixtures::Fixture) {
    let dir = tempfile::tempdir().unwrap();
    let f = build(dir.path()).expect("build the fixture image (xorriso, grub-mkrescue)");
    (dir, f)
}

const CENTOS_CMDLINE: &str = r"initrd=initrd.img inst.stage2=hd:LABEL=CentOS\x207\x20x86_64 quiet";

fn choice(entry: Option<&str>, append: Option<&str>) -> BootChoice {
    BootChoice {
        entry: entry.map(String::from),
        append: append.map(String::from),
    }
}

#[test]
fn centos7_isolinux_picks_install_over_media_check_default() {
    let (_d, f) = fixture(|d| iso::fixtures::centos7(d, b"centos kernel", b"centos initrd", true));
    let path = f.path.clone();
    assert_eq!(f.cmdline, CENTOS_CMDLINE);
    let head = std::fs::read(&path).unwrap();
    assert_eq!(
        &head[510..512],
        &[0x55, 0xAA],
        "an isohybrid image with an MBR"
    );
    let iso = Iso::open(&path).unwrap();
    let b = discover_boot(&iso, &BootChoice::default()).unwrap();
    assert_eq!(b.source, BootSource::Isolinux);
    assert_eq!(b.label, "linux");
    assert_eq!(b.config, "/isolinux/isolinux.cfg");
    assert_eq!(b.cmdline, CENTOS_CMDLINE);
    assert_eq!(b.kernel.path, "/isolinux/vmlinuz");
    assert_eq!(
        iso.read_file(&b.kernel.entry, 1 << 20).unwrap(),
        b"centos kernel"
    );
    assert_eq!(b.initrds.len(), 1);
    assert_eq!(b.initrds[0].path, "/isolinux/initrd.img");
    assert_eq!(
        iso.read_file(&b.initrds[0].entry, 1 << 20).unwrap(),
        b"centos initrd"
    );
    assert_eq!(
        (b.label.as_str(), b.kernel.path.as_str()),
        (f.label, f.kernel)
    );

    // The media check is still there for whoever asks for it, by label or by menu title.
    let check = discover_boot(&iso, &choice(Some("check"), None)).unwrap();
    assert_eq!(check.label, "check");
    assert!(
        check.cmdline.ends_with("rd.live.check quiet"),
        "{}",
        check.cmdline
    );
    let vesa = discover_boot(
        &iso,
        &choice(Some("Install CentOS 7 in basic graphics mode"), None),
    );
    assert_eq!(vesa.unwrap().label, "vesa");
    // Text help blocks do not define labels.
    assert!(discover_boot(&iso, &choice(Some("notalabel"), None)).is_err());

    let extra = discover_boot(&iso, &choice(None, Some("console=ttyS0 inst.text"))).unwrap();
    assert_eq!(
        extra.cmdline,
        format!("{CENTOS_CMDLINE} console=ttyS0 inst.text")
    );
}

#[test]
fn boot_entry_that_is_not_linux_is_refused_with_the_list() {
    let (_d, f) = fixture(|d| iso::fixtures::centos7(d, b"k", b"i", true));
    let iso = Iso::open(&f.path).unwrap();
    let err = discover_boot(&iso, &choice(Some("local"), None)).unwrap_err();
    assert!(matches!(err, IsoError::NoBootEntry { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("isolinux:linux") && msg.contains("--boot-entry"),
        "{msg}"
    );
}

#[test]
fn centos7_efi_grub_and_treeinfo_without_isolinux() {
    let (_d, f) = fixture(|d| iso::fixtures::centos7(d, b"k", b"i", false));
    let iso = Iso::open(&f.path).unwrap();
    let b = discover_boot(&iso, &BootChoice::default()).unwrap();
    assert_eq!(b.source, BootSource::Grub);
    assert_eq!(b.config, "/EFI/BOOT/grub.cfg");
    // `set default="1"` is the media check: the install entry is chosen instead.
    assert_eq!(b.label, "Install CentOS 7");
    assert_eq!(
        b.cmdline,
        r"inst.stage2=hd:LABEL=CentOS\x207\x20x86_64 quiet"
    );
    assert_eq!(b.kernel.path, "/images/pxeboot/vmlinuz");
    assert_eq!(b.initrds[0].path, "/images/pxeboot/initrd.img");
    let rescue = discover_boot(&iso, &choice(Some("Rescue a CentOS system"), None)).unwrap();
    assert!(rescue.cmdline.contains(" rescue "), "{}", rescue.cmdline);

    // The .treeinfo alone gives the same kernel with a stage2 derived from the volume label.
    let menus = iso::boot::menus(&iso).unwrap();
    let (_, tree) = menus
        .iter()
        .find(|(s, _)| *s == BootSource::Treeinfo)
        .unwrap();
    assert_eq!(
        tree.entries[0].cmdline,
        r"inst.stage2=hd:LABEL=CentOS\x207\x20x86_64"
    );
    assert_eq!(
        tree.entries[0].kernel.as_deref(),
        Some("/images/pxeboot/vmlinuz")
    );
}

#[test]
fn debian_netinst_menu_default_through_includes() {
    let (_d, f) = fixture(|d| iso::fixtures::debian_netinst(d, b"debian kernel", b"debian initrd"));
    let iso = Iso::open(&f.path).unwrap();
    let b = discover_boot(&iso, &BootChoice::default()).unwrap();
    assert_eq!(b.source, BootSource::Isolinux);
    assert_eq!(b.label, "installgui");
    assert_eq!(
        b.cmdline,
        "vga=788 initrd=/install.amd/gtk/initrd.gz --- quiet"
    );
    assert_eq!(b.kernel.path, "/install.amd/vmlinuz");
    assert_eq!(b.initrds.len(), 1);
    assert_eq!(b.initrds[0].path, "/install.amd/gtk/initrd.gz");
    assert_eq!(
        iso.read_file(&b.initrds[0].entry, 100).unwrap(),
        b"debian initrd"
    );
    assert_eq!((b.label.as_str(), b.cmdline.as_str()), (f.label, f.cmdline));

    let text = discover_boot(&iso, &choice(Some("install"), Some("console=ttyS0"))).unwrap();
    assert_eq!(
        text.cmdline,
        "vga=788 initrd=/install.amd/initrd.gz --- quiet console=ttyS0"
    );
    assert_eq!(text.initrds[0].path, "/install.amd/initrd.gz");
    let expert = discover_boot(&iso, &choice(Some("expert"), None)).unwrap();
    assert!(
        expert.cmdline.starts_with("priority=low"),
        "{}",
        expert.cmdline
    );
    // The rescue entry from a nested include is parsed, and recognised as rescue.
    let menus = iso::boot::menus(&iso).unwrap();
    let isolinux = &menus[0].1;
    let rescue = isolinux
        .entries
        .iter()
        .find(|e| e.label == "rescue")
        .unwrap();
    assert!(rescue.in_submenu);
    assert_eq!(rescue.title, "Rescue mode");
    // GRUB's menu of the same ISO is parsed too.
    let (src, grub) = &menus[1];
    assert_eq!(*src, BootSource::Grub);
    assert_eq!(grub.entries.len(), 2);
    assert_eq!(grub.entries[1].cmdline, "vga=788 --- quiet");
}

#[test]
fn grub_mkrescue_iso_with_submenu_and_default_index() {
    let (_d, f) = fixture(|d| iso::fixtures::grub_rescue(d, b"rocky kernel", b"rocky initrd"));
    let path = f.path.clone();
    let iso = Iso::open(&path).unwrap();
    assert_eq!(iso.volume_id(), "Rocky-9-3-x86_64-dvd");
    let cat = iso
        .boot_catalog()
        .unwrap()
        .expect("grub-mkrescue writes El Torito");
    assert!(cat
        .entries
        .iter()
        .any(|e| e.platform == iso::Platform::X86Bios && e.bootable));
    let b = discover_boot(&iso, &BootChoice::default()).unwrap();
    assert_eq!(b.source, BootSource::Grub);
    assert_eq!(b.label, "Install Rocky Linux 9");
    assert_eq!(b.cmdline, "inst.stage2=hd:LABEL=Rocky-9-3-x86_64-dvd quiet");
    let initrds: Vec<&str> = b.initrds.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(initrds, ["/images/pxeboot/initrd.img"]);
    assert_eq!(b.read_kernel(&iso).unwrap(), b"rocky kernel");
    assert_eq!((b.label.as_str(), b.cmdline.as_str()), (f.label, f.cmdline));
    let check = discover_boot(
        &iso,
        &choice(Some("Test this media & install Rocky Linux 9"), None),
    );
    assert!(check.unwrap().cmdline.contains("rd.live.check"));
}

#[test]
fn bare_trees_treeinfo_and_debian() {
    let t = Tree::new();
    t.file(
        ".treeinfo",
        "[images-x86_64]\nkernel = images/pxeboot/vmlinuz\ninitrd = images/pxeboot/initrd.img\n",
    );
    t.file("images/pxeboot/vmlinuz", "k");
    t.file("images/pxeboot/initrd.img", "i");
    let iso = Iso::open(t.mkisofs(&["-R", "-V", "Fedora S dvd"])).unwrap();
    let b = discover_boot(&iso, &BootChoice::default()).unwrap();
    assert_eq!(b.source, BootSource::Treeinfo);
    assert_eq!(b.cmdline, r"inst.stage2=hd:LABEL=Fedora\x20S\x20dvd");

    let d = Tree::new();
    d.file("install.amd/vmlinuz", "k");
    d.file("install.amd/initrd.gz", "i");
    let iso = Iso::open(d.mkisofs(&["-R"])).unwrap();
    let b = discover_boot(&iso, &choice(None, Some("priority=low"))).unwrap();
    assert_eq!(b.source, BootSource::Debian);
    assert_eq!(b.initrds[0].path, "/install.amd/initrd.gz");
    assert_eq!(b.cmdline, "priority=low");
}

#[test]
fn no_boot_configuration_and_include_loops_are_clean_errors() {
    let t = Tree::new();
    t.file("README", "not an installer");
    let iso = Iso::open(t.mkisofs(&["-R"])).unwrap();
    let err = discover_boot(&iso, &BootChoice::default()).unwrap_err();
    assert!(err.to_string().contains("--kernel"), "{err}");

    let l = Tree::new();
    l.file(
        "isolinux/isolinux.cfg",
        "include a.cfg\nlabel x\n kernel vmlinuz\n",
    );
    l.file("isolinux/a.cfg", "include isolinux.cfg\n");
    l.file("boot/grub/grub.cfg", "source /boot/grub/b.cfg\n");
    l.file("boot/grub/b.cfg", "source /boot/grub/grub.cfg\n");
    let iso = Iso::open(l.mkisofs(&["-R"])).unwrap();
    let err = discover_boot(&iso, &BootChoice::default()).unwrap_err();
    assert!(matches!(err, IsoError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("loop"), "{err}");
}

#[test]
fn grub_braces_on_their_own_line_and_functions_are_followed() {
    let t = Tree::new();
    t.file(
        "boot/grub/grub.cfg",
        "function load_video\n{\n  menuentry 'not an entry' { linux /nope }\n}\n\
         set default=install\n\
         menuentry 'Rescue' --id rescue\n{\n  linux /vmlinuz rescue\n}\n\
         menuentry 'Install' --id=install\n{\n  if [ x$a = xb ]; then\n    set x=1\n  fi\n\
         \x20 linux /vmlinuz inst.text\n  initrd /initrd.img /extra.img\n}\n",
    );
    t.file("vmlinuz", "k");
    t.file("initrd.img", "i");
    t.file("extra.img", "extra");
    let iso = Iso::open(t.mkisofs(&["-R"])).unwrap();
    let menus = iso::boot::menus(&iso).unwrap();
    let labels: Vec<&str> = menus[0]
        .1
        .entries
        .iter()
        .map(|e| e.label.as_str())
        .collect();
    assert_eq!(labels, ["rescue", "install"]);
    let b = discover_boot(&iso, &BootChoice::default()).unwrap();
    assert_eq!(
        (b.label.as_str(), b.cmdline.as_str()),
        ("install", "inst.text")
    );
    assert_eq!(b.read_kernel(&iso).unwrap(), b"k");
    // Initrds load in order, each padded to 4 bytes when concatenated.
    let initrds: Vec<&str> = b.initrds.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(initrds, ["/initrd.img", "/extra.img"]);
    assert_eq!(b.read_initrd(&iso).unwrap(), b"i\0\0\0extra\0\0\0");
    let shown = b.to_string();
    assert!(
        shown.contains("grub entry \"install\"") && shown.contains("/initrd.img"),
        "{shown}"
    );
}

#[test]
fn isolinux_config_found_next_to_the_el_torito_boot_image() {
    // openSUSE layout: ISOLINUX lives in boot/x86_64/loader and boots `linux` by label.
    let t = Tree::new();
    t.copy(
        "boot/x86_64/loader/isolinux.bin",
        "/usr/lib/ISOLINUX/isolinux.bin".as_ref(),
    );
    t.file(
        "boot/x86_64/loader/isolinux.cfg",
        "default harddisk\nlabel harddisk\n  localboot 0x80\nlabel mediachk\n  kernel linux\n\
         \x20 append initrd=initrd mediacheck=1 splash=silent\nlabel linux\n  kernel linux\n\
         \x20 append initrd=initrd splash=silent showopts\n",
    );
    t.file("boot/x86_64/loader/linux", "suse kernel");
    t.file("boot/x86_64/loader/initrd", "suse initrd");
    let iso = Iso::open(t.mkisofs(&[
        "-R",
        "-b",
        "boot/x86_64/loader/isolinux.bin",
        "-c",
        "boot/x86_64/loader/boot.cat",
        "-no-emul-boot",
        "-boot-load-size",
        "4",
        "-boot-info-table",
    ]))
    .unwrap();
    let b = discover_boot(&iso, &BootChoice::default()).unwrap();
    assert_eq!(b.config, "/boot/x86_64/loader/isolinux.cfg");
    assert_eq!(b.label, "linux");
    assert_eq!(b.kernel.path, "/boot/x86_64/loader/linux");
    assert_eq!(b.initrds[0].path, "/boot/x86_64/loader/initrd");
    assert_eq!(b.cmdline, "initrd=initrd splash=silent showopts");
}

#[test]
fn include_bombs_stop_at_the_include_budget() {
    // Wide, shallow include trees: 20 x 20 x 20 parses without a budget (and 1000^15 for a
    // 1 MiB config), within the depth limit; an error at once with it.
    let t = Tree::new();
    t.file("isolinux/isolinux.cfg", "include b.cfg\n".repeat(20));
    t.file("isolinux/b.cfg", "include c.cfg\n".repeat(20));
    t.file("isolinux/c.cfg", "include d.cfg\n".repeat(20));
    t.file("isolinux/d.cfg", "label x\n kernel vmlinuz\n");
    let iso = Iso::open(t.mkisofs(&["-R"])).unwrap();
    let err = discover_boot(&iso, &BootChoice::default()).unwrap_err();
    assert!(err.to_string().contains("included files"), "{err}");

    let g = Tree::new();
    g.file("boot/grub/grub.cfg", "source /boot/grub/b.cfg\n".repeat(20));
    g.file("boot/grub/b.cfg", "source /boot/grub/c.cfg\n".repeat(20));
    g.file("boot/grub/c.cfg", "menuentry 'x' {\n linux /vmlinuz\n}\n");
    let iso = Iso::open(g.mkisofs(&["-R"])).unwrap();
    let err = discover_boot(&iso, &BootChoice::default()).unwrap_err();
    assert!(err.to_string().contains("more than 256 files"), "{err}");
}
