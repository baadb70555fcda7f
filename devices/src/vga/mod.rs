//! Bochs/QEMU std-VGA display model: Bochs VBE DISPI registers, legacy VGA registers, the
//! 0xA0000–0xBFFFF window with 80×25 text mode, and a [`vnc::Framebuffer`] view of the screen.
//!
//! Interface for the VMM / PCI device (1234:1111, class 0x0300):
//! - **VRAM** is handed in as a [`Vram`] (e.g. 16 MiB). The VMM maps a [`RegionVram`] behind PCI
//!   BAR0 as a KVM memory slot and passes a closure reading the slot's dirty log, or traps BAR0
//!   with [`Vga::vram_bar`] over a [`HeapVram`].
//! - **Ports**: [`Vga::dispi_ports`] at 0x1CE (2 ports: index, data; 16-bit accesses) and
//!   [`Vga::vga_ports`] at 0x3C0 (0x20 ports).
//! - **Legacy window**: [`Vga::legacy_window`] as MMIO at 0xA0000 (0x20000 bytes): text mode
//!   cells at 0xB8000, and the 64 KiB DISPI bank at 0xA0000 while a DISPI mode is enabled.
//! - **BAR2** (QEMU's std-VGA MMIO BAR, 4 KiB): [`Vga::mmio_bar`] — VGA ports at 0x400, DISPI
//!   registers at 0x500 (16-bit, index × 2), QEMU extended registers at 0x600. Linux bochs-drm
//!   uses it when present.
//! - **Screen**: [`Vga::display`] implements [`vnc::Framebuffer`] for the VNC server: the DISPI
//!   mode when enabled (8/15/16/24/32 bpp), otherwise the text screen (640×400).
//!
//! All bus handles share one lock with the display; every guest value is validated (modes that
//! do not fit VRAM are refused and logged, out-of-range banks ignored).

pub mod dispi;
pub mod pci;
pub mod regs;
pub mod text;
pub mod vram;

use std::sync::{Arc, Mutex, MutexGuard};

use vnc::{Dirty, Framebuffer, PixelFormat, Rect};

use crate::bus::BusDevice;
use dispi::{Dispi, Effect, Mode};
use regs::VgaRegs;
use text::TextSnapshot;
pub use vram::{HeapVram, RegionVram, Vram};

/// Size of the legacy window at 0xA0000.
pub const LEGACY_WINDOW_LEN: u64 = 0x20000;
/// Size of BAR2.
pub const MMIO_BAR_LEN: u64 = 0x1000;

struct Core {
    vram: Box<dyn Vram>,
    dispi: Dispi,
    regs: VgaRegs,
    legacy: Vec<u8>,
    legacy_dirty: bool,
}

impl Core {
    fn dispi_write(&mut self, v: u16) {
        if self.dispi.write(v) == Effect::ClearVram {
            let zero = vec![0u8; 1 << 16];
            let size = self.vram.size();
            let mut off = 0;
            while off < size {
                self.vram.write(off, &zero[..zero.len().min(size - off)]);
                off += zero.len();
            }
        }
    }

    fn port_read(&mut self, port: u16) -> u8 {
        self.regs.read(port)
    }

    fn port_write(&mut self, port: u16, v: u8) {
        self.regs.write(port, v)
    }

    fn window_access(&mut self, offset: u64, data: &mut [u8], write: bool) {
        let off = offset as usize;
        if self.dispi.enabled() && off < 0x10000 {
            let at = usize::from(self.dispi.bank()) * 0x10000 + off;
            if write {
                self.vram.write(at, data);
            } else {
                self.vram.read(at, data);
            }
            return;
        }
        let end = (off + data.len()).min(self.legacy.len());
        if off >= end {
            if !write {
                data.fill(0xff);
            }
            return;
        }
        if write {
            self.legacy[off..end].copy_from_slice(&data[..end - off]);
            self.legacy_dirty = true;
        } else {
            data[..end - off].copy_from_slice(&self.legacy[off..end]);
        }
    }
}

/// The display model; hands out bus devices and the VNC framebuffer, all sharing one state.
#[derive(Clone)]
pub struct Vga {
    core: Arc<Mutex<Core>>,
}

