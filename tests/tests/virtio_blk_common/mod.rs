//! Shared by the virtio-blk guest tests (`virtio_blk.rs` under QEMU and rvmm, `rvmm_disk.rs`):
//! the guest's write pattern recomputed on the host and the checks of its report and image.

use std::path::Path;

use rvmm_tests::{guest, qemu_img, rvmm, Outcome};

/// Disk size the tests create (64 MiB), in 512-byte sectors.
pub const SECTORS: u64 = 131_072;
/// How many sites the guest writes and reads back (its `blk_writes=`).
pub const SITES: u64 = 16;

/// Byte `j` of the 4 KiB the guest writes at sector `s` (the guest's formula).
fn pattern_byte(s: u64, j: u64) -> u8 {
    (s.wrapping_mul(131) + j * 7 + 0x5a + (j >> 9)) as u8
}

/// Write to `path` the raw image the guest must leave behind: its pattern at each site and the
/// last sectors, site 2 zeroed by WRITE_ZEROES, the discarded range never written.
fn expected_image(path: &Path) {
    let mut img = vec![0u8; (SECTORS * 512) as usize];
    let stride = ((SECTORS - 8) / SITES) & !7;
    let mut put = |s: u64| {
        for j in 0..4096u64 {
            img[(s * 512 + j) as usize] = pattern_byte(s, j);
        }
    };
    for i in 0..SITES {
        put(i * stride);
    }
    put(SECTORS - 8);
    let z = (2 * stride * 512) as usize;
    img[z..z + 4096].fill(0);
    std::fs::write(path, img).unwrap();
}

/// Check the guest's report (run with `blk_writes=SITES` on a disk with serial `guest-sn-7`)
/// and the `format` image `disk` it left behind; `dir` takes the expected raw image.
pub fn verify(out: &Outcome, dir: &Path, disk: &Path, format: &str) {
    let disk_s = disk.to_str().unwrap();
    out.assert_pass();
    assert_eq!(
        out.field_u64("virtio-blk: ", "capacity"),
        Some(SECTORS),
        "{}",
        out.report()
    );
    assert_eq!(
        out.field("virtio-blk: ", "serial"),
        Some("guest-sn-7"),
        "{}",
        out.report()
    );
    for (k, v) in [("writes", SITES), ("reads", SITES)] {
        assert_eq!(
            out.field_u64("virtio-blk: ", k),
            Some(v),
            "{k}\n{}",
            out.report()
        );
    }
    for l in [
        "virtio-blk: indirect=ok",
        "virtio-blk: write_zeroes=ok",
        "virtio-blk: discard=ok",
    ] {
        assert!(
            out.lines().any(|x| x == l),
            "missing {l:?}\n{}",
            out.report()
        );
    }
    let want = dir.join("expected.raw");
    expected_image(&want);
    qemu_img(&[
        "compare",
        "-q",
        "-f",
        "raw",
        "-F",
        format,
        want.to_str().unwrap(),
        disk_s,
    ]);
    if format == "qcow2" {
        qemu_img(&["check", "-q", disk_s]);
    }
}

/// Run the guest under rvmm on a fresh 64 MiB `format` image given as `--disk <image><opts>`
/// (with serial and discard added) and [`verify`] what it did.
pub fn run_on_rvmm(format: &str, opts: &str) {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join(format!("disk.{format}"));
    let disk_s = disk.to_str().unwrap();
    qemu_img(&["create", "-q", "-f", format, disk_s, "64M"]);
    let out = rvmm()
        .kernel(guest("virtio-blk"))
        .cmdline(&format!("console=ttyS0 blk_writes={SITES}"))
        .arg("--disk")
        .arg(format!("{disk_s}{opts},serial=guest-sn-7,discard=unmap"))
        .run();
    verify(&out, dir.path(), &disk, format);
}
