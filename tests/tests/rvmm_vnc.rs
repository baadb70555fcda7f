//! `rvmm --vnc`: the std-VGA a directly booted guest paints, seen by a real VNC client
//! (vncdotool), the `--screenshot-on-exit` PNG, and the option errors.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rvmm_tests::{free_display, guest, rvmm};

/// Decode a PNG with Pillow (installed with vncdotool): (width, height, RGB bytes).
fn png_rgb(path: &Path) -> (u32, u32, Vec<u8>) {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys; from PIL import Image\n\
             im = Image.open(sys.argv[1]).convert('RGB')\n\
             sys.stdout.buffer.write(b'%d %d\\n' % im.size + im.tobytes())",
        ])
        .arg(path)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "cannot decode {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let nl = out.stdout.iter().position(|&b| b == b'\n').unwrap();
    let head = String::from_utf8_lossy(&out.stdout[..nl]).to_string();
    let mut it = head.split(' ').map(|v| v.parse::<u32>().unwrap());
    let (w, h) = (it.next().unwrap(), it.next().unwrap());
    (w, h, out.stdout[nl + 1..].to_vec())
}

/// Boot vgapaint with `--vnc`, and once the guest reports `ready`, capture the screen with
/// vncdotool into `png`. Returns the run's outcome and vncdo's result.
fn capture(
    extra: &[&str],
    cmdline: &str,
    ready: &'static str,
    png: &Path,
) -> (rvmm_tests::Outcome, Result<(), String>) {
    let display = free_display();
    let server = format!("127.0.0.1::{}", 5900 + display);
    let result: Arc<Mutex<Option<Result<(), String>>>> = Arc::new(Mutex::new(None));
    let (r, png2) = (result.clone(), png.to_path_buf());
    let out = rvmm()
        .kernel(guest("vgapaint"))
        .cmdline(cmdline)
        .args(["--vnc", &format!("127.0.0.1:{display}")])
        .args(extra)
        .timeout(Duration::from_secs(60))
        .stop_when(move |serial| {
            if !serial.contains(ready) && !serial.contains("RESULT:") {
                return false;
            }
            if serial.contains(ready) {
                let o = Command::new("timeout")
                    .args(["30", "vncdo", "-s", &server, "capture"])
                    .arg(&png2)
                    .output();
                *r.lock().unwrap() = Some(match o {
                    Ok(o) if o.status.success() => Ok(()),
                    Ok(o) => Err(format!(
                        "vncdo failed: {}",
                        String::from_utf8_lossy(&o.stderr)
                    )),
                    Err(e) => Err(format!("cannot run vncdo: {e}")),
                });
            }
            true
        })
        .run();
    let res = result
        .lock()
        .unwrap()
        .take()
        .unwrap_or(Err("the guest never got ready".into()));
    (out, res)
}

#[test]
fn vnc_client_sees_the_pattern_the_guest_paints() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("screen.png");
    let (out, res) = capture(
        &["--display-size", "800x600"],
        "console=ttyS0",
        "vgapaint: painted",
        &png,
    );
    res.unwrap_or_else(|e| panic!("{e}\n{}", out.report()));
    let addr_line = out
        .stderr
        .lines()
        .find(|l| l.contains("VNC server on 127.0.0.1:"))
        .unwrap_or_else(|| panic!("rvmm did not print its VNC address\n{}", out.report()));
    assert!(addr_line.contains("(display :"), "{addr_line}");
    assert_eq!(
        out.field("vgapaint: si ", "width"),
        Some("800"),
        "{}",
        out.report()
    );
    assert_eq!(out.field("vgapaint: si ", "height"), Some("600"));
    let (w, h, rgb) = png_rgb(&png);
    assert_eq!((w, h), (800, 600), "{}", out.report());
    assert_pattern(w, h, &rgb);
}

/// The vgapaint pattern: red = x, green = y (low bytes), blue 0x40 left and 0xc0 right.
fn assert_pattern(w: u32, h: u32, rgb: &[u8]) {
    let mut bad = 0;
    for y in 0..h {
        for x in 0..w {
            let i = ((y * w + x) * 3) as usize;
            let want = [
                (x & 0xff) as u8,
                (y & 0xff) as u8,
                if x < w / 2 { 0x40 } else { 0xc0 },
            ];
            if rgb[i..i + 3] != want {
                bad += 1;
                assert!(
                    bad < 5,
                    "pixel ({x},{y}) is {:?}, want {want:?}",
                    &rgb[i..i + 3]
                );
            }
        }
    }
    assert_eq!(bad, 0);
}