impl Vga {
    /// A std-VGA with `vram` (its size is reported to the guest).
    pub fn new(vram: Box<dyn Vram>) -> Self {
        let size = vram.size();
        Vga {
            core: Arc::new(Mutex::new(Core {
                vram,
                dispi: Dispi::new(size),
                regs: VgaRegs::default(),
                legacy: vec![0; LEGACY_WINDOW_LEN as usize],
                legacy_dirty: true,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// DISPI index/data ports, for the PIO bus at 0x1CE (length 2).
    pub fn dispi_ports(&self) -> DispiPorts {
        DispiPorts(self.clone())
    }

    /// Legacy VGA ports, for the PIO bus at 0x3C0 (length 0x20).
    pub fn vga_ports(&self) -> VgaPorts {
        VgaPorts(self.clone())
    }

    /// The 0xA0000–0xBFFFF window, for the MMIO bus at 0xA0000 (length 0x20000).
    pub fn legacy_window(&self) -> LegacyWindow {
        LegacyWindow(self.clone())
    }

    /// QEMU std-VGA BAR2 registers (length 0x1000).
    pub fn mmio_bar(&self) -> MmioBar {
        MmioBar(self.clone())
    }

    /// BAR0 as a trapped MMIO range, for VMMs that do not map VRAM as memory.
    pub fn vram_bar(&self) -> VramBar {
        VramBar(self.clone())
    }

    /// The screen, for the VNC server.
    pub fn display(&self) -> VgaDisplay {
        VgaDisplay {
            vga: self.clone(),
            last_mode: None,
            text: None,
            text_pixels: Vec::new(),
            first: true,
        }
    }

    /// The active DISPI mode, if any.
    pub fn mode(&self) -> Option<Mode> {
        self.lock().dispi.mode()
    }

    /// Switch to a linear-framebuffer mode before the guest starts (direct kernel boot with
    /// `--display-size`), as firmware would; `None` when the mode does not fit VRAM.
    pub fn set_mode(&self, width: u16, height: u16, bpp: u16) -> Option<Mode> {
        let mut c = self.lock();
        for (reg, v) in [
            (dispi::reg::ENABLE, 0),
            (dispi::reg::XRES, width),
            (dispi::reg::YRES, height),
            (dispi::reg::BPP, bpp),
            (dispi::reg::VIRT_WIDTH, width),
            (dispi::reg::X_OFFSET, 0),
            (dispi::reg::Y_OFFSET, 0),
            (dispi::reg::BANK, 0),
            (
                dispi::reg::ENABLE,
                dispi::enable::ENABLED | dispi::enable::LFB_ENABLED,
            ),
        ] {
            c.dispi.index = reg;
            c.dispi_write(v);
        }
        let m = c.dispi.mode();
        if m.is_none() {
            c.dispi.index = dispi::reg::ENABLE;
            c.dispi_write(0);
        }
        m
    }
}

/// What a kernel's `screen_info` needs to draw on the linear framebuffer (VIDEO_TYPE_VLFB):
/// the boot-protocol fields, to be filled in by the boot code with the BAR0 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LfbInfo {
    /// `lfb_width`.
    pub width: u16,
    /// `lfb_height`.
    pub height: u16,
    /// `lfb_depth` (bits per pixel).
    pub depth: u16,
    /// `lfb_linelength` (bytes per line).
    pub line_length: u16,
    /// `lfb_size` in 64 KiB units, covering the visible screen.
    pub size_64k: u32,
    /// `(red_size, red_pos, green_size, green_pos, blue_size, blue_pos, rsvd_size, rsvd_pos)`.
    pub channels: [u8; 8],
}

impl LfbInfo {
    /// The description of `mode`, if the boot protocol can express it (15/16/24/32 bpp, line
    /// length below 64 KiB).
    pub fn for_mode(mode: &Mode) -> Option<LfbInfo> {
        let channels = match mode.bpp {
            32 => [8, 16, 8, 8, 8, 0, 8, 24],
            24 => [8, 16, 8, 8, 8, 0, 0, 0],
            16 => [5, 11, 6, 5, 5, 0, 0, 0],
            15 => [5, 10, 5, 5, 5, 0, 1, 15],
            _ => return None,
        };
        let size = mode.stride * usize::from(mode.height);
        Some(LfbInfo {
            width: mode.width,
            height: mode.height,
            depth: mode.bpp,
            line_length: u16::try_from(mode.stride).ok()?,
            size_64k: u32::try_from(size.div_ceil(65536)).ok()?,
            channels,
        })
    }
}

fn le_value(data: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    let n = data.len().min(4);
    b[..n].copy_from_slice(&data[..n]);
    u32::from_le_bytes(b)
}

fn put_le(data: &mut [u8], v: u32) {
    let b = v.to_le_bytes();
    for (i, d) in data.iter_mut().enumerate() {
        *d = b.get(i).copied().unwrap_or(0);
    }
}

/// Bochs DISPI ports 0x1CE (index) and 0x1CF (data).
pub struct DispiPorts(Vga);

impl BusDevice for DispiPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let c = self.0.lock();
        let v = match offset {
            0 => c.dispi.index,
            _ => c.dispi.read(),
        };
        put_le(data, u32::from(v));
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut c = self.0.lock();
        let v = le_value(data) as u16;
        match offset {
            0 => c.dispi.index = v,
            _ => c.dispi_write(v),
        }
    }
}

/// Legacy VGA ports 0x3C0–0x3DF.
pub struct VgaPorts(Vga);

impl BusDevice for VgaPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut c = self.0.lock();
        for (i, d) in data.iter_mut().enumerate() {
            *d = c.port_read(regs::BASE + (offset as u16).wrapping_add(i as u16));
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut c = self.0.lock();
        // A 16-bit write is index then data (outw to 0x3C4/0x3CE/0x3D4 is common).
        for (i, &d) in data.iter().enumerate() {
            c.port_write(regs::BASE + (offset as u16).wrapping_add(i as u16), d);
        }
    }
}

/// The 0xA0000 legacy memory window.
pub struct LegacyWindow(Vga);

impl BusDevice for LegacyWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.0.lock().window_access(offset, data, false);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut buf = data.to_vec();
        self.0.lock().window_access(offset, &mut buf, true);
    }
}

