//! Benchmark: bytes and time per full-screen and per small update for each encoding, rvmm's
//! VNC server side by side with QEMU's (`qemu-system-x86_64 -vga std -vnc`), both showing the
//! same 640×480 pattern with a 16×16 block toggling twice a second.
//!
//! QEMU shows it through a boot-sector guest (vnc/bench/pattern-guest.S, assembled here with
//! gcc/ld) that sets a Bochs DISPI mode; rvmm's server serves the same pixels from memory.
//!
//! Run: `cargo run --release -p vnc --example vnc_bench`

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vnc::client::RfbClient;
use vnc::framebuffer::NoInput;
use vnc::proto::enc;
use vnc::{Dirty, Framebuffer, PixelFormat, Rect, VncServer, VncServerOptions};

const W: u16 = 640;
const H: u16 = 480;
const BLOCK: Rect = Rect::new(64, 8, 16, 16);

fn pattern(x: u16, y: u16) -> u32 {
    let (x, y) = (u32::from(x), u32::from(y));
    let b = if ((x >> 5) ^ (y >> 5)) & 1 == 1 {
        0xff
    } else {
        0
    };
    ((x & 0xff) << 16) | ((y & 0xff) << 8) | b
}

struct Pattern {
    on: bool,
    dirty: Dirty,
}

impl Framebuffer for Pattern {
    fn size(&self) -> (u16, u16) {
        (W, H)
    }
    fn pixel_format(&self) -> PixelFormat {
        PixelFormat::XRGB8888
    }
    fn read_rect(&mut self, r: Rect, out: &mut Vec<u8>) {
        for y in r.y..r.y + r.h {
            for x in r.x..r.x + r.w {
                let inside = BLOCK.intersect(&Rect::new(x, y, 1, 1)) == Rect::new(x, y, 1, 1);
                let p = match (inside, self.on) {
                    (true, true) => 0x00ff_ffff,
                    (true, false) => 0,
                    _ => pattern(x, y),
                };
                out.extend_from_slice(&p.to_le_bytes());
            }
        }
    }
    fn take_dirty(&mut self) -> Dirty {
        std::mem::replace(&mut self.dirty, Dirty::None)
    }
}

struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn build_guest(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/pattern-guest.S");
    let obj = dir.join("guest.o");
    let bin = dir.join("guest.img");
    let ok = Command::new("gcc")
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        && Command::new("ld")
            .args([
                "-m",
                "elf_x86_64",
                "-Ttext",
                "0x7c00",
                "--oformat",
                "binary",
                "-e",
                "_start",
            ])
            .arg("-o")
            .arg(&bin)
            .arg(&obj)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    assert!(
        ok,
        "assembling {} failed (gcc/binutils needed)",
        src.display()
    );
    bin
}

/// Pixels outside the toggling block that differ from the pattern.
fn wrong_pixels(screen: &vnc::encode::Frame) -> usize {
    let mut bad = 0;
    for y in 0..screen.height {
        for x in 0..screen.width {
            let r = Rect::new(x, y, 1, 1);
            if BLOCK.intersect(&r) == r {
                continue;
            }
            if screen.pixels[usize::from(y) * usize::from(W) + usize::from(x)] != pattern(x, y) {
                bad += 1;
            }
        }
    }
    bad
}

fn connect(addr: &str) -> RfbClient<TcpStream> {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let _ = s.set_nodelay(true);
    let mut c = RfbClient::connect(s, None, true).expect("RFB handshake");
    c.set_pixel_format(PixelFormat::XRGB8888)
        .expect("SetPixelFormat");
    c
}

#[derive(Default, Clone, Copy)]
struct Figures {
    full_bytes: f64,
    full_ms: f64,
    small_bytes: f64,
}

fn measure(addr: &str, encoding: i32) -> Figures {
    let mut c = connect(addr);
    c.set_encodings(&[encoding]).expect("SetEncodings");
    const FULL: usize = 5;
    let mut bytes = 0u64;
    let mut times = Vec::with_capacity(FULL);
    for _ in 0..FULL {
        let t = Instant::now();
        c.request(false).expect("request");
        let u = c.read_update().expect("full update");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        bytes += u.bytes;
    }
    // The median resists the load of a shared machine better than the mean.
    times.sort_by(f64::total_cmp);
    let ms = times[FULL / 2];
    let bad = wrong_pixels(&c.screen);
    assert_eq!(bad, 0, "{addr} encoding {encoding}: {bad} wrong pixels");
    // Small updates: the toggling block.
    const SMALL: usize = 4;
    let mut small = 0u64;
    let mut n = 0;
    while n < SMALL {
        c.request(true).expect("request");
        let u = c.read_update().expect("small update");
        let area: usize = u.rects.iter().map(|(r, _)| r.area()).sum();
        if area > 0 && area <= 64 * 64 {
            small += u.bytes;
            n += 1;
        }
    }
    Figures {
        full_bytes: bytes as f64 / FULL as f64,
        full_ms: ms,
        small_bytes: small as f64 / SMALL as f64,
    }
}

