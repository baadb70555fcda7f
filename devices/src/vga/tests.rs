//! The display model driven through its bus devices, as a guest would.

use std::sync::{Arc, Mutex};

use super::*;
use crate::bus::Bus;
use dispi::{enable, reg};

struct Machine {
    vga: Vga,
    pio: Bus,
    mmio: Bus,
}

const LFB: u64 = 0xc000_0000;

fn machine() -> Machine {
    let vga = Vga::new(Box::new(HeapVram::new(16 << 20)));
    let mut pio = Bus::new();
    pio.insert(Arc::new(Mutex::new(vga.dispi_ports())), 0x1ce, 2)
        .unwrap();
    pio.insert(Arc::new(Mutex::new(vga.vga_ports())), 0x3c0, 0x20)
        .unwrap();
    let mut mmio = Bus::new();
    mmio.insert(
        Arc::new(Mutex::new(vga.legacy_window())),
        0xa0000,
        LEGACY_WINDOW_LEN,
    )
    .unwrap();
    mmio.insert(Arc::new(Mutex::new(vga.vram_bar())), LFB, 16 << 20)
        .unwrap();
    mmio.insert(
        Arc::new(Mutex::new(vga.mmio_bar())),
        LFB + (16 << 20),
        MMIO_BAR_LEN,
    )
    .unwrap();
    Machine { vga, pio, mmio }
}

impl Machine {
    fn outw(&self, port: u64, v: u16) {
        assert!(self.pio.write(port, &v.to_le_bytes()));
    }
    fn inw(&self, port: u64) -> u16 {
        let mut b = [0u8; 2];
        assert!(self.pio.read(port, &mut b));
        u16::from_le_bytes(b)
    }
    fn outb(&self, port: u64, v: u8) {
        assert!(self.pio.write(port, &[v]));
    }
    fn dispi(&self, index: u16, v: u16) {
        self.outw(0x1ce, index);
        self.outw(0x1cf, v);
    }
    fn set_mode(&self, w: u16, h: u16, bpp: u16) {
        self.dispi(reg::ENABLE, 0);
        self.dispi(reg::XRES, w);
        self.dispi(reg::YRES, h);
        self.dispi(reg::BPP, bpp);
        self.dispi(reg::ENABLE, enable::ENABLED | enable::LFB_ENABLED);
    }
}

fn read_all(d: &mut VgaDisplay) -> Vec<u32> {
    let (w, h) = d.size();
    let mut b = Vec::new();
    d.read_rect(Rect::new(0, 0, w, h), &mut b);
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], 0]))
        .collect()
}

#[test]
fn dispi_mode_set_and_linear_framebuffer() {
    let m = machine();
    let mut d = m.vga.display();
    assert_eq!(d.size(), (640, 400), "text mode at reset");
    m.outw(0x1ce, reg::ID);
    assert_eq!(m.inw(0x1cf), dispi::ID5);
    m.set_mode(800, 600, 32);
    assert_eq!(d.size(), (800, 600));
    assert_eq!(d.take_dirty(), Dirty::All);
    assert_eq!(
        d.take_dirty(),
        Dirty::None,
        "clearing VRAM on enable is not a new change"
    );
    // Paint pixel (10, 20) and the whole of row 599 through BAR0.
    let px = |x: u64, y: u64| LFB + (y * 800 + x) * 4;
    assert!(m.mmio.write(px(10, 20), &0x00123456u32.to_le_bytes()));
    assert!(m.mmio.write(px(0, 599), &vec![0xff; 800 * 4]));
    match d.take_dirty() {
        Dirty::Rects(r) => {
            assert!(r.iter().any(|r| (r.y..r.y + r.h).contains(&20)), "{r:?}");
            assert!(r.iter().any(|r| (r.y..r.y + r.h).contains(&599)), "{r:?}");
            assert!(r.iter().all(|r| r.w == 800 && r.y + r.h <= 600), "{r:?}");
        }
        other => panic!("{other:?}"),
    }
    let pixels = read_all(&mut d);
    assert_eq!(pixels[20 * 800 + 10], 0x123456);
    assert_eq!(pixels[599 * 800 + 5], 0xffffff);
    assert_eq!(pixels[0], 0);
    // The same registers through BAR2 (bochs-drm's path): read back XRES.
    let mut b = [0u8; 2];
    assert!(m
        .mmio
        .read(LFB + (16 << 20) + 0x500 + 2 * u64::from(reg::XRES), &mut b));
    assert_eq!(u16::from_le_bytes(b), 800);
    // Switch depth through BAR2 and see the new mode.
    assert!(m.mmio.write(
        LFB + (16 << 20) + 0x500 + 2 * u64::from(reg::BPP),
        &16u16.to_le_bytes()
    ));
    assert_eq!(m.vga.mode().unwrap().bpp, 16);
}

