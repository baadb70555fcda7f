//! `rvmm --cdrom`: installer-like ISOs from `iso::fixtures` (CentOS 7 with the media check as
//! menu default, Debian netinst, a GRUB-only image) whose kernel is the `cdcheck` guest. The
//! guest reports the command line and initrd it was booted with and reads the CD through
//! virtio-scsi (INQUIRY, READ CAPACITY, the volume label at sector 16), so each test checks
//! that rvmm chose the install entry, passed its command line unchanged (`\x20` escapes
//! included) and attached the same ISO as a CD-ROM. Also: the boot order with disks, and
//! hostile ISOs.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use iso::fixtures::{self, Fixture};
use rvmm_tests::{fnv1a32, guest, qemu, qemu_img, rvmm, Outcome};

/// The initrd packed on every ISO (a multiple of 4 bytes, so rvmm's copy is exactly this).
fn initrd() -> Vec<u8> {
    (0..8292u32).map(|i| (i * 37 + i / 251) as u8).collect()
}

fn kernel() -> Vec<u8> {
    std::fs::read(guest("cdcheck")).unwrap()
}

fn qcow2(dir: &Path, name: &str) -> String {
    let p = dir.join(name).to_str().unwrap().to_string();
    qemu_img(&["create", "-q", "-f", "qcow2", &p, "1G"]);
    p
}

/// Check the guest saw `cmdline`, our initrd and the CD of `fx`.
fn assert_booted(out: &Outcome, fx: &Fixture, cmdline: &str) {
    out.assert_pass();
    assert_eq!(
        out.line("cdcheck: cmdline: "),
        Some(cmdline),
        "{}",
        out.report()
    );
    let rd = initrd();
    assert_eq!(
        out.field_u64("cdcheck: initrd ", "size"),
        Some(rd.len() as u64),
        "{}",
        out.report()
    );
    assert_eq!(
        out.field_u64("cdcheck: initrd ", "fnv"),
        Some(u64::from(fnv1a32(&rd))),
        "{}",
        out.report()
    );
    assert_eq!(
        out.field_u64("cdcheck: inquiry ", "type"),
        Some(5),
        "an MMC device\n{}",
        out.report()
    );
    assert_eq!(
        out.line("cdcheck: label: "),
        Some(fx.volume_id),
        "{}",
        out.report()
    );
    let size = std::fs::metadata(&fx.path).unwrap().len();
    assert_eq!(
        out.field_u64("cdcheck: capacity ", "blocks"),
        Some(size.div_ceil(2048)),
        "{}",
        out.report()
    );
    assert!(
        out.field_u64("cdcheck: msix ", "interrupts") > Some(0),
        "completions signal MSI-X through KVM routes\n{}",
        out.report()
    );
    assert!(
        out.stderr.contains(&format!("entry {:?}", fx.label)) && out.stderr.contains(fx.kernel),
        "rvmm must say what it boots\n{}",
        out.report()
    );
}

fn cd_run(fx: &Fixture) -> rvmm_tests::Vm {
    rvmm()
        .arg("--cdrom")
        .arg(&fx.path)
        .timeout(Duration::from_secs(30))
}

#[test]
fn centos7_boots_the_install_entry_with_its_escapes_and_an_empty_disk_attached() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixtures::centos7(dir.path(), &kernel(), &initrd(), true).unwrap();
    let disk = qcow2(dir.path(), "vhost1.qcow2");
    // No --serial: the entry's command line exactly, without console=ttyS0.
    let out = cd_run(&fx).serial(None).arg("--disk").arg(&disk).run();
    assert_booted(&out, &fx, fx.cmdline);
    assert!(
        !out.line("cdcheck: cmdline: ")
            .unwrap()
            .contains("rd.live.check"),
        "the media check entry is the menu default but must not be chosen"
    );
}