#[test]
fn text_mode_written_at_b8000_shows_on_the_captured_screen() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("text.png");
    let shot = dir.path().join("exit.png");
    let (out, res) = capture(
        &["--screenshot-on-exit", shot.to_str().unwrap()],
        "console=ttyS0 text=1",
        "vgapaint: text written",
        &png,
    );
    res.unwrap_or_else(|e| panic!("{e}\n{}", out.report()));
    let (w, h, rgb) = png_rgb(&png);
    assert_eq!((w, h), (640, 400), "text mode is 80x25 cells of 8x16");
    let px = |x: u32, y: u32| {
        let i = ((y * w + x) * 3) as usize;
        [rgb[i], rgb[i + 1], rgb[i + 2]]
    };
    // Row 2 (y 32..48), columns 4..21 hold the message: white on blue.
    let (mut white, mut blue) = (0, 0);
    for y in 32..48 {
        for x in 32..(32 + 17 * 8) {
            match px(x, y) {
                [r, g, b] if r > 0xa0 && g > 0xa0 && b > 0xa0 => white += 1,
                [r, g, b] if b > 0x80 && r < 0x40 && g < 0x40 => blue += 1,
                _ => {}
            }
        }
    }
    assert!(white > 200 && blue > 1000, "white {white} blue {blue}");
    // Elsewhere the screen is the blank light-grey-on-black of attribute 0x07: all black.
    assert!((0..w).all(|x| px(x, 100) == [0, 0, 0]));
    // The same glyphs in different cells look the same: "T" at columns 9 and 12 ("TEXT").
    let cell = |c: u32| -> Vec<[u8; 3]> {
        (32..48)
            .flat_map(|y| (c * 8..c * 8 + 8).map(move |x| (x, y)))
            .map(|(x, y)| px(x, y))
            .collect()
    };
    assert_eq!(cell(4 + 5), cell(4 + 8));
    assert_ne!(cell(4 + 5), cell(4 + 6), "T and E differ");
}

#[test]
fn screenshot_on_exit_writes_the_screen() {
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("exit.png");
    let out = rvmm()
        .kernel(guest("vgapaint"))
        .args(["--display-size", "640x480", "--screenshot-on-exit"])
        .arg(&shot)
        .signal_when("vgapaint: painted", libc::SIGTERM)
        .timeout(Duration::from_secs(60))
        .run();
    assert!(shot.is_file(), "no screenshot\n{}", out.report());
    let (w, h, rgb) = png_rgb(&shot);
    assert_eq!((w, h), (640, 480));
    let i = ((100 * w + 500) * 3) as usize;
    assert_eq!(&rgb[i..i + 3], &[(500 & 0xff) as u8, 100, 0xc0]);
    assert!(
        !out.stderr.contains("VNC server on"),
        "no server without --vnc"
    );
}

