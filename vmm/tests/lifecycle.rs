//! rvmm's process lifecycle on tiny hand-assembled guests: serial output and the debug-exit
//! status, SIGTERM with APs parked in wait-for-SIPI, and a KVM emulation failure. (The
//! spec-written guests in tests/guests cover the machine itself.)

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A bzImage (boot protocol 2.15, 64-bit entry at +0x200) whose 64-bit entry runs `code`.
fn bzimage(code: &[u8]) -> tempfile::NamedTempFile {
    let mut img = vec![0u8; 5 * 512];
    img[0x1f1] = 4;
    img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    img[0x211] = 1; // LOADED_HIGH
    img[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // XLF_KERNEL_64
    img.extend_from_slice(&[0x90; 0x200]);
    img.extend_from_slice(code);
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&img).unwrap();
    f
}

fn rvmm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rvmm"));
    c.stdin(Stdio::null());
    c
}

#[test]
fn serial_output_and_debug_exit_status() {
    // mov dx,0x3f8; 'O','K','\n' out dx,al; mov al,42; out 0xf4,al; hlt
    let k = bzimage(&[
        0x66, 0xba, 0xf8, 0x03, 0xb0, b'O', 0xee, 0xb0, b'K', 0xee, 0xb0, b'\n', 0xee, 0xb0, 42,
        0xe6, 0xf4, 0xf4,
    ]);
    let out = rvmm().arg("--kernel").arg(k.path()).output().unwrap();
    assert_eq!(out.stdout, b"OK\n");
    assert_eq!(
        out.status.code(),
        Some(42),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigterm_stops_every_vcpu_and_exits_143() {
    // jmp $ on the BSP; three APs stay in wait-for-SIPI.
    let k = bzimage(&[0xeb, 0xfe]);
    let mut child = rvmm()
        .arg("--kernel")
        .arg(k.path())
        .args(["--cpus", "4", "--serial", "none"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "rvmm ended early");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "rvmm ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(143));
}

#[test]
fn emulation_failure_dumps_registers_and_exits_1() {
    // mov eax,0xd0000000; jmp rax: execute from the unbacked PCI hole.
    let k = bzimage(&[0xb8, 0x00, 0x00, 0x00, 0xd0, 0xff, 0xe0]);
    let out = rvmm()
        .arg("--kernel")
        .arg(k.path())
        .args(["--serial", "none"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("KVM internal error"), "{err}");
    assert!(err.contains("rip=0x00000000d0000000"), "{err}");
    assert!(err.contains("cr3=0x9000"), "{err}");
}