#[test]
fn explicit_serial_boot_entry_and_append_extend_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixtures::centos7(dir.path(), &kernel(), &initrd(), true).unwrap();
    // The harness passes --serial stdio explicitly.
    let out = cd_run(&fx)
        .args(["--boot-entry", "check", "--append", "inst.text"])
        .run();
    out.assert_pass();
    assert_eq!(
        out.line("cdcheck: cmdline: "),
        Some(
            r"initrd=initrd.img inst.stage2=hd:LABEL=CentOS\x207\x20x86_64 rd.live.check quiet inst.text console=ttyS0"
        ),
        "{}",
        out.report()
    );
}

#[test]
fn debian_netinst_and_grub_only_isos_boot_their_install_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (k, rd) = (kernel(), initrd());
    let deb = fixtures::debian_netinst(dir.path(), &k, &rd).unwrap();
    let out = cd_run(&deb).serial(None).run();
    assert_booted(&out, &deb, deb.cmdline);
    let grub = fixtures::grub_rescue(dir.path(), &k, &rd).unwrap();
    let out = cd_run(&grub).serial(None).run();
    assert_booted(&out, &grub, grub.cmdline);
}

#[test]
fn an_installed_disk_wins_over_the_cd_unless_boot_cdrom() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixtures::centos7(dir.path(), &kernel(), &initrd(), true).unwrap();
    let disk = qcow2(dir.path(), "installed.qcow2");
    let st = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0xeb 0 512", &disk])
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    let out = cd_run(&fx).arg("--disk").arg(&disk).run();
    assert!(!out.timed_out, "{}", out.report());
    assert_eq!(out.status, Some(1), "{}", out.report());
    assert!(
        out.stderr.contains("not empty")
            && out.stderr.contains("--kernel")
            && out.stderr.contains("--boot cdrom"),
        "{}",
        out.report()
    );
    assert!(!out.serial.contains("cdcheck:"), "{}", out.report());
    let out = cd_run(&fx)
        .serial(None)
        .args(["--boot", "cdrom", "--disk", &disk])
        .run();
    assert_booted(&out, &fx, fx.cmdline);
}

/// Byte offset of the directory record called `name` in the directory at `dir_lba`.
fn record(image: &[u8], dir_lba: u32, name: &[u8]) -> usize {
    let start = dir_lba as usize * 2048;
    let mut off = start;
    while off < start + 2048 {
        let len = image[off] as usize;
        if len == 0 {
            break;
        }
        let nlen = image[off + 32] as usize;
        let n = &image[off + 33..off + 33 + nlen];
        if n == name || n.strip_suffix(b";1") == Some(name) {
            return off;
        }
        off += len;
    }
    panic!("no record {:?}", String::from_utf8_lossy(name));
}

fn set_extent(image: &mut [u8], rec: usize, lba: u32) {
    image[rec + 2..rec + 6].copy_from_slice(&lba.to_le_bytes());
    image[rec + 6..rec + 10].copy_from_slice(&lba.to_be_bytes());
}

fn assert_clean_error(out: &Outcome, what: &str) {
    assert!(!out.timed_out, "{what}: {}", out.report());
    assert_eq!(out.status, Some(1), "{what}: {}", out.report());
    assert!(
        out.stderr.contains("rvmm: error:") && !out.stderr.contains("panicked"),
        "{what}: {}",
        out.report()
    );
    assert!(!out.serial.contains("cdcheck:"), "{what}: {}", out.report());
}