#[test]
fn low_depths_convert_to_rgb() {
    let m = machine();
    let mut d = m.vga.display();
    m.set_mode(64, 8, 16);
    assert!(m.mmio.write(LFB, &0xf800u16.to_le_bytes()));
    assert_eq!(read_all(&mut d)[0], 0xff0000);
    m.set_mode(64, 8, 8);
    // DAC entry 5 := (0, 63, 0) → green.
    m.outb(0x3c8, 5);
    for v in [0, 63, 0] {
        m.outb(0x3c9, v);
    }
    assert!(m.mmio.write(LFB + 3, &[5]));
    assert_eq!(read_all(&mut d)[3], 0x00ff00);
    m.set_mode(64, 8, 24);
    assert!(m.mmio.write(LFB, &[0x33, 0x22, 0x11]));
    assert_eq!(read_all(&mut d)[0], 0x112233);
}

#[test]
fn impossible_modes_keep_text_mode() {
    let m = machine();
    let d = m.vga.display();
    m.set_mode(2560, 1600, 32); // 16 MiB: fits exactly
    assert_eq!(d.size(), (2560, 1600));
    m.set_mode(4000, 3000, 32); // beyond the maxima
    assert_eq!(d.size(), (640, 400));
    m.set_mode(640, 480, 7); // unsupported depth
    assert_eq!(d.size(), (640, 400));
    // Panning past the end of VRAM is refused too.
    m.set_mode(1024, 768, 32);
    m.dispi(reg::Y_OFFSET, 4000);
    assert_eq!(d.size(), (640, 400));
}

#[test]
fn text_mode_renders_characters_with_the_font() {
    let m = machine();
    let mut d = m.vga.display();
    // "Hi" at row 1, column 2, white on blue.
    let cell = 0xb8000 + (80 + 2) * 2;
    assert!(m.mmio.write(cell, &[b'H', 0x1f, b'i', 0x1f]));
    // Cursor off so it does not paint over the cells.
    m.outb(0x3d4, 0x0a);
    m.outb(0x3d5, 0x20);
    d.take_dirty();
    let px = read_all(&mut d);
    let (white, blue, black) = (0xffffff, 0x0000aa, 0);
    for (n, ch) in [b'H', b'i'].into_iter().enumerate() {
        let g = text::glyph(ch);
        for (gy, bits) in g.iter().enumerate() {
            for gx in 0..8 {
                let x = (2 + n) * 8 + gx;
                let y = 16 + gy;
                let want = if bits & (0x80 >> gx) != 0 {
                    white
                } else {
                    blue
                };
                assert_eq!(px[y * 640 + x], want, "{} at glyph ({gx},{gy})", ch as char);
            }
        }
    }
    assert_eq!(px[0], black);
    // Changing one cell dirties only its text row.
    assert!(m.mmio.write(0xb8000 + 24 * 160, &[b'Z', 0x07]));
    assert_eq!(
        d.take_dirty(),
        Dirty::Rects(vec![Rect::new(0, 24 * 16, 640, 16)])
    );
    assert_eq!(d.take_dirty(), Dirty::None);
    // The cursor (on by default at scanlines 13-14) draws in the foreground colour.
    m.outb(0x3d4, 0x0a);
    m.outb(0x3d5, 0x0d);
    m.outb(0x3d4, 0x0f);
    m.outb(0x3d5, ((24 * 80) & 0xff) as u8);
    m.outb(0x3d4, 0x0e);
    m.outb(0x3d5, ((24 * 80) >> 8) as u8);
    assert!(matches!(d.take_dirty(), Dirty::Rects(_)));
    let px = read_all(&mut d);
    assert_eq!(px[(24 * 16 + 13) * 640 + 3], 0xaaaaaa);
    // Attribute 0xc0 (blink bit + red background): red while blink is enabled (the reset
    // state), bright red once the attribute mode register turns blinking off.
    assert!(m.mmio.write(0xb8000 + 79 * 2, &[b' ', 0xc0]));
    d.take_dirty();
    assert_eq!(read_all(&mut d)[79 * 8], 0xaa0000);
    let mut b = [0u8; 1];
    assert!(m.pio.read(0x3da, &mut b));
    m.outb(0x3c0, 0x10);
    m.outb(0x3c0, 0x04);
    assert!(matches!(d.take_dirty(), Dirty::Rects(_)));
    assert_eq!(read_all(&mut d)[79 * 8], 0xff5555);
}

