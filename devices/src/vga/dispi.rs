//! Bochs VBE "DISPI" registers (index port 0x1CE, data port 0x1CF; also at BAR2 + 0x500): the
//! linear-framebuffer mode interface that Bochs/QEMU std-VGA BIOSes and Linux `bochs-drm` use.

/// Register indices.
pub mod reg {
    /// Interface version (read 0xB0C5; guests write the version they speak).
    pub const ID: u16 = 0;
    /// Horizontal resolution.
    pub const XRES: u16 = 1;
    /// Vertical resolution.
    pub const YRES: u16 = 2;
    /// Bits per pixel (8, 15, 16, 24, 32).
    pub const BPP: u16 = 3;
    /// Enable flags ([`super::enable`]).
    pub const ENABLE: u16 = 4;
    /// 64 KiB bank shown in the 0xA0000 window.
    pub const BANK: u16 = 5;
    /// Virtual (stride) width in pixels.
    pub const VIRT_WIDTH: u16 = 6;
    /// Virtual height in lines.
    pub const VIRT_HEIGHT: u16 = 7;
    /// Horizontal panning offset.
    pub const X_OFFSET: u16 = 8;
    /// Vertical panning offset.
    pub const Y_OFFSET: u16 = 9;
    /// VRAM size in 64 KiB units (read-only).
    pub const VIDEO_MEMORY_64K: u16 = 10;
    /// Number of registers.
    pub const COUNT: u16 = 11;
}

/// ENABLE register bits.
pub mod enable {
    /// Display the DISPI mode.
    pub const ENABLED: u16 = 0x01;
    /// Reads of XRES/YRES/BPP return the maxima.
    pub const GETCAPS: u16 = 0x02;
    /// DAC is 8 bits per channel.
    pub const DAC_8BIT: u16 = 0x20;
    /// Linear framebuffer in use (informational here).
    pub const LFB_ENABLED: u16 = 0x40;
    /// Do not clear VRAM on enable.
    pub const NOCLEARMEM: u16 = 0x80;
}

/// Newest interface version.
pub const ID5: u16 = 0xB0C5;
/// Largest horizontal resolution.
pub const MAX_XRES: u16 = 2560;
/// Largest vertical resolution.
pub const MAX_YRES: u16 = 1600;
/// Largest bits per pixel.
pub const MAX_BPP: u16 = 32;

/// A validated DISPI display mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// Visible width.
    pub width: u16,
    /// Visible height.
    pub height: u16,
    /// Bits per pixel.
    pub bpp: u16,
    /// Bytes per line.
    pub stride: usize,
    /// Byte offset of the visible top-left pixel in VRAM.
    pub offset: usize,
}

impl Mode {
    /// Bytes per pixel.
    pub fn bytes_pp(&self) -> usize {
        usize::from(self.bpp).div_ceil(8)
    }
}

/// The register file.
#[derive(Debug, Clone)]
pub struct Dispi {
    /// Selected register.
    pub index: u16,
    regs: [u16; reg::COUNT as usize],
    vram_size: usize,
}

/// What a register write changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing visible.
    None,
    /// The display mode or panning changed.
    ModeChanged,
    /// The mode was just enabled without NOCLEARMEM: VRAM must be cleared.
    ClearVram,
}

impl Dispi {
    /// Registers after reset for `vram_size` bytes of VRAM.
    pub fn new(vram_size: usize) -> Self {
        let mut regs = [0u16; reg::COUNT as usize];
        regs[reg::ID as usize] = ID5;
        regs[reg::XRES as usize] = 640;
        regs[reg::YRES as usize] = 480;
        regs[reg::BPP as usize] = 32;
        Dispi {
            index: 0,
            regs,
            vram_size,
        }
    }

    fn r(&self, i: u16) -> u16 {
        self.regs[usize::from(i)]
    }

    /// Read the selected register.
    pub fn read(&self) -> u16 {
        let caps = self.r(reg::ENABLE) & enable::GETCAPS != 0;
        match self.index {
            reg::XRES if caps => MAX_XRES,
            reg::YRES if caps => MAX_YRES,
            reg::BPP if caps => MAX_BPP,
            reg::VIDEO_MEMORY_64K => (self.vram_size / 65536).min(0xffff) as u16,
            reg::VIRT_HEIGHT => self.mode().map_or(self.r(reg::VIRT_HEIGHT), |m| {
                (self.vram_size / m.stride.max(1)).min(0xffff) as u16
            }),
            i if i < reg::COUNT => self.r(i),
            _ => 0,
        }
    }