#[test]
fn hostile_isos_give_clean_errors() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    // Plain ISO 9660 names only, so the patched primary tree is the only tree.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("isolinux")).unwrap();
    std::fs::write(
        tree.join("isolinux/isolinux.cfg"),
        "default linux\nlabel linux\n  kernel vmlinuz\n  append quiet\n",
    )
    .unwrap();
    std::fs::write(tree.join("isolinux/vmlinuz"), &k).unwrap();
    let iso = dir.path().join("plain.iso");
    let st = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "HOSTILE", "-o"])
        .arg(&iso)
        .arg(&tree)
        .status()
        .unwrap();
    assert!(st.success());
    let good = std::fs::read(&iso).unwrap();

    // Cut off after the volume descriptors: the directories and files are gone.
    let cut = dir.path().join("truncated.iso");
    std::fs::write(&cut, &good[..18 * 2048]).unwrap();
    let out = rvmm()
        .arg("--cdrom")
        .arg(&cut)
        .timeout(Duration::from_secs(20))
        .run();
    assert_clean_error(&out, "truncated");
    assert!(out.stderr.contains("truncated.iso"), "{}", out.report());

    // /ISOLINUX points back at the root directory: a loop.
    let mut bytes = good.clone();
    let root = &bytes[16 * 2048 + 156..16 * 2048 + 156 + 34];
    let root_lba = u32::from_le_bytes([root[2], root[3], root[4], root[5]]);
    let rec = record(&bytes, root_lba, b"ISOLINUX");
    set_extent(&mut bytes, rec, root_lba);
    let looping = dir.path().join("looping.iso");
    std::fs::write(&looping, &bytes).unwrap();
    let out = rvmm()
        .arg("--cdrom")
        .arg(&looping)
        .timeout(Duration::from_secs(20))
        .run();
    assert_clean_error(&out, "looping");

    // Not an ISO at all.
    let junk = dir.path().join("junk.iso");
    std::fs::write(&junk, vec![0x5au8; 64 * 1024]).unwrap();
    let out = rvmm()
        .arg("--cdrom")
        .arg(&junk)
        .timeout(Duration::from_secs(20))
        .run();
    assert_clean_error(&out, "junk");
    assert!(out.stderr.contains("ISO 9660"), "{}", out.report());
}

#[test]
fn cdcheck_guest_reads_qemus_virtio_scsi_cd_the_same_way() {
    // The oracle: QEMU's virtio-scsi-pci + scsi-cd must satisfy the guest's driver too.
    let dir = tempfile::tempdir().unwrap();
    let fx = fixtures::centos7(dir.path(), &kernel(), &initrd(), true).unwrap();
    let rd = dir.path().join("initrd.img");
    std::fs::write(&rd, initrd()).unwrap();
    let out = qemu()
        .kernel(guest("cdcheck"))
        .initrd(&rd)
        .cmdline(fx.cmdline)
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=cd,format=raw,media=cdrom,readonly=on",
            fx.path.display()
        ))
        .args(["-device", "virtio-scsi-pci,id=scsi,disable-legacy=on"])
        .args(["-device", "scsi-cd,drive=cd,bus=scsi.0"])
        .run();
    out.assert_pass();
    assert_eq!(
        out.line("cdcheck: label: "),
        Some(fx.volume_id),
        "{}",
        out.report()
    );
    assert_eq!(
        out.field_u64("cdcheck: inquiry ", "type"),
        Some(5),
        "{}",
        out.report()
    );
    assert!(
        out.field_u64("cdcheck: msix ", "interrupts") > Some(0),
        "{}",
        out.report()
    );
}

#[test]
fn kernel_boots_with_the_cd_attached_and_its_own_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixtures::debian_netinst(dir.path(), b"not a kernel", &initrd()).unwrap();
    let out = rvmm()
        .kernel(guest("cdcheck"))
        .cmdline("console=ttyS0 from-the-user")
        .arg("--cdrom")
        .arg(&fx.path)
        .run();
    out.assert_pass();
    assert_eq!(
        out.line("cdcheck: cmdline: "),
        Some("console=ttyS0 from-the-user"),
        "{}",
        out.report()
    );
    assert_eq!(
        out.field_u64("cdcheck: initrd ", "size"),
        Some(0),
        "{}",
        out.report()
    );
    assert_eq!(
        out.line("cdcheck: label: "),
        Some(fx.volume_id),
        "{}",
        out.report()
    );
    assert!(!out.stderr.contains("booting"), "{}", out.report());
}