#[test]
fn banked_window_reaches_vram() {
    let m = machine();
    let mut d = m.vga.display();
    m.set_mode(256, 256, 32);
    // Bank 1 starts at byte 65536 = pixel (0, 64).
    m.dispi(reg::BANK, 1);
    assert!(m.mmio.write(0xa0000, &0x00abcdefu32.to_le_bytes()));
    assert_eq!(read_all(&mut d)[64 * 256], 0xabcdef);
    let mut b = [0u8; 4];
    assert!(m.mmio.read(0xa0000, &mut b));
    assert_eq!(u32::from_le_bytes(b), 0x00abcdef);
}

#[test]
fn vnc_client_sees_the_text_screen() {
    use vnc::client::RfbClient;
    let m = machine();
    m.outb(0x3d4, 0x0a);
    m.outb(0x3d5, 0x20);
    let msg = b"rvmm";
    for (i, &c) in msg.iter().enumerate() {
        assert!(m.mmio.write(0xb8000 + i as u64 * 2, &[c, 0x0e]));
    }
    let server = vnc::VncServer::new(
        Arc::new(Mutex::new(m.vga.display())),
        Arc::new(vnc::framebuffer::NoInput),
        vnc::VncServerOptions {
            poll_interval: std::time::Duration::from_millis(5),
            ..Default::default()
        },
    );
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let closer = b.try_clone().unwrap();
    server.serve(
        Box::new(b.try_clone().unwrap()),
        Box::new(b),
        Box::new(move || {
            let _ = closer.shutdown(std::net::Shutdown::Both);
        }),
    );
    let mut c = RfbClient::connect(a, None, true).unwrap();
    c.set_encodings(&[vnc::proto::enc::ZRLE]).unwrap();
    c.request(false).unwrap();
    c.read_update().unwrap();
    assert_eq!((c.screen.width, c.screen.height), (640, 400));
    // Each glyph appears in yellow on black at its cell.
    for (i, &ch) in msg.iter().enumerate() {
        for (gy, bits) in text::glyph(ch).iter().enumerate() {
            for gx in 0..8 {
                let want = if bits & (0x80 >> gx) != 0 {
                    0xffff55
                } else {
                    0
                };
                assert_eq!(c.screen.pixels[gy * 640 + i * 8 + gx], want);
            }
        }
    }
}

#[test]
fn boot_time_mode_and_screen_info() {
    let m = machine();
    let mode = m.vga.set_mode(1024, 768, 32).unwrap();
    assert_eq!(m.vga.display().size(), (1024, 768));
    let info = LfbInfo::for_mode(&mode).unwrap();
    assert_eq!(
        (info.width, info.height, info.depth, info.line_length),
        (1024, 768, 32, 4096)
    );
    assert_eq!(info.size_64k, 48);
    assert_eq!(info.channels, [8, 16, 8, 8, 8, 0, 8, 24]);
    // The guest reads the mode back through the ports as bochs-drm would.
    m.outw(0x1ce, reg::XRES);
    assert_eq!(m.inw(0x1cf), 1024);
    // A mode beyond VRAM is refused and leaves text mode.
    assert!(m.vga.set_mode(2560, 1600, 32).is_some());
    let small = Vga::new(Box::new(HeapVram::new(1 << 20)));
    assert!(small.set_mode(1024, 768, 32).is_none());
    assert_eq!(small.display().size(), (640, 400));
    let mode8 = small.set_mode(320, 200, 8).unwrap();
    assert!(LfbInfo::for_mode(&mode8).is_none());
}
