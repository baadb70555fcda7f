//! Real Linux against `rvmm-vhost scsi`: a Debian kernel under QEMU TCG
//! (`vhost-user-scsi-pci`) finds the ISO as a SCSI CD-ROM (sr0), finds it by volume label,
//! reads the primary volume descriptor at sector 16, mounts it and reads its files; the host
//! compares against the files it put on the ISO (built here with xorriso). udev's `cdrom_id`
//! (copied from the host) reports what udev rules would see: a CD drive with a data medium,
//! the condition for udev to run blkid on sr0 so installers find the label.
//!
//! Needs scripts/assets.sh (downloads the kernel once into the asset cache), xorriso and QEMU.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("rvmm-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop, so a failing assertion leaves nothing running.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn wait_timeout(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(st) = self.0.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
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

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const LABEL: &str = "RVMM_CD_TEST";

const GUEST_SCRIPT: &str = r#"
for i in $(seq 1 100); do [ -b /dev/sr0 ] && break; sleep 0.1; done
echo "TYPE=$(cat /sys/block/sr0/device/type)"
echo "REMOVABLE=$(cat /sys/block/sr0/removable)"
echo "VENDOR=$(cat /sys/block/sr0/device/vendor)"
echo "SECTORS=$(cat /sys/block/sr0/size)"
# The kernel's view of MODE SENSE page 0x2A (capabilities and mechanical status).
tr '\t' ' ' < /proc/sys/dev/cdrom/info | tr -s ' ' | sed 's/^/CDINFO /' 
echo "LABEL-DEV=$(findfs LABEL=RVMM_CD_TEST)"
echo "PVD-ID=$(dd if=/dev/sr0 bs=2048 skip=16 count=1 2>/dev/null | dd bs=1 skip=1 count=5 2>/dev/null)"
echo "PVD-LABEL=$(dd if=/dev/sr0 bs=2048 skip=16 count=1 2>/dev/null | dd bs=1 skip=40 count=12 2>/dev/null)"
# udev's own prober (from the host, run with the host's loader): what udev rules see.
/files/ld-linux-x86-64.so.2 --library-path /files /files/cdrom_id /dev/sr0 | sed 's/^/UDEV /'
dd if=/dev/zero of=/dev/sr0 bs=2048 count=1 2>/dev/null || echo "WRITE-REFUSED"
mount -t iso9660 -o ro "$(findfs LABEL=RVMM_CD_TEST)" /mnt || echo "MOUNT-FAILED"
echo "HELLO=$(cat /mnt/hello.txt)"
echo "BIG-MD5=$(md5sum < /mnt/images/Big_File.bin)"
echo "DEEP=$(cat /mnt/a/b/c/Mixed-Case.txt)"
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
    let out = run_ok(
        Command::new(repo().join("scripts/assets.sh"))
            .arg("initrd")
            .arg(s.path("initrd.gz"))
            .arg(s.path("test.sh"))
            .args(cdrom_id_files()),
    );
    let kernel = out
        .lines()
        .find_map(|l| l.strip_prefix("KERNEL="))
        .expect("assets.sh prints KERNEL=")
        .to_string();

    let sock = s.path("scsi.sock");
    let mut vhost = Proc(
        Command::new(env!("CARGO_BIN_EXE_rvmm-vhost"))
            .args(["scsi", "--socket"])
            .arg(&sock)
            .arg("--cdrom")
            .arg(&iso)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rvmm-vhost"),
    );
    let start = Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "rvmm-vhost made no socket"
        );
        assert!(
            vhost.0.try_wait().unwrap().is_none(),
            "rvmm-vhost exited early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let serial = s.path("serial.log");
    let mut qemu = Proc(
        Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-m", "512M", "-smp", "1"])
            .args(["-object", "memory-backend-memfd,id=mem,size=512M,share=on"])
            .args(["-numa", "node,memdev=mem"])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(s.path("initrd.gz"))
            .args(["-append", "console=ttyS0 quiet panic=-1"])
            .args(["-display", "none", "-monitor", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
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
    let vst = vhost.wait_timeout(Duration::from_secs(10));
    let mut verr = String::new();
    if let Some(e) = vhost.0.stderr.as_mut() {
        let _ = e.read_to_string(&mut verr);
    }
    assert!(
        vst.is_some_and(|s| s.success()),
        "rvmm-vhost did not exit cleanly after the disconnect: {vst:?}\n{verr}\nqemu: {qerr}"
    );
    for want in [
        "TYPE=5".to_string(),
        "REMOVABLE=1".to_string(),
        "VENDOR=RVMM".to_string(),
        format!("SECTORS={iso_sectors}"),
        "LABEL-DEV=/dev/sr0".to_string(),
        "CDINFO drive speed: 24".to_string(),
        "CDINFO Can read DVD: 1".to_string(),
        "CDINFO Can lock tray: 1".to_string(),
        "CDINFO Can open tray: 1".to_string(),
        "CDINFO Can write CD-R: 0".to_string(),
        "UDEV ID_CDROM=1".to_string(),
        "UDEV ID_CDROM_MEDIA=1".to_string(),
        "UDEV ID_CDROM_MEDIA_TRACK_COUNT_DATA=1".to_string(),
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