    /// Write the selected register.
    pub fn write(&mut self, v: u16) -> Effect {
        let i = self.index;
        match i {
            reg::ID => {
                // Accept the versions Bochs defines; ignore anything else.
                if (0xB0C0..=ID5).contains(&v) {
                    self.regs[0] = v;
                }
                Effect::None
            }
            reg::XRES | reg::YRES | reg::BPP | reg::VIRT_WIDTH | reg::X_OFFSET | reg::Y_OFFSET => {
                self.regs[usize::from(i)] = v;
                if self.enabled() {
                    Effect::ModeChanged
                } else {
                    Effect::None
                }
            }
            reg::BANK => {
                let banks = (self.vram_size / 65536).max(1);
                if usize::from(v) < banks {
                    self.regs[usize::from(i)] = v;
                } else {
                    log::warn!("vga: DISPI bank {v} beyond {banks} banks of VRAM; ignored");
                }
                Effect::None
            }
            reg::ENABLE => {
                let was = self.enabled();
                self.regs[usize::from(i)] = v;
                if v & enable::ENABLED != 0 && self.mode().is_none() {
                    log::warn!(
                        "vga: DISPI mode {}x{}x{} does not fit {} bytes of VRAM or is unsupported; display stays off",
                        self.r(reg::XRES),
                        self.r(reg::YRES),
                        self.r(reg::BPP),
                        self.vram_size
                    );
                }
                if !was && self.enabled() && v & enable::NOCLEARMEM == 0 {
                    Effect::ClearVram
                } else {
                    Effect::ModeChanged
                }
            }
            reg::VIRT_HEIGHT => Effect::None,
            _ => Effect::None,
        }
    }

    /// Whether the guest enabled a DISPI mode.
    pub fn enabled(&self) -> bool {
        self.r(reg::ENABLE) & enable::ENABLED != 0
    }

    /// Whether the DAC is in 8-bit mode.
    pub fn dac_8bit(&self) -> bool {
        self.r(reg::ENABLE) & enable::DAC_8BIT != 0
    }

    /// Bank shown at 0xA0000.
    pub fn bank(&self) -> u16 {
        self.r(reg::BANK)
    }

    /// The active mode, or `None` when disabled or when the registers describe something that
    /// cannot be shown (unsupported depth, zero or oversize resolution, beyond VRAM).
    pub fn mode(&self) -> Option<Mode> {
        if !self.enabled() {
            return None;
        }
        let (w, h, bpp) = (self.r(reg::XRES), self.r(reg::YRES), self.r(reg::BPP));
        if !matches!(bpp, 8 | 15 | 16 | 24 | 32) || w == 0 || h == 0 || w > MAX_XRES || h > MAX_YRES
        {
            return None;
        }
        let bytes_pp = usize::from(bpp).div_ceil(8);
        let virt_w = usize::from(self.r(reg::VIRT_WIDTH).max(w));
        let stride = virt_w * bytes_pp;
        let (xo, yo) = (
            usize::from(self.r(reg::X_OFFSET)),
            usize::from(self.r(reg::Y_OFFSET)),
        );
        let offset = yo * stride + xo * bytes_pp;
        let end = offset + (usize::from(h) - 1) * stride + usize::from(w) * bytes_pp;
        if xo + usize::from(w) > virt_w || end > self.vram_size {
            return None;
        }
        Some(Mode {
            width: w,
            height: h,
            bpp,
            stride,
            offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(d: &mut Dispi, i: u16, v: u16) -> Effect {
        d.index = i;
        d.write(v)
    }

    #[test]
    fn mode_set_like_bochs_drm() {
        let mut d = Dispi::new(16 << 20);
        d.index = reg::ID;
        assert_eq!(d.read(), ID5);
        d.index = reg::VIDEO_MEMORY_64K;
        assert_eq!(d.read(), 256);
        set(&mut d, reg::ENABLE, 0);
        set(&mut d, reg::BPP, 32);
        set(&mut d, reg::XRES, 1024);
        set(&mut d, reg::YRES, 768);
        set(&mut d, reg::BANK, 0);
        set(&mut d, reg::VIRT_WIDTH, 1024);
        set(&mut d, reg::X_OFFSET, 0);
        set(&mut d, reg::Y_OFFSET, 0);
        assert_eq!(
            set(&mut d, reg::ENABLE, enable::ENABLED | enable::LFB_ENABLED),
            Effect::ClearVram
        );
        let m = d.mode().unwrap();
        assert_eq!(
            (m.width, m.height, m.bpp, m.stride, m.offset),
            (1024, 768, 32, 4096, 0)
        );
        d.index = reg::VIRT_HEIGHT;
        assert_eq!(d.read(), 4096);
        // Page flip by panning.
        assert_eq!(set(&mut d, reg::Y_OFFSET, 768), Effect::ModeChanged);
        assert_eq!(d.mode().unwrap().offset, 768 * 4096);
    }

    #[test]
    fn caps_and_invalid_modes() {
        let mut d = Dispi::new(4 << 20);
        set(&mut d, reg::ENABLE, enable::GETCAPS);
        d.index = reg::XRES;
        assert_eq!(d.read(), MAX_XRES);
        // 2560x1600x32 needs 16 MiB: does not fit in 4.
        set(&mut d, reg::XRES, 2560);
        set(&mut d, reg::YRES, 1600);
        set(&mut d, reg::BPP, 32);
        set(&mut d, reg::ENABLE, enable::ENABLED);
        assert!(d.enabled() && d.mode().is_none());
        set(&mut d, reg::BPP, 12);
        set(&mut d, reg::XRES, 640);
        set(&mut d, reg::YRES, 480);
        assert!(d.mode().is_none());
        set(&mut d, reg::BPP, 16);
        assert_eq!(d.mode().unwrap().stride, 1280);
        // Out-of-range bank is refused.
        set(&mut d, reg::BANK, 64);
        assert_eq!(d.bank(), 0);
    }
}