fn main() {
    let dir = std::env::temp_dir().join(format!("rvmm-vnc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let guest = build_guest(&dir);
    let display = 90 + (std::process::id() % 50) as u16;
    let qemu = Qemu(
        Command::new("qemu-system-x86_64")
            .args([
                "-accel", "tcg", "-vga", "std", "-display", "none", "-m", "64",
            ])
            .args(["-vnc", &format!("127.0.0.1:{display}")])
            .arg("-drive")
            .arg(format!("file={},format=raw,if=floppy", guest.display()))
            .stdout(Stdio::null())
            .spawn()
            .expect("start qemu-system-x86_64"),
    );
    let qemu_addr = format!("127.0.0.1:{}", 5900 + display);

    let fb = Arc::new(Mutex::new(Pattern {
        on: false,
        dirty: Dirty::None,
    }));
    let mut server = VncServer::new(fb.clone(), Arc::new(NoInput), VncServerOptions::default());
    let ours = server.listen("127.0.0.1:0").expect("listen").to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let last_toggle = Arc::new(Mutex::new(Instant::now()));
    let (fb2, stop2, last2) = (fb.clone(), stop.clone(), last_toggle.clone());
    let toggler = std::thread::spawn(move || {
        while !stop2.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(500));
            let mut p = fb2.lock().unwrap_or_else(|e| e.into_inner());
            p.on = !p.on;
            p.dirty = Dirty::Rects(vec![BLOCK]);
            *last2.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
    });

    // Wait for the guest to finish painting.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "QEMU guest never showed the pattern"
        );
        std::thread::sleep(Duration::from_millis(500));
        let Ok(s) = TcpStream::connect(&qemu_addr) else {
            continue;
        };
        let Ok(mut c) = RfbClient::connect(s, None, true) else {
            continue;
        };
        if c.set_pixel_format(PixelFormat::XRGB8888).is_err()
            || c.set_encodings(&[enc::RAW]).is_err()
        {
            continue;
        }
        if c.request(false).is_ok()
            && c.read_update().is_ok()
            && c.screen.width == W
            && wrong_pixels(&c.screen) == 0
        {
            break;
        }
    }

    println!("VNC server benchmark: 640x480 pattern, 32 bpp client format, loopback TCP");
    println!("full = non-incremental full-screen update (bytes: mean of 5, ms: median of 5, request to decoded); small = 16x16 block change (mean of 4)");
    println!(
        "{:<8} {:>12} {:>12} {:>7} | {:>9} {:>9} {:>7} | {:>10} {:>10} {:>7}",
        "encoding",
        "full B rvmm",
        "full B qemu",
        "ratio",
        "ms rvmm",
        "ms qemu",
        "ratio",
        "small rvmm",
        "small qemu",
        "ratio"
    );
    for (name, e) in [
        ("Raw", enc::RAW),
        ("Hextile", enc::HEXTILE),
        ("ZRLE", enc::ZRLE),
        ("Tight", enc::TIGHT),
    ] {
        let o = measure(&ours, e);
        let q = measure(&qemu_addr, e);
        println!(
            "{:<8} {:>12.0} {:>12.0} {:>7.3} | {:>9.2} {:>9.2} {:>7.3} | {:>10.0} {:>10.0} {:>7.3}",
            name,
            o.full_bytes,
            q.full_bytes,
            o.full_bytes / q.full_bytes,
            o.full_ms,
            q.full_ms,
            o.full_ms / q.full_ms,
            o.small_bytes,
            q.small_bytes,
            o.small_bytes / q.small_bytes
        );
    }
    // Frame latency: framebuffer write to complete receipt at the client (rvmm only: QEMU's
    // guest-side write time is not observable from outside).
    let mut c = connect(&ours);
    c.set_encodings(&[enc::ZRLE]).expect("SetEncodings");
    c.request(false).expect("request");
    c.read_update().expect("update");
    let mut lat = Vec::new();
    while lat.len() < 8 {
        c.request(true).expect("request");
        c.read_update().expect("update");
        let t = *last_toggle.lock().unwrap_or_else(|e| e.into_inner());
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mean = lat.iter().sum::<f64>() / lat.len() as f64;
    let max = lat.iter().cloned().fold(0.0, f64::max);
    println!(
        "frame latency (write -> client receipt, ZRLE, poll interval {} ms): mean {mean:.1} ms, max {max:.1} ms",
        VncServerOptions::default().poll_interval.as_millis()
    );
    stop.store(true, Ordering::SeqCst);
    let _ = toggler.join();
    // Idle: no change for 2 s with an incremental request pending must cost nothing.
    let s = TcpStream::connect(&ours).expect("connect");
    let probe = s.try_clone().expect("clone");
    let mut c = RfbClient::connect(s, None, true).expect("handshake");
    c.set_encodings(&[enc::ZRLE]).expect("SetEncodings");
    c.request(false).expect("request");
    c.read_update().expect("update");
    c.request(true).expect("request");
    std::thread::sleep(Duration::from_secs(2));
    probe.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 4096];
    // WouldBlock (nothing arrived) counts as zero bytes.
    let idle: usize = (&probe).read(&mut buf).unwrap_or_default();
    println!("idle traffic (rvmm, 2 s, update request pending): {idle} bytes");
    drop(qemu);
    let _ = std::fs::remove_dir_all(&dir);
}