/// BAR0 VRAM trapped through the bus.
pub struct VramBar(Vga);

impl BusDevice for VramBar {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.0.lock().vram.read(offset as usize, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.0.lock().vram.write(offset as usize, data);
    }
}

/// QEMU std-VGA BAR2: VGA ports at 0x400, DISPI at 0x500, extended registers at 0x600.
pub struct MmioBar(Vga);

impl BusDevice for MmioBar {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut c = self.0.lock();
        match offset {
            0x400..=0x41f => {
                for (i, d) in data.iter_mut().enumerate() {
                    *d = c.port_read(regs::BASE + (offset - 0x400) as u16 + i as u16);
                }
            }
            0x500..=0x515 if offset.is_multiple_of(2) => {
                let saved = c.dispi.index;
                c.dispi.index = ((offset - 0x500) / 2) as u16;
                let v = c.dispi.read();
                c.dispi.index = saved;
                put_le(data, u32::from(v));
            }
            // Extended register block size, then "little endian" framebuffer byte order.
            0x600 => put_le(data, 8),
            0x604 => put_le(data, 0x1e1e_1e1e),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut c = self.0.lock();
        match offset {
            0x400..=0x41f => {
                for (i, &d) in data.iter().enumerate() {
                    c.port_write(regs::BASE + (offset - 0x400) as u16 + i as u16, d);
                }
            }
            0x500..=0x515 if offset.is_multiple_of(2) => {
                let saved = c.dispi.index;
                c.dispi.index = ((offset - 0x500) / 2) as u16;
                c.dispi_write(le_value(data) as u16);
                c.dispi.index = saved;
            }
            // Big-endian framebuffers are not supported: the endianness register stays put.
            _ => {}
        }
    }
}

/// What the screen showed at the last `take_dirty`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    Text,
    Graphics(Mode),
}

/// The screen as a [`vnc::Framebuffer`].
pub struct VgaDisplay {
    vga: Vga,
    last_mode: Option<Shown>,
    text: Option<TextSnapshot>,
    text_pixels: Vec<u32>,
    first: bool,
}

impl VgaDisplay {
    fn shown(c: &Core) -> Shown {
        match c.dispi.mode() {
            Some(m) => Shown::Graphics(m),
            None => Shown::Text,
        }
    }

    fn refresh_text(&mut self, c: &Core) -> Vec<usize> {
        let snap = TextSnapshot::capture(&c.legacy, &c.regs);
        let rows = match &self.text {
            Some(old) if self.text_pixels.len() == text::WIDTH as usize * text::HEIGHT as usize => {
                snap.changed_rows(old)
            }
            _ => (0..text::ROWS).collect(),
        };
        self.text_pixels
            .resize(text::WIDTH as usize * text::HEIGHT as usize, 0);
        let row_px = text::WIDTH as usize * text::CELL_H;
        for &r in &rows {
            snap.render_row(r, &mut self.text_pixels[r * row_px..(r + 1) * row_px]);
        }
        self.text = Some(snap);
        rows
    }
}