#[test]
fn bad_display_options_are_refused_with_advice() {
    for (args, needle) in [
        (vec!["--vnc", "127.0.0.1:99999"], "--vnc"),
        (vec!["--display-size", "12x34"], "--display-size"),
        (vec!["--display", "cirrus"], "--display"),
        (
            vec!["--vnc", "127.0.0.1:0", "--display", "none"],
            "--display",
        ),
        (
            vec!["--screenshot-on-exit", "/tmp/x.png", "--display", "none"],
            "--screenshot-on-exit needs a display",
        ),
    ] {
        let out = rvmm().kernel(guest("vgapaint")).args(&args).run();
        assert_eq!(out.status, Some(1), "{args:?}\n{}", out.report());
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
}

/// A minimal RFB 3.8 client (security None, Raw): takes one full frame, then asks for
/// incremental updates every 100 ms for 1.5 s and prints the bytes the server sent meanwhile.
const IDLE_CLIENT: &str = r#"
import socket, struct, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
def rx(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            sys.exit("server closed the connection")
        b += c
    return b
rx(12); s.sendall(b"RFB 003.008\n")
types = rx(rx(1)[0]); assert 1 in types, types
s.sendall(b"\x01"); assert struct.unpack(">I", rx(4))[0] == 0
s.sendall(b"\x01")
w, h = struct.unpack(">HH", rx(4)); rx(16); rx(struct.unpack(">I", rx(4))[0])
s.sendall(struct.pack(">BBHi", 2, 0, 1, 0))
s.sendall(struct.pack(">BBHHHH", 3, 0, 0, 0, w, h))
got = 0
while got < w * h:
    assert rx(1)[0] == 0
    rx(1)
    for _ in range(struct.unpack(">H", rx(2))[0]):
        x, y, rw, rh, enc = struct.unpack(">HHHHi", rx(12))
        assert enc == 0, enc
        rx(rw * rh * 4)
        got += rw * rh
print("full", w, h, flush=True)
idle = 0
s.settimeout(0.1)
end = time.time() + 1.5
while time.time() < end:
    s.sendall(struct.pack(">BBHHHH", 3, 1, 0, 0, w, h))
    try:
        idle += len(s.recv(65536))
    except socket.timeout:
        pass
print("idle_bytes", idle, flush=True)
"#;

#[test]
fn an_idle_screen_sends_no_updates() {
    let display = free_display();
    let port = (5900 + display).to_string();
    let result: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let r = result.clone();
    let out = rvmm()
        .kernel(guest("vgapaint"))
        .args(["--vnc", &format!("127.0.0.1:{display}")])
        .args(["--display-size", "320x240"])
        .timeout(Duration::from_secs(60))
        .stop_when(move |serial| {
            if !serial.contains("vgapaint: painted") {
                return serial.contains("RESULT:");
            }
            let o = Command::new("timeout")
                .args(["30", "python3", "-c", IDLE_CLIENT, &port])
                .output();
            *r.lock().unwrap() = Some(match o {
                Ok(o) => format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => format!("cannot run python3: {e}"),
            });
            true
        })
        .run();
    let text = result.lock().unwrap().take().unwrap_or_default();
    assert!(text.contains("full 320 240"), "{text}\n{}", out.report());
    assert!(
        text.contains("idle_bytes 0\n"),
        "an idle guest screen must cause no traffic: {text}"
    );
}

#[test]
fn vram_follows_bar0_when_the_guest_moves_it() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("moved.png");
    let (out, res) = capture(
        &["--display-size", "640x480"],
        "console=ttyS0 move=0xd0000000",
        "vgapaint: painted",
        &png,
    );
    res.unwrap_or_else(|e| panic!("{e}\n{}", out.report()));
    assert_eq!(
        out.line("vgapaint: moved "),
        Some("bar0=0xd0000000"),
        "{}",
        out.report()
    );
    assert!(
        !out.stderr.contains("cannot move VRAM"),
        "the KVM slot moved with the BAR\n{}",
        out.report()
    );
    let (w, h, rgb) = png_rgb(&png);
    assert_eq!((w, h), (640, 480));
    assert_pattern(w, h, &rgb);
}

#[test]
fn the_vnc_server_and_display_survive_guest_reboots() {
    let display = free_display();
    let out = rvmm()
        .kernel(guest("reboot"))
        .args(["--vnc", &format!("127.0.0.1:{display}")])
        .timeout(Duration::from_secs(60))
        .stop_when(|s| s.matches("reboot: boot").count() >= 3)
        .run();
    assert!(out.stopped, "{}", out.report());
    assert_eq!(
        out.stderr.matches("VNC server on").count(),
        1,
        "one server for every VM build\n{}",
        out.report()
    );
    assert!(!out.stderr.contains("error"), "{}", out.report());
}

#[test]
fn bar0_moved_over_ram_is_refused_and_the_vm_runs_on() {
    let out = rvmm()
        .kernel(guest("vgapaint"))
        .args(["--display-size", "640x480", "--display", "vga"])
        .cmdline("console=ttyS0 move=0x1000000")
        .timeout(Duration::from_secs(60))
        .stop_when(|s| s.contains("vgapaint: painted") || s.contains("RESULT:"))
        .run();
    assert!(out.stopped, "{}", out.report());
    assert!(out.serial.contains("vgapaint: painted"), "{}", out.report());
    assert!(
        out.stderr.contains("over RAM; VRAM stays put"),
        "{}",
        out.report()
    );
}
