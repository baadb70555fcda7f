//! rvmm-vnc-demo: the rvmm VNC server showing an animated test pattern, without a VM.
//!
//! Real VNC clients can be tried against it, and the screen tests know its pattern exactly:
//! pixel (x, y) is red `x*255/(w-1)`, green `y*255/(h-1)`, blue 255 on odd 32×32 checker
//! squares; the bottom 32 rows are an animated bar (unless `--still`). Input events are
//! printed to stdout, one per line (`key down 0x61 xt=-`, `pointer 10 20 1`).
//!
//! `--text MESSAGE` serves the std-VGA display model in 80×25 text mode instead, with MESSAGE
//! written to the top-left cells (white on blue, attribute 0x1f) and the cursor off.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use vnc::config::VncConfig;
use vnc::{Dirty, Framebuffer, InputSink, PixelFormat, Rect, VncServer, VncServerOptions};

/// Height of the animated bar at the bottom.
const BAR: u16 = 32;

#[derive(Parser)]
#[command(about = "Serve an animated test pattern over VNC (no VM needed)")]
struct Args {
    /// HOST[:DISPLAY][,password-file=PATH][,websocket=PORT], as for rvmm.
    #[arg(long, default_value = "127.0.0.1:0")]
    vnc: String,
    /// Screen size WxH.
    #[arg(long, default_value = "640x480")]
    size: String,
    /// Do not animate (the whole screen is the static pattern).
    #[arg(long)]
    still: bool,
    /// Serve the VGA model in text mode showing this message instead of the pattern.
    #[arg(long)]
    text: Option<String>,
    /// Exit after this many seconds (0 = run until killed).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
}

/// The test pattern plus an animated bar.
struct Pattern {
    w: u16,
    h: u16,
    frame: u32,
    dirty: Dirty,
}

impl Pattern {
    fn pixel(&self, x: u16, y: u16) -> u32 {
        if y >= self.h.saturating_sub(BAR) && self.frame > 0 {
            // A bar sweeping right, its colour cycling with the frame counter.
            let pos = (self.frame * 8) % u32::from(self.w);
            let on = (u32::from(x) + u32::from(self.w) - pos) % u32::from(self.w) < 64;
            return if on {
                0x00ff_ff00
            } else {
                (self.frame * 0x0001_0307) & 0x3f3f3f
            };
        }
        let r = u32::from(x) * 255 / u32::from(self.w.max(2) - 1);
        let g = u32::from(y) * 255 / u32::from(self.h.max(2) - 1);
        let b = if (x / 32 + y / 32) % 2 == 1 { 255 } else { 0 };
        (r << 16) | (g << 8) | b
    }
}

impl Framebuffer for Pattern {
    fn size(&self) -> (u16, u16) {
        (self.w, self.h)
    }
    fn pixel_format(&self) -> PixelFormat {
        PixelFormat::XRGB8888
    }
    fn read_rect(&mut self, r: Rect, out: &mut Vec<u8>) {
        for y in r.y..r.y + r.h {
            for x in r.x..r.x + r.w {
                out.extend_from_slice(&self.pixel(x, y).to_le_bytes());
            }
        }
    }
    fn take_dirty(&mut self) -> Dirty {
        std::mem::replace(&mut self.dirty, Dirty::None)
    }
}

/// Prints every input event to stdout.
struct PrintInput;

impl InputSink for PrintInput {
    fn key(&self, down: bool, keysym: u32, xt: Option<u16>) {
        let xt = xt.map_or("-".to_string(), |c| format!("{c:#x}"));
        let dir = if down { "down" } else { "up" };
        println!("key {dir} {keysym:#x} xt={xt}");
        let _ = std::io::stdout().flush();
    }
    fn pointer(&self, x: u16, y: u16, buttons: u8, _w: u16, _h: u16) {
        println!("pointer {x} {y} {buttons}");
        let _ = std::io::stdout().flush();
    }
}

fn parse_size(s: &str) -> Result<(u16, u16)> {
    let (w, h) = s
        .split_once('x')
        .with_context(|| format!("--size {s:?}: expected WxH, e.g. 640x480"))?;
    let w: u16 = w
        .parse()
        .with_context(|| format!("--size {s:?}: bad width"))?;
    let h: u16 = h
        .parse()
        .with_context(|| format!("--size {s:?}: bad height"))?;
    if !(BAR * 2..=8192).contains(&h) || !(64..=8192).contains(&w) {
        bail!("--size {s:?}: width must be 64-8192 and height 64-8192");
    }
    Ok((w, h))
}

/// Serve the std-VGA model in text mode with `message` on its first row.
/// Serve `fb` as desktop `name` on `listen`, printing the bound addresses for scripts and
/// tests to connect to; the caller keeps the returned server alive while it serves.
fn start_server(
    listen: &vnc::config::VncListen,
    fb: Arc<Mutex<dyn Framebuffer>>,
    name: &str,
) -> Result<VncServer> {
    let server = VncServer::from_config(
        listen,
        fb,
        Arc::new(PrintInput),
        VncServerOptions {
            name: name.into(),
            ..Default::default()
        },
    )
    .context("starting the VNC server")?;
    for a in server.local_addrs() {
        println!("listening on {a}");
    }
    let _ = std::io::stdout().flush();
    Ok(server)
}

fn serve_text(listen: &vnc::config::VncListen, message: &str, seconds: u64) -> Result<()> {
    use devices::bus::BusDevice;
    use devices::vga::{HeapVram, Vga};
    let vga = Vga::new(Box::new(HeapVram::new(16 << 20)));
    let mut window = vga.legacy_window();
    let mut ports = vga.vga_ports();
    // Cursor off (CRTC 0x0A bit 5) so the cells show only glyphs.
    ports.write(0x3d4 - 0x3c0, &[0x0a]);
    ports.write(0x3d5 - 0x3c0, &[0x20]);
    for (i, b) in message.bytes().take(80).enumerate() {
        window.write(0x18000 + i as u64 * 2, &[b, 0x1f]);
    }
    let _server = start_server(
        listen,
        Arc::new(Mutex::new(vga.display())),
        "rvmm-vnc-demo (VGA text)",
    )?;
    let start = Instant::now();
    while seconds == 0 || start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let (w, h) = parse_size(&args.size)?;
    let cfg: VncConfig = args.vnc.parse().context("parsing --vnc")?;
    let VncConfig::Listen(listen) = cfg else {
        bail!("--vnc none: nothing to serve");
    };
    if let Some(msg) = &args.text {
        return serve_text(&listen, msg, args.seconds);
    }
    let pattern = Arc::new(Mutex::new(Pattern {
        w,
        h,
        frame: 0,
        dirty: Dirty::None,
    }));
    let _server = start_server(&listen, pattern.clone(), "rvmm-vnc-demo")?;
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(40));
        if args.seconds > 0 && start.elapsed() >= Duration::from_secs(args.seconds) {
            return Ok(());
        }
        if !args.still {
            let mut p = pattern.lock().unwrap_or_else(|e| e.into_inner());
            p.frame += 1;
            p.dirty = Dirty::Rects(vec![Rect::new(0, h - BAR, w, BAR)]);
        }
    }
}
