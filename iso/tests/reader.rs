//! ISO 9660 reader against images built by xorriso: Rock Ridge, Joliet and plain names, file
//! extents (checked against xorriso's own report), El Torito, and hostile copies.

mod common;

use common::{patch_extent, record_offset, xorriso_lba, Rng, Tree};
use iso::{Iso, IsoError, NameSource, Platform};

fn long_name() -> String {
    // Long enough that xorriso must spill the NM entry into a CE continuation area.
    format!("{}.txt", "Long-Name_".repeat(22))
}

fn sample_tree() -> Tree {
    let t = Tree::new();
    t.file("Boot/Grub/grub.cfg", "set default=0\n");
    t.file("README.md", "hello iso\n");
    t.file(&format!("docs/{}", long_name()), "long\n");
    t.file("a/b/c/d/e/f/g/h/i/j/deep.txt", "deep file\n");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    t.file("images/big.bin", &big);
    t.file("empty", "");
    t.file("docs/Mixed Case Name with spaces, ünïcödé.txt", "m\n");
    t
}

#[test]
fn rock_ridge_names_contents_and_extents() {
    let t = sample_tree();
    let path = t.mkisofs(&["-R", "-J", "-V", "CentOS 7 x86_64"]);
    let iso = Iso::open(&path).unwrap();
    assert_eq!(iso.name_source(), NameSource::RockRidge);
    assert_eq!(iso.volume_id(), "CentOS 7 x86_64");
    assert_eq!(
        iso.read_path("/README.md", 1 << 20).unwrap(),
        b"hello iso\n"
    );
    // Case preserved by Rock Ridge, and also found ignoring case.
    let cfg = iso.lookup("Boot/Grub/grub.cfg").unwrap();
    assert_eq!(cfg.name, "grub.cfg");
    assert!(iso.lookup("/boot/grub/GRUB.CFG").is_ok());
    let long = format!("/docs/{}", long_name());
    assert_eq!(iso.read_path(&long, 100).unwrap(), b"long\n");
    assert_eq!(
        iso.read_path("/a/b/c/d/e/f/g/h/i/j/deep.txt", 100).unwrap(),
        b"deep file\n"
    );
    let big = iso.read_path("/images/big.bin", 1 << 20).unwrap();
    assert_eq!(big.len(), 300_000);
    assert!(big.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    assert_eq!(iso.read_path("/empty", 10).unwrap(), b"");
    for p in ["/README.md", "/images/big.bin", long.as_str()] {
        let e = iso.lookup(p).unwrap();
        assert_eq!(e.extents[0].lba, xorriso_lba(&path, p), "{p}");
    }
    // Partial reads at an offset.
    let e = iso.lookup("/images/big.bin").unwrap();
    let mut buf = [0u8; 5];
    iso.read_file_at(&e, 1000, &mut buf).unwrap();
    assert_eq!(buf, [247, 248, 249, 250, 0]);
    assert!(iso.read_file_at(&e, 299_998, &mut buf).is_err());
    assert!(matches!(
        iso.read_path("/images/big.bin", 1000),
        Err(IsoError::TooLarge { size: 300_000, .. })
    ));
    assert!(matches!(
        iso.lookup("/nope"),
        Err(IsoError::NotFound { .. })
    ));
    let mut all = Vec::new();
    iso.walk(|p, _| all.push(p.to_string())).unwrap();
    assert!(
        all.contains(&"/a/b/c/d/e/f/g/h/i/j/deep.txt".to_string()),
        "{all:?}"
    );
    assert!(all.contains(&long), "{all:?}");
}

#[test]
fn joliet_names_without_rock_ridge() {
    let t = sample_tree();
    let path = t.mkisofs(&["--norock", "-J", "-joliet-long", "-V", "JOLIET"]);
    let iso = Iso::open(&path).unwrap();
    assert_eq!(iso.name_source(), NameSource::Joliet);
    assert_eq!(iso.volume_id(), "JOLIET");
    let e = iso.lookup("/Boot/Grub/grub.cfg").unwrap();
    assert_eq!(e.name, "grub.cfg");
    assert_eq!(iso.read_path("/README.md", 100).unwrap(), b"hello iso\n");
    // Joliet names are UCS-2 and longer than the 8.3/31-character ISO 9660 ones.
    assert_eq!(
        iso.read_path("/docs/Mixed Case Name with spaces, ünïcödé.txt", 100)
            .unwrap(),
        b"m\n"
    );
}

#[test]
fn plain_iso9660_names_match_ignoring_case() {
    let t = Tree::new();
    t.file("isolinux/isolinux.cfg", "default linux\n");
    let path = t.mkisofs(&["--norock", "-V", "PLAIN"]);
    let iso = Iso::open(&path).unwrap();
    assert_eq!(iso.name_source(), NameSource::Iso9660);
    let e = iso.lookup("/isolinux/isolinux.cfg").unwrap();
    assert_eq!(e.name, "ISOLINUX.CFG");
    assert_eq!(iso.read_file(&e, 100).unwrap(), b"default linux\n");
}

#[test]
fn el_torito_bios_and_efi_entries() {
    let t = Tree::new();
    t.copy(
        "isolinux/isolinux.bin",
        "/usr/lib/ISOLINUX/isolinux.bin".as_ref(),
    );
    t.file("images/efiboot.img", vec![0u8; 64 * 1024]);
    let path = t.mkisofs(&[
        "-R",
        "-V",
        "BOOT",
        "-b",
        "isolinux/isolinux.bin",
        "-c",
        "isolinux/boot.cat",
        "-no-emul-boot",
        "-boot-load-size",
        "4",
        "-boot-info-table",
        "-eltorito-alt-boot",
        "-e",
        "images/efiboot.img",
        "-no-emul-boot",
    ]);
    let iso = Iso::open(&path).unwrap();
    let cat = iso.boot_catalog().unwrap().expect("boot catalog");
    assert_eq!(cat.entries.len(), 2, "{cat:?}");
    let bios = &cat.entries[0];
    assert_eq!(bios.platform, Platform::X86Bios);
    assert!(bios.bootable);
    assert_eq!(bios.media_type, 0);
    assert_eq!(bios.sector_count, 4);
    assert_eq!(bios.load_lba, xorriso_lba(&path, "/isolinux/isolinux.bin"));
    let efi = &cat.entries[1];
    assert_eq!(efi.platform, Platform::Efi);
    assert_eq!(efi.load_lba, xorriso_lba(&path, "/images/efiboot.img"));
    // An image without boot record has no catalog.
    let plain = Tree::new();
    plain.file("x", "y");
    let p2 = plain.mkisofs(&["-R"]);
    assert_eq!(Iso::open(&p2).unwrap().boot_catalog().unwrap(), None);
}

fn from_bytes(b: Vec<u8>) -> iso::Result<Iso> {
    Iso::from_source(Box::new(b), "test image")
}

#[test]
fn truncated_and_non_iso_images_are_clean_errors() {
    let t = sample_tree();
    let bytes = std::fs::read(t.mkisofs(&["-R", "-J"])).unwrap();
    for cut in [0, 100, 16 * 2048, 16 * 2048 + 100, 17 * 2048, 20 * 2048] {
        let r = from_bytes(bytes[..cut].to_vec());
        assert!(
            matches!(r, Err(IsoError::Corrupt { .. })),
            "cut {cut}: {r:?}"
        );
    }
    // Cut in the file data: opening works, reading what is gone fails cleanly.
    let e = from_bytes(bytes.clone())
        .unwrap()
        .lookup("/images/big.bin")
        .unwrap();
    let cut = e.extents[0].offset() as usize + 1000;
    let iso = from_bytes(bytes[..cut].to_vec()).unwrap();
    let err = iso.read_path("/images/big.bin", 1 << 20).unwrap_err();
    assert!(err.to_string().contains("beyond the end"), "{err}");
    assert!(matches!(
        from_bytes(vec![0u8; 40 * 2048]),
        Err(IsoError::Corrupt { .. })
    ));
    let missing = Iso::open("/nonexistent/x.iso").unwrap_err();
    assert!(matches!(missing, IsoError::Io { .. }), "{missing}");
}

/// A plain ISO 9660 image with /SUB/FILE.TXT and the byte offsets of their records.
fn patchable() -> (Vec<u8>, usize, usize, u32) {
    let t = Tree::new();
    t.file("SUB/FILE.TXT", "data");
    let bytes = std::fs::read(t.mkisofs(&["--norock", "-V", "P"])).unwrap();
    let iso = from_bytes(bytes.clone()).unwrap();
    let root_lba = iso.root().extents[0].lba;
    let sub = iso.lookup("/SUB").unwrap();
    let sub_rec = record_offset(&bytes, root_lba, b"SUB");
    let file_rec = record_offset(&bytes, sub.extents[0].lba, b"FILE.TXT");
    (bytes, sub_rec, file_rec, root_lba)
}

#[test]
fn looping_directories_do_not_hang() {
    let (mut bytes, sub_rec, _, root_lba) = patchable();
    // /SUB now points back at the root directory.
    patch_extent(&mut bytes, sub_rec, root_lba, 2048);
    let iso = from_bytes(bytes).unwrap();
    let err = iso.walk(|_, _| {}).unwrap_err();
    assert!(err.to_string().contains("loop"), "{err}");
    let deep = "/SUB".repeat(100);
    assert!(iso.lookup(&deep).is_err());
    assert!(iso.lookup(&"/SUB".repeat(10)).unwrap().is_dir);
}

#[test]
fn absurd_sizes_and_bad_extents_are_errors() {
    let (orig, sub_rec, file_rec, _) = patchable();
    let mut bytes = orig.clone();
    patch_extent(&mut bytes, sub_rec, 30, 0xFFFF_F000);
    let iso = from_bytes(bytes).unwrap();
    let err = iso.lookup("/SUB/FILE.TXT").unwrap_err();
    assert!(err.to_string().contains("claims"), "{err}");

    let mut bytes = orig.clone();
    patch_extent(&mut bytes, file_rec, 0xFFFF_FF00, 4);
    let iso = from_bytes(bytes).unwrap();
    let err = iso.read_path("/SUB/FILE.TXT", 100).unwrap_err();
    assert!(err.to_string().contains("beyond the end"), "{err}");

    let mut bytes = orig.clone();
    patch_extent(&mut bytes, file_rec, 20, 0xFFFF_FFFF);
    let iso = from_bytes(bytes).unwrap();
    assert!(matches!(
        iso.read_path("/SUB/FILE.TXT", 1 << 20),
        Err(IsoError::TooLarge { .. })
    ));
    assert!(iso.read_path("/SUB/FILE.TXT", u64::MAX).is_err());

    // A record length shorter than a record header.
    let mut bytes = orig;
    bytes[file_rec] = 20;
    let iso = from_bytes(bytes).unwrap();
    assert!(matches!(
        iso.lookup("/SUB/FILE.TXT"),
        Err(IsoError::Corrupt { .. })
    ));
}

#[test]
fn random_corruption_never_panics() {
    let t = sample_tree();
    t.copy(
        "isolinux/isolinux.bin",
        "/usr/lib/ISOLINUX/isolinux.bin".as_ref(),
    );
    t.file(
        "isolinux/isolinux.cfg",
        "include menu.cfg\ndefault linux\nlabel linux\n kernel vmlinuz\n append initrd=initrd.img\n",
    );
    t.file("isolinux/menu.cfg", "menu include isolinux.cfg\n");
    t.file("isolinux/vmlinuz", "k");
    t.file("isolinux/initrd.img", "i");
    let orig = std::fs::read(t.mkisofs(&[
        "-R",
        "-J",
        "-b",
        "isolinux/isolinux.bin",
        "-c",
        "isolinux/boot.cat",
        "-no-emul-boot",
    ]))
    .unwrap();
    // Metadata lives in the first ~60 blocks: corrupt there, where it matters.
    let meta = (60 * 2048).min(orig.len()) as u64;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut opened = 0;
    for _ in 0..400 {
        let mut b = orig.clone();
        for _ in 0..1 + rng.below(8) {
            let at = (16 * 2048 + rng.below(meta - 16 * 2048)) as usize;
            b[at] = rng.next() as u8;
        }
        let Ok(iso) = from_bytes(b) else { continue };
        opened += 1;
        let mut files = Vec::new();
        let _ = iso.walk(|p, e| files.push((p.to_string(), e.clone())));
        for (_, e) in files.iter().filter(|(_, e)| !e.is_dir) {
            let _ = iso.read_file(e, 1 << 20);
        }
        let _ = iso.boot_catalog();
        let _ = iso::discover_boot(&iso, &Default::default());
    }
    assert!(
        opened > 100,
        "most corrupted images should still open ({opened})"
    );
}

#[test]
fn multi_extent_records_join_into_one_file() {
    let t = Tree::new();
    t.file("A.TXT", "first-");
    t.file("B.TXT", "second");
    let mut bytes = std::fs::read(t.mkisofs(&["--norock", "-V", "M"])).unwrap();
    let root = from_bytes(bytes.clone()).unwrap().root().extents[0].lba;
    let a = record_offset(&bytes, root, b"A.TXT");
    let b = record_offset(&bytes, root, b"B.TXT");
    // A's record continues in the next one (B's, renamed to A): one file, two extents.
    bytes[a + 25] |= 0x80;
    bytes[b + 33] = b'A';
    let iso = from_bytes(bytes).unwrap();
    let e = iso.lookup("/A.TXT").unwrap();
    assert_eq!(e.extents.len(), 2);
    assert_eq!(iso.read_file(&e, 100).unwrap(), b"first-second");
    let mut mid = [0u8; 4];
    iso.read_file_at(&e, 5, &mut mid).unwrap();
    assert_eq!(&mid, b"-sec");
    assert_eq!(iso.read_dir(iso.root()).unwrap().len(), 1);
}

#[test]
fn rock_ridge_relocated_deep_directories_are_followed() {
    let t = Tree::new();
    t.file("a/b/c/d/e/f/g/h/i/j/deep.txt", "deep file\n");
    let path = t.mkisofs(&["-R", "-rr_reloc_dir", "rr_moved"]);
    let iso = Iso::open(&path).unwrap();
    let e = iso.lookup("/a/b/c/d/e/f/g/h/i/j/deep.txt").unwrap();
    assert_eq!(iso.read_file(&e, 100).unwrap(), b"deep file\n");
    assert_eq!(
        e.extents[0].lba,
        xorriso_lba(&path, "/a/b/c/d/e/f/g/h/i/j/deep.txt")
    );
    // The relocated directory is reached once, through its CL link, not again under rr_moved.
    let mut seen = Vec::new();
    iso.walk(|p, _| seen.push(p.to_string())).unwrap();
    let deep: Vec<&String> = seen.iter().filter(|p| p.ends_with("deep.txt")).collect();
    assert_eq!(deep, ["/a/b/c/d/e/f/g/h/i/j/deep.txt"], "{seen:?}");
}

#[test]
fn rock_ridge_symlinks_are_ignored_safely() {
    let t = Tree::new();
    t.file("README.md", "hello\n");
    std::os::unix::fs::symlink("README.md", t.root().join("link")).unwrap();
    std::os::unix::fs::symlink("loop", t.root().join("loop")).unwrap();
    std::os::unix::fs::symlink("/", t.root().join("rootlink")).unwrap();
    let iso = Iso::open(t.mkisofs(&["-R"])).unwrap();
    for l in ["/link", "/loop", "/rootlink"] {
        let e = iso.lookup(l).unwrap();
        assert!(!e.is_dir, "{l}");
        assert_eq!(iso.read_file(&e, 100).unwrap(), b"", "{l}");
    }
    assert!(iso.lookup("/rootlink/README.md").is_err());
    iso.walk(|_, _| {}).unwrap();
}

#[test]
fn a_broken_joliet_tree_falls_back_to_the_primary_one() {
    let t = sample_tree();
    let mut bytes = std::fs::read(t.mkisofs(&["--norock", "-J", "-V", "J"])).unwrap();
    let svd = (16..32)
        .map(|b| b * 2048)
        .find(|&o| bytes[o] == 2 && &bytes[o + 1..o + 6] == b"CD001")
        .expect("a supplementary volume descriptor");
    patch_extent(&mut bytes, svd + 156, 0xFFFF_0000, 2048);
    let iso = from_bytes(bytes).unwrap();
    assert_eq!(iso.name_source(), NameSource::Iso9660);
    assert_eq!(iso.read_path("/README.MD", 100).unwrap(), b"hello iso\n");
}
