//! Real Linux against `rvmm-vhost scsi`: a Debian kernel under QEMU TCG with two
//! `vhost-user-scsi-pci` drives (a CD-sized ISO and one presented as a DVD) finds them as SCSI
//! CD-ROMs (sr0, sr1), finds each by volume label,
//! reads the primary volume descriptor at sector 16, mounts it and reads its files; the host
//! compares against the files it put on the ISO (built here with xorriso). udev's `cdrom_id`
//! (copied from the host) reports what udev rules would see: a CD drive with a data medium,
//! the condition for udev to run blkid on sr0 so installers find the label.
//!
//! Needs scripts/assets.sh (downloads the kernel once into the asset cache), xorriso and QEMU.

#[path = "vhost_blk_common/mod.rs"]
mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{assets, assets_with, qemu_tcg, run_ok, wait_socket, Proc, Scratch, APPEND};

/// Start `rvmm-vhost scsi` serving `iso` on `sock` and wait for its socket.
fn serve(sock: &Path, iso: &Path) -> Proc {
    let mut vhost = Proc(
        Command::new(env!("CARGO_BIN_EXE_rvmm-vhost"))
            .args(["scsi", "--socket"])
            .arg(sock)
            .arg("--cdrom")
            .arg(iso)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rvmm-vhost"),
    );
    wait_socket(sock, &mut vhost);
    vhost
}

/// Wait for a backend to exit after the frontend went away; its stderr on failure.
fn expect_clean_exit(vhost: &mut Proc, qemu_err: &str) {
    let st = vhost.wait_timeout(Duration::from_secs(10));
    let mut err = String::new();
    if let Some(e) = vhost.0.stderr.as_mut() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        st.is_some_and(|s| s.success()),
        "rvmm-vhost did not exit cleanly after the disconnect: {st:?}\n{err}\nqemu: {qemu_err}"
    );
}

/// udev's cdrom_id and the shared objects it needs (from `ldd`), to copy into the guest.
fn cdrom_id_files() -> Vec<PathBuf> {
    let bin = PathBuf::from("/lib/udev/cdrom_id");
    assert!(
        bin.exists(),
        "{} missing: scripts/setup.sh installs udev",
        bin.display()
    );
    let ldd = run_ok(Command::new("ldd").arg(&bin));
    let mut files = vec![bin];
    for line in ldd.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            files.push(PathBuf::from(p));
        }
    }
    assert!(
        files.iter().any(|f| f.ends_with("ld-linux-x86-64.so.2")),
        "no dynamic loader in ldd output:\n{ldd}"
    );
    files
}

const LABEL: &str = "RVMM_CD_TEST";

const DVD_LABEL: &str = "RVMM_DVD_TEST";