fn convert_row(c: &Core, m: &Mode, src: &[u8], out: &mut Vec<u8>) {
    let dac8 = c.dispi.dac_8bit();
    let mut push = |rgb: u32| out.extend_from_slice(&rgb.to_le_bytes());
    match m.bpp {
        32 => out.extend_from_slice(src),
        24 => src
            .chunks_exact(3)
            .for_each(|p| push(u32::from_le_bytes([p[0], p[1], p[2], 0]))),
        16 | 15 => src.chunks_exact(2).for_each(|p| {
            let v = u32::from(u16::from_le_bytes([p[0], p[1]]));
            let (r, g, b) = if m.bpp == 16 {
                ((v >> 11) & 31, (v >> 5) & 63, v & 31)
            } else {
                ((v >> 10) & 31, ((v >> 5) & 31) << 1 | 1, v & 31)
            };
            let (r, g, b) = (
                (r << 3) | (r >> 2),
                (g << 2) | (g >> 4),
                (b << 3) | (b >> 2),
            );
            push((r << 16) | (g << 8) | b)
        }),
        _ => src.iter().for_each(|&i| push(c.regs.dac_rgb(i, dac8))),
    }
}

impl Framebuffer for VgaDisplay {
    fn size(&self) -> (u16, u16) {
        match Self::shown(&self.vga.lock()) {
            Shown::Graphics(m) => (m.width, m.height),
            Shown::Text => (text::WIDTH, text::HEIGHT),
        }
    }

    fn pixel_format(&self) -> PixelFormat {
        PixelFormat::XRGB8888
    }

    fn read_rect(&mut self, r: Rect, out: &mut Vec<u8>) {
        let vga = self.vga.clone();
        let c = vga.lock();
        match Self::shown(&c) {
            Shown::Graphics(m) => {
                let bpp = m.bytes_pp();
                let mut row = vec![0u8; usize::from(r.w) * bpp];
                for y in r.y..r.y + r.h {
                    let at = m.offset + usize::from(y) * m.stride + usize::from(r.x) * bpp;
                    c.vram.read(at, &mut row);
                    convert_row(&c, &m, &row, out);
                }
            }
            Shown::Text => {
                if self.text.is_none() {
                    self.refresh_text(&c);
                }
                for y in r.y..r.y + r.h {
                    let start = usize::from(y) * usize::from(text::WIDTH) + usize::from(r.x);
                    for p in self
                        .text_pixels
                        .get(start..start + usize::from(r.w))
                        .unwrap_or(&[])
                    {
                        out.extend_from_slice(&p.to_le_bytes());
                    }
                }
            }
        }
    }

    fn take_dirty(&mut self) -> Dirty {
        let vga = self.vga.clone();
        let mut c = vga.lock();
        let shown = Self::shown(&c);
        let first = std::mem::take(&mut self.first);
        let mode_changed = first || self.last_mode != Some(shown);
        self.last_mode = Some(shown);
        let picture = std::mem::take(&mut c.regs.picture_changed);
        let vram_dirty = c.vram.take_dirty();
        match shown {
            Shown::Text => {
                let legacy = std::mem::take(&mut c.legacy_dirty);
                if !(legacy || picture || mode_changed) {
                    return Dirty::None;
                }
                let rows = self.refresh_text(&c);
                if mode_changed {
                    return Dirty::All;
                }
                if rows.is_empty() {
                    return Dirty::None;
                }
                let h = text::CELL_H as u16;
                Dirty::Rects(
                    rows.into_iter()
                        .map(|r| Rect::new(0, r as u16 * h, text::WIDTH, h))
                        .collect(),
                )
            }
            Shown::Graphics(m) => {
                self.text = None;
                if mode_changed || (picture && m.bpp == 8) {
                    return Dirty::All;
                }
                let Some(ranges) = vram_dirty else {
                    return Dirty::All;
                };
                let mut rects: Vec<Rect> = Vec::new();
                let end = m.offset + usize::from(m.height) * m.stride;
                for (s, e) in ranges {
                    if e <= m.offset || s >= end {
                        continue;
                    }
                    let y0 = (s.max(m.offset) - m.offset) / m.stride;
                    let y1 =
                        ((e.min(end) - m.offset).div_ceil(m.stride)).min(usize::from(m.height));
                    if y1 > y0 {
                        let r = Rect::new(0, y0 as u16, m.width, (y1 - y0) as u16);
                        match rects.last_mut() {
                            Some(l) if l.y + l.h >= r.y => l.h = (r.y + r.h).max(l.y + l.h) - l.y,
                            _ => rects.push(r),
                        }
                    }
                }
                if rects.is_empty() {
                    Dirty::None
                } else {
                    Dirty::Rects(rects)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
