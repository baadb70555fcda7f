//! The virtio-blk test guest (a virtio-pci block driver written from the virtio 1.2 spec)
//! under QEMU TCG, against QEMU's own `virtio-blk-pci` (proves the guest driver follows the
//! spec) and against `vhost-user-blk-pci` served by `rvmm-vhost blk` (rvmm's virtio-blk request
//! code judged by that independent driver). The host recomputes the guest's pattern and checks
//! the image with `qemu-img compare` and `qemu-img check` (oracles). Finally the same guest
//! runs under rvmm itself (KVM) on `--disk`, judging rvmm's PCI, virtio-pci and virtio-blk.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rvmm_tests::{bin_dir, guest, qemu, rvmm, Outcome};

const SECTORS: u64 = 131_072; // 64 MiB
const SITES: u64 = 16;

/// Byte `j` of the 4 KiB the guest writes at sector `s` (same formula as the guest's).
fn pattern_byte(s: u64, j: u64) -> u8 {
    (s.wrapping_mul(131) + j * 7 + 0x5a + (j >> 9)) as u8
}

/// The image the guest must leave behind.
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
    // Site 2 was zeroed with WRITE_ZEROES.
    let z = (2 * stride * 512) as usize;
    img[z..z + 4096].fill(0);
    std::fs::write(path, img).unwrap();
}

fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("run qemu-img");
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Check the guest's report and the image it left behind.
fn verify(out: &Outcome, dir: &Path, disk: &Path, format: &str) {
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
    assert_eq!(
        out.field_u64("virtio-blk: ", "writes"),
        Some(SITES),
        "{}",
        out.report()
    );
    assert_eq!(
        out.field_u64("virtio-blk: ", "reads"),
        Some(SITES),
        "{}",
        out.report()
    );
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

/// Kills the child on drop, so a failed assertion leaves no backend behind.
struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_on(format: &str, vhost: bool) {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join(format!("disk.{format}"));
    let disk_s = disk.to_str().unwrap();
    qemu_img(&["create", "-q", "-f", format, disk_s, "64M"]);
    let vm = qemu()
        .kernel(guest("virtio-blk"))
        .cmdline(&format!("console=ttyS0 blk_writes={SITES}"));
    let mut backend = None;
    let vm = if vhost {
        let sock = dir.path().join("blk.sock");
        let bin = bin_dir().join("rvmm-vhost");
        assert!(
            bin.is_file(),
            "build rvmm-vhost first: cargo build -p tools --bin rvmm-vhost"
        );
        let child = Command::new(bin)
            .args(["blk", "--socket"])
            .arg(&sock)
            .arg("--disk")
            .arg(format!(
                "{disk_s},format={format},serial=guest-sn-7,discard=unmap"
            ))
            .stdout(Stdio::null())
            .spawn()
            .expect("start rvmm-vhost");
        backend = Some(Reap(child));
        let t = Instant::now();
        while !sock.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "rvmm-vhost made no socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        vm.args(["-object", "memory-backend-memfd,id=mem,size=512M,share=on"])
            .args(["-numa", "node,memdev=mem", "-chardev"])
            .arg(format!("socket,id=c,path={}", sock.display()))
            .args(["-device", "vhost-user-blk-pci,chardev=c,disable-legacy=on"])
    } else {
        vm.arg("-drive")
            .arg(format!(
                "file={disk_s},if=none,id=d0,format={format},discard=unmap"
            ))
            .arg("-device")
            .arg("virtio-blk-pci,drive=d0,serial=guest-sn-7,disable-legacy=on")
    };
    let out = vm.run();
    if let Some(mut b) = backend.take() {
        // The backend exits by itself once QEMU disconnects (and releases the image lock).
        let t = Instant::now();
        let st = loop {
            if let Some(st) = b.0.try_wait().unwrap() {
                break Some(st);
            }
            if t.elapsed() > Duration::from_secs(10) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(st.is_some_and(|s| s.success()), "rvmm-vhost: {st:?}");
    }
    verify(&out, dir.path(), &disk, format);
}

#[test]
fn virtio_blk_guest_under_qemu_raw() {
    run_on("raw", false);
}

#[test]
fn virtio_blk_guest_under_qemu_qcow2() {
    run_on("qcow2", false);
}

#[test]
fn virtio_blk_guest_under_qemu_on_rvmm_vhost_raw() {
    run_on("raw", true);
}

#[test]
fn virtio_blk_guest_under_qemu_on_rvmm_vhost_qcow2() {
    run_on("qcow2", true);
}

fn run_on_rvmm(format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join(format!("disk.{format}"));
    let disk_s = disk.to_str().unwrap();
    qemu_img(&["create", "-q", "-f", format, disk_s, "64M"]);
    let out = rvmm()
        .kernel(guest("virtio-blk"))
        .cmdline(&format!("console=ttyS0 blk_writes={SITES}"))
        .arg("--disk")
        .arg(format!(
            "{disk_s},format={format},serial=guest-sn-7,discard=unmap"
        ))
        .run();
    verify(&out, dir.path(), &disk, format);
}

#[test]
fn virtio_blk_guest_under_rvmm_raw() {
    run_on_rvmm("raw");
}

#[test]
fn virtio_blk_guest_under_rvmm_qcow2() {
    run_on_rvmm("qcow2");
}