const GUEST_SCRIPT: &str = r#"
for i in $(seq 1 100); do [ -b /dev/sr0 ] && [ -b /dev/sr1 ] && break; sleep 0.1; done
cd_dev=$(findfs LABEL=RVMM_CD_TEST)
dvd_dev=$(findfs LABEL=RVMM_DVD_TEST)
echo "LABEL-DEV=$cd_dev"
echo "DVD-DEV=$dvd_dev"
cd=${cd_dev#/dev/}
echo "TYPE=$(cat /sys/block/$cd/device/type)"
echo "REMOVABLE=$(cat /sys/block/$cd/removable)"
echo "VENDOR=$(cat /sys/block/$cd/device/vendor)"
echo "SECTORS=$(cat /sys/block/$cd/size)"
# The kernel's view of MODE SENSE page 0x2A (capabilities and mechanical status).
tr '\t' ' ' < /proc/sys/dev/cdrom/info | tr -s ' ' | sed 's/^/CDINFO /'
# udev's own prober (from the host, run with the host's loader): what udev rules see.
cdrom_id() { /files/ld-linux-x86-64.so.2 --library-path /files /files/cdrom_id "$1"; }
cdrom_id "$cd_dev" | sed 's/^/UDEV /'
cdrom_id "$dvd_dev" | sed 's/^/UDEVDVD /'
echo "PVD-ID=$(dd if=$cd_dev bs=2048 skip=16 count=1 2>/dev/null | dd bs=1 skip=1 count=5 2>/dev/null)"
echo "PVD-LABEL=$(dd if=$cd_dev bs=2048 skip=16 count=1 2>/dev/null | dd bs=1 skip=40 count=12 2>/dev/null)"
dd if=/dev/zero of=$cd_dev bs=2048 count=1 2>/dev/null || echo "WRITE-REFUSED"
mount -t iso9660 -o ro "$cd_dev" /mnt || echo "MOUNT-FAILED"
echo "HELLO=$(cat /mnt/hello.txt)"
echo "BIG-MD5=$(md5sum < /mnt/images/Big_File.bin)"
echo "DEEP=$(cat /mnt/a/b/c/Mixed-Case.txt)"
umount /mnt
mount -t iso9660 -o ro "$dvd_dev" /mnt || echo "MOUNT-FAILED"
echo "DVD=$(cat /mnt/dvd.txt)"
umount /mnt
echo "GUEST-DONE"
"#;

#[test]
fn debian_kernel_mounts_the_iso_from_rvmm_vhost_scsi() {
    let s = Scratch::new("vhost-scsi");
    let tree = s.path("tree");
    std::fs::create_dir_all(tree.join("images")).unwrap();
    std::fs::create_dir_all(tree.join("a/b/c")).unwrap();
    std::fs::write(tree.join("hello.txt"), "hello from the rvmm cdrom\n").unwrap();
    std::fs::write(tree.join("a/b/c/Mixed-Case.txt"), "deep\n").unwrap();
    // 3 MiB of non-repeating-per-block data: reads of the wrong block show in the digest.
    let big: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(tree.join("images/Big_File.bin"), &big).unwrap();
    let iso = s.path("cd.iso");
    run_ok(
        Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-R", "-J", "-V", LABEL, "-o"])
            .arg(&iso)
            .arg(&tree),
    );
    let want_md5 = run_ok(Command::new("md5sum").arg(tree.join("images/Big_File.bin")));
    let want_md5 = want_md5.split_whitespace().next().unwrap().to_string();
    let iso_sectors = std::fs::metadata(&iso).unwrap().len() / 512;

    std::fs::write(s.path("test.sh"), GUEST_SCRIPT).unwrap();
    let kernel = assets_with(&s.path("test.sh"), &s.path("initrd.gz"), &cdrom_id_files());

    // A second drive: a small ISO in a 1 GiB (sparse) file, which the drive presents as a DVD.
    let dvd_tree = s.path("dvd-tree");
    std::fs::create_dir_all(&dvd_tree).unwrap();
    std::fs::write(dvd_tree.join("dvd.txt"), "on the dvd\n").unwrap();
    let dvd = s.path("dvd.iso");
    run_ok(
        Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-R", "-V", DVD_LABEL, "-o"])
            .arg(&dvd)
            .arg(&dvd_tree),
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dvd)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();

    let sock = s.path("scsi.sock");
    let dvd_sock = s.path("dvd.sock");
    let mut vhost = serve(&sock, &iso);
    let mut vhost_dvd = serve(&dvd_sock, &dvd);
    let serial = s.path("serial.log");
    let mut qemu = Proc(
        qemu_tcg(&kernel, &s.path("initrd.gz"), APPEND, &serial)
            .arg("-chardev")
            .arg(format!("socket,id=c,path={}", sock.display()))
            .args(["-device", "vhost-user-scsi-pci,chardev=c"])
            .arg("-chardev")
            .arg(format!("socket,id=d,path={}", dvd_sock.display()))
            .args(["-device", "vhost-user-scsi-pci,chardev=d"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qemu-system-x86_64"),
    );
    let st = qemu.wait_timeout(Duration::from_secs(120));
    let log = std::fs::read_to_string(&serial).unwrap_or_default();
    let mut qerr = String::new();
    if let Some(e) = qemu.0.stderr.as_mut() {
        let _ = e.read_to_string(&mut qerr);
    }
    assert!(
        st.is_some(),
        "guest did not power off in 120 s; console:\n{log}\n{qerr}"
    );
    expect_clean_exit(&mut vhost, &qerr);
    expect_clean_exit(&mut vhost_dvd, &qerr);
    for want in [
        "TYPE=5".to_string(),
        "REMOVABLE=1".to_string(),
        "VENDOR=RVMM".to_string(),
        format!("SECTORS={iso_sectors}"),
        "LABEL-DEV=/dev/sr".to_string(),
        "DVD-DEV=/dev/sr".to_string(),
        "CDINFO drive speed: 24".to_string(),
        "CDINFO Can read DVD: 1".to_string(),
        "CDINFO Can lock tray: 1".to_string(),
        "CDINFO Can open tray: 1".to_string(),
        "CDINFO Can write CD-R: 0".to_string(),
        "UDEV ID_CDROM=1".to_string(),
        "UDEV ID_CDROM_MEDIA=1".to_string(),
        "UDEV ID_CDROM_MEDIA_TRACK_COUNT_DATA=1".to_string(),
        "UDEV ID_CDROM_MEDIA_CD=1".to_string(),
        "UDEVDVD ID_CDROM_MEDIA_DVD=1".to_string(),
        "UDEVDVD ID_CDROM_MEDIA_TRACK_COUNT_DATA=1".to_string(),
        "DVD=on the dvd".to_string(),
        "PVD-ID=CD001".to_string(),
        format!("PVD-LABEL={LABEL}"),
        "WRITE-REFUSED".to_string(),
        "HELLO=hello from the rvmm cdrom".to_string(),
        format!("BIG-MD5={want_md5}"),
        "DEEP=deep".to_string(),
        "GUEST-DONE".to_string(),
        "RVMM-TEST-EXIT=0".to_string(),
    ] {
        assert!(log.contains(&want), "console lacks {want:?}:\n{log}");
    }
    for bad in ["MOUNT-FAILED", "I/O error", "critical medium error"] {
        assert!(!log.contains(bad), "console shows {bad:?}:\n{log}");
    }
}

const INSTALLER_SCRIPT: &str = r#"
echo "CMDLINE $(cat /proc/cmdline)"
for i in $(seq 1 100); do [ -b /dev/sr0 ] && break; sleep 0.1; done
# What dracut does with inst.stage2=hd:LABEL=…: decode the \xHH escapes, find the device.
raw=$(sed -n 's/.*inst\.stage2=hd:LABEL=\([^ ]*\).*/\1/p' /proc/cmdline)
label=$(printf "$raw")
echo "DECODED-LABEL=$label"
dev=$(findfs "LABEL=$label")
echo "STAGE2-DEV=$dev"
mount -t iso9660 -o ro "$dev" /mnt || echo "MOUNT-FAILED"
[ -f /mnt/.treeinfo ] && echo "TREEINFO-FOUND"
cmp /mnt/isolinux/vmlinuz /mnt/images/pxeboot/vmlinuz && echo "KERNELS-SAME"
umount /mnt
echo "GUEST-DONE"
"#;

/// The `rvmm --cdrom` path with QEMU standing in for the VMM: a CentOS 7 style ISO (made by
/// `iso::fixtures`) whose kernel and initrd are the Debian test kernel and initramfs; our
/// discovery picks the install entry (not the media-check default), the kernel and initrd are
/// read out of the ISO by our reader, and the guest, booted with the discovered command line,
/// finds its stage2 by the escaped label on the CD served by `rvmm-vhost scsi`.
#[test]
fn centos_style_iso_boots_its_install_entry_and_finds_its_label() {
    let s = Scratch::new("vhost-scsi-installer");
    std::fs::write(s.path("test.sh"), INSTALLER_SCRIPT).unwrap();
    let kernel = assets(&s.path("test.sh"), &s.path("initrd.gz"));
    let kernel_bytes = std::fs::read(&kernel).unwrap();
    let initrd_bytes = std::fs::read(s.path("initrd.gz")).unwrap();
    let fixture = iso::fixtures::centos7(&s.0, &kernel_bytes, &initrd_bytes, true).unwrap();

    let image = iso::Iso::open(&fixture.path).unwrap();
    let choice = iso::BootChoice {
        entry: None,
        append: Some("console=ttyS0 panic=-1".into()),
    };
    let boot = iso::discover_boot(&image, &choice).unwrap();
    assert_eq!(boot.label, "linux", "{boot}");
    let k = boot.read_kernel(&image).unwrap();
    assert!(k == kernel_bytes, "kernel read from the ISO differs");
    let i = boot.read_initrd(&image).unwrap();
    assert_eq!(&i[..initrd_bytes.len()], &initrd_bytes[..]);
    std::fs::write(s.path("k"), &k).unwrap();
    std::fs::write(s.path("i"), &i).unwrap();

    let sock = s.path("scsi.sock");
    let mut vhost = serve(&sock, &fixture.path);
    let serial = s.path("serial.log");
    let mut qemu = Proc(
        qemu_tcg(&s.path("k"), &s.path("i"), &boot.cmdline, &serial)
            .arg("-chardev")
            .arg(format!("socket,id=c,path={}", sock.display()))
            .args(["-device", "vhost-user-scsi-pci,chardev=c"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qemu-system-x86_64"),
    );
    let st = qemu.wait_timeout(Duration::from_secs(120));
    let log = std::fs::read_to_string(&serial).unwrap_or_default();
    let mut qerr = String::new();
    if let Some(e) = qemu.0.stderr.as_mut() {
        let _ = e.read_to_string(&mut qerr);
    }
    assert!(
        st.is_some(),
        "guest did not power off in 120 s; console:\n{log}\n{qerr}"
    );
    expect_clean_exit(&mut vhost, &qerr);
    for want in [
        r"CMDLINE initrd=initrd.img inst.stage2=hd:LABEL=CentOS\x207\x20x86_64 quiet console=ttyS0",
        "DECODED-LABEL=CentOS 7 x86_64",
        "STAGE2-DEV=/dev/sr0",
        "TREEINFO-FOUND",
        "KERNELS-SAME",
        "GUEST-DONE",
        "RVMM-TEST-EXIT=0",
    ] {
        assert!(log.contains(want), "console lacks {want:?}:\n{log}");
    }
    assert!(!log.contains("rd.live.check"), "media check chosen:\n{log}");
    assert!(!log.contains("MOUNT-FAILED"), "{log}");
}
