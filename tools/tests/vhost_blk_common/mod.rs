//! Helpers shared by the vhost-user tests (blk, net, scsi) and the blk benchmark: scratch directories, child
//! processes that cannot outlive a failing test, the asset script, and a QEMU TCG command line
//! with a vhost-user-blk disk.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh directory under the system temp dir, unique to this process and `tag`.
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("rvmm-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    /// `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Wait up to `limit` for the process to end.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
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

/// Build an initramfs with `script` as /test.sh via scripts/assets.sh; returns the kernel.
pub fn assets(script: &Path, initrd: &Path) -> PathBuf {
    assets_with(script, initrd, &[])
}

/// [`assets`], with `extra` host files copied into the initramfs's /files.
pub fn assets_with(script: &Path, initrd: &Path, extra: &[PathBuf]) -> PathBuf {
    let out = Command::new(repo().join("scripts/assets.sh"))
        .arg("initrd")
        .arg(initrd)
        .arg(script)
        .args(extra)
        .output()
        .expect("run scripts/assets.sh");
    assert!(
        out.status.success(),
        "scripts/assets.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let kernel = text
        .lines()
        .find_map(|l| l.strip_prefix("KERNEL="))
        .expect("assets.sh prints KERNEL=");
    PathBuf::from(kernel)
}

/// Run a command that must succeed; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait until `sock` exists (the backend is listening), failing if `backend` dies first.
pub fn wait_socket(sock: &Path, backend: &mut Proc) {
    let start = Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "backend made no socket at {}",
            sock.display()
        );
        if let Some(st) = backend.0.try_wait().unwrap() {
            panic!("backend exited early: {st}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// QEMU TCG booting `kernel` + `initrd` with `append`, its RAM in shared memfd memory (what
/// vhost-user backends map) and the console to `serial`; callers add the vhost-user devices.
pub fn qemu_tcg(kernel: &Path, initrd: &Path, append: &str, serial: &Path) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-m", "512M", "-smp", "1"])
        .args(["-object", "memory-backend-memfd,id=mem,size=512M,share=on"])
        .args(["-numa", "node,memdev=mem"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", append])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()));
    c
}

/// The command line the Debian test guests boot with.
pub const APPEND: &str = "console=ttyS0 quiet panic=-1";

/// Boot `kernel` + `initrd` under QEMU TCG with a vhost-user-blk disk on `sock`, console to
/// `serial`; returns the running QEMU.
pub fn qemu_vhost_blk(kernel: &Path, initrd: &Path, sock: &Path, serial: &Path) -> Proc {
    Proc(
        qemu_tcg(kernel, initrd, APPEND, serial)
            .arg("-chardev")
            .arg(format!("socket,id=c,path={}", sock.display()))
            .args(["-device", "vhost-user-blk-pci,chardev=c"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu-system-x86_64"),
    )
}
