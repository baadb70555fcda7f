//! The screen of the VM and its VNC server: a std-VGA on PCI with its VRAM in a KVM memory
//! slot (dirty logged), the linear framebuffer handed to a directly booted kernel through
//! `boot_params.screen_info`, and VNC input routed to the keyboard controller.
//!
//! The VNC server lives as long as rvmm ([`Display::start`]); a reboot rebuilds the machine and
//! [`Display::attach`] points the server at the new VGA, so clients stay connected.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{bail, Context, Result};
use kvm_bindings::kvm_userspace_memory_region;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use ::devices::vga::pci::VgaPci;
use ::devices::vga::{LfbInfo, RegionVram, Vga, VgaDisplay, LEGACY_WINDOW_LEN};
use vnc::encode::Frame;
use vnc::{Dirty, Framebuffer, InputSink, PixelFormat, Rect, VncConfig, VncServer};

use crate::cli::Cli;
use crate::vm::Vm;

/// VRAM size (BAR0), as QEMU's std-VGA default.
pub const VRAM_SIZE: usize = 16 << 20;
/// Guest-physical start of the legacy VGA window.
pub const LEGACY_WINDOW_BASE: u64 = 0xa0000;
/// `--display-size` default.
pub const DEFAULT_SIZE: (u16, u16) = (1024, 768);
/// `screen_info.orig_video_isVGA` for a VESA linear framebuffer.
pub const VIDEO_TYPE_VLFB: u8 = 0x23;
/// `screen_info.capabilities`: `ext_lfb_base` holds the upper 32 bits of the base.
pub const VIDEO_CAPABILITY_64BIT_BASE: u32 = 1 << 1;

/// Parse `--display-size WxH`.
pub fn parse_size(s: &str) -> Result<(u16, u16)> {
    let bad = || {
        anyhow::anyhow!(
            "invalid --display-size {s:?}: use WIDTHxHEIGHT, e.g. 1024x768 (each 64-4096, \
             width a multiple of 8)"
        )
    };
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let w: u16 = w.trim().parse().map_err(|_| bad())?;
    let h: u16 = h.trim().parse().map_err(|_| bad())?;
    if !(64..=4096).contains(&w) || !(64..=4096).contains(&h) || !w.is_multiple_of(8) {
        return Err(bad());
    }
    if usize::from(w) * usize::from(h) * 4 > VRAM_SIZE {
        bail!(
            "--display-size {s}: {w}x{h} at 32 bpp needs more than the {} MiB of VRAM",
            VRAM_SIZE >> 20
        );
    }
    Ok((w, h))
}

/// The `struct screen_info` bytes (the first 0x40 bytes of `boot_params`) describing `lfb`
/// at guest-physical `base`.
pub fn screen_info(lfb: &LfbInfo, base: u64) -> [u8; 0x40] {
    let mut si = [0u8; 0x40];
    si[0x0f] = VIDEO_TYPE_VLFB;
    si[0x12..0x14].copy_from_slice(&lfb.width.to_le_bytes());
    si[0x14..0x16].copy_from_slice(&lfb.height.to_le_bytes());
    si[0x16..0x18].copy_from_slice(&lfb.depth.to_le_bytes());
    si[0x18..0x1c].copy_from_slice(&(base as u32).to_le_bytes());
    si[0x1c..0x20].copy_from_slice(&lfb.size_64k.to_le_bytes());
    si[0x24..0x26].copy_from_slice(&lfb.line_length.to_le_bytes());
    si[0x26..0x2e].copy_from_slice(&lfb.channels);
    let high = (base >> 32) as u32;
    if high != 0 {
        si[0x36..0x3a].copy_from_slice(&VIDEO_CAPABILITY_64BIT_BASE.to_le_bytes());
        si[0x3a..0x3e].copy_from_slice(&high.to_le_bytes());
    }
    si
}

/// Take 0xA0000–0xBFFFF out of the guest's RAM slot so accesses there exit to the VGA model:
/// slot 0 (RAM from 0, registered first by `MemorySlots::register_ram`) shrinks to
/// 0–0xA0000 and the rest of that RAM (BIOS area and ACPI tables included) gets the VM's last
/// slot number, which the upward slot allocator reaches last.
fn open_legacy_hole(vm: &Vm) -> Result<()> {
    let hole_end = LEGACY_WINDOW_BASE + LEGACY_WINDOW_LEN;
    let Some(low) = vm.memory.iter().find(|r| r.start_addr().0 == 0) else {
        bail!("guest RAM does not start at address 0: cannot map the VGA window");
    };
    if low.len() <= hole_end {
        bail!("guest RAM ends inside the VGA window: give the guest more --memory");
    }
    let host = low.as_ptr() as u64;
    let spare = u32::try_from(vm.kvm.get_nr_memslots())
        .unwrap_or(32)
        .saturating_sub(1);
    let set = |slot: u32, gpa: u64, size: u64, hva: u64| {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: hva,
        };
        // SAFETY: the host range lies inside guest RAM's mapping, which outlives the VM fd
        // (the Vm keeps both until its vCPU threads are joined).
        unsafe { vm.fd.set_user_memory_region(region) }.with_context(|| {
            format!("KVM_SET_USER_MEMORY_REGION slot {slot} at {gpa:#x}+{size:#x} failed")
        })
    };
    set(0, 0, 0, host)?;
    set(0, 0, LEGACY_WINDOW_BASE, host)?;
    set(spare, hole_end, low.len() - hole_end, host + hole_end)
}

/// Whether `[addr, addr + len)` overlaps guest RAM.
fn overlaps_ram(mem: &::devices::GuestMemoryMmap, addr: u64, len: u64) -> bool {
    let end = addr.saturating_add(len);
    mem.iter().any(|r| {
        let (s, e) = (r.start_addr().0, r.start_addr().0.saturating_add(r.len()));
        addr < e && s < end
    })
}

/// The screen the VNC server serves: the current VM's VGA, or black between VMs.
#[derive(Default)]
struct ScreenSlot(Option<VgaDisplay>);

impl Framebuffer for ScreenSlot {
    fn size(&self) -> (u16, u16) {
        self.0.as_ref().map_or((640, 400), |d| d.size())
    }

    fn pixel_format(&self) -> PixelFormat {
        PixelFormat::XRGB8888
    }

    fn read_rect(&mut self, rect: Rect, out: &mut Vec<u8>) {
        match &mut self.0 {
            Some(d) => d.read_rect(rect, out),
            None => out.resize(out.len() + rect.area() * 4, 0),
        }
    }

    fn take_dirty(&mut self) -> Dirty {
        self.0.as_mut().map_or(Dirty::None, |d| d.take_dirty())
    }
}

/// Where VNC input goes: the current VM's input devices, or nowhere between VMs.
#[derive(Default)]
struct InputSlot(Mutex<Option<Arc<dyn InputSink>>>);

impl InputSlot {
    fn current(&self) -> Option<Arc<dyn InputSink>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, sink: Option<Arc<dyn InputSink>>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = sink;
    }
}

impl InputSink for InputSlot {
    fn key(&self, down: bool, keysym: u32, xt: Option<u16>) {
        if let Some(s) = self.current() {
            s.key(down, keysym, xt);
        }
    }

    fn pointer(&self, x: u16, y: u16, buttons: u8, width: u16, height: u16) {
        if let Some(s) = self.current() {
            s.pointer(x, y, buttons, width, height);
        }
    }
}

/// The display of one rvmm process: options, the VNC server and what it shows.
pub struct Display {
    enabled: bool,
    size: (u16, u16),
    screenshot: Option<PathBuf>,
    screen: Arc<Mutex<ScreenSlot>>,
    input: Arc<InputSlot>,
    server: Option<Arc<VncServer>>,
}

/// The display devices of one VM build; dropping it detaches them from the VNC server.
pub struct VmDisplay {
    screen: Arc<Mutex<ScreenSlot>>,
    input: Arc<InputSlot>,
    _vram: Arc<Mutex<crate::memory::ExtraRegion>>,
}

impl Drop for VmDisplay {
    fn drop(&mut self) {
        lock(&self.screen).0 = None;
        self.input.set(None);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Display {
    /// Read the display flags of `cli` and start the VNC server if `--vnc` asks for one
    /// (printing where it listens on stderr).
    pub fn start(cli: &Cli) -> Result<Self> {
        let vnc = match &cli.vnc {
            // The parse error already names the option and the accepted syntax.
            Some(s) => s.parse::<VncConfig>()?,
            None => VncConfig::Disabled,
        };
        let size = match &cli.display_size {
            Some(s) => parse_size(s)?,
            None => DEFAULT_SIZE,
        };
        let enabled = match cli.display.as_deref() {
            Some("vga" | "std") => true,
            Some("none") => false,
            Some(other) => bail!("invalid --display {other:?}: use vga or none"),
            None => matches!(vnc, VncConfig::Listen(_)) || cli.screenshot_on_exit.is_some(),
        };
        if !enabled && matches!(vnc, VncConfig::Listen(_)) {
            bail!("--vnc needs a display device: drop --display none");
        }
        if !enabled && cli.screenshot_on_exit.is_some() {
            bail!("--screenshot-on-exit needs a display device: drop --display none");
        }
        let screen = Arc::new(Mutex::new(ScreenSlot::default()));
        let input = Arc::new(InputSlot::default());
        let server = match &vnc {
            VncConfig::Listen(l) => {
                let fb: Arc<Mutex<dyn Framebuffer>> = screen.clone();
                let opts = vnc::VncServerOptions::default();
                let s = VncServer::from_config(l, fb, input.clone(), opts)
                    .with_context(|| format!("cannot start the VNC server on {}", l.bind_addr()))?;
                for (i, a) in s.local_addrs().iter().enumerate() {
                    if i == 0 {
                        let display = i32::from(a.port()) - i32::from(vnc::config::BASE_PORT);
                        eprintln!("rvmm: VNC server on {a} (display :{display})");
                    } else {
                        eprintln!("rvmm: VNC WebSocket on {a}");
                    }
                }
                Some(Arc::new(s))
            }
            _ => None,
        };
        Ok(Display {
            enabled,
            size,
            screenshot: cli.screenshot_on_exit.clone(),
            screen,
            input,
            server,
        })
    }

    /// Whether the VM gets a display device.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The running VNC server, if any.
    pub fn server(&self) -> Option<&VncServer> {
        self.server.as_deref()
    }

    /// Put the std-VGA on `vm` and show it; `None` when there is no display.
    pub fn attach(&self, vm: &Vm) -> Result<Option<VmDisplay>> {
        if !self.enabled {
            return Ok(None);
        }
        let (win_base, win_size) = lock(&vm.pci).windows().mmio32;
        // The slot starts at the end of the 32-bit window and moves to where the PCI
        // allocator puts BAR0 as soon as memory decoding is on (nothing else is mapped there).
        let parked = win_base + win_size - VRAM_SIZE as u64;
        let region = vm
            .slots
            .add_region(parked, VRAM_SIZE, true)
            .context("cannot map the VGA's VRAM")?;
        let dirty = vm.slots.dirty_source(&region);
        let vga = Vga::new(Box::new(RegionVram::new(
            region.mapping.clone(),
            Box::new(dirty),
        )));
        let region = Arc::new(Mutex::new(region));
        let (slots, r, ram) = (vm.slots.clone(), region.clone(), vm.memory.clone());
        let hook = Box::new(move |addr: Option<u64>| {
            // Without decoding the slot stays where it was: nothing else lives there.
            if let Some(a) = addr {
                // KVM refuses overlapping slots, and a failed move would leave VRAM unmapped.
                if overlaps_ram(&ram, a, VRAM_SIZE as u64) {
                    log::warn!("VGA: guest put BAR0 at {a:#x}, over RAM; VRAM stays put");
                    return;
                }
                match slots.move_region(&mut lock(&r), a) {
                    Ok(()) => log::debug!("VGA: VRAM slot now at {a:#x}"),
                    Err(e) => log::warn!("VGA: cannot move VRAM to {a:#x}: {e:#}"),
                }
            }
        });
        let pci = Arc::new(Mutex::new(VgaPci::new(&vga, VRAM_SIZE as u64, hook)));
        let slot = lock(&vm.pci)
            .add_device(pci.clone())
            .context("cannot put the VGA on the PCI bus")?;
        // Memory decoding on, as firmware leaves a boot display.
        lock(&vm.pci).config_write(0, slot, 0, 0x04, &[0x03, 0x00]);
        let base = lock(&pci)
            .vram_address()
            .context("the VGA's BAR0 is not decoded after set-up")?;
        {
            let mut pio = vm.buses.pio.write().unwrap_or_else(|p| p.into_inner());
            pio.insert(Arc::new(Mutex::new(vga.dispi_ports())), 0x1ce, 2)
                .context("cannot map the VGA DISPI ports 0x1ce-0x1cf")?;
            pio.insert(Arc::new(Mutex::new(vga.vga_ports())), 0x3c0, 0x20)
                .context("cannot map the VGA ports 0x3c0-0x3df")?;
        }
        open_legacy_hole(vm)?;
        vm.buses
            .mmio
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                Arc::new(Mutex::new(vga.legacy_window())),
                LEGACY_WINDOW_BASE,
                LEGACY_WINDOW_LEN,
            )
            .context("cannot map the VGA window 0xa0000-0xbffff")?;
        self.describe_to_kernel(vm, &vga, base)?;
        log::info!("VGA: PCI 00:{slot:02x}.0, VRAM at {base:#x}");
        lock(&self.screen).0 = Some(vga.display());
        let tablet = ::devices::virtio::input::Tablet::new();
        let tablet_input = tablet.input();
        crate::devices::pci::add_virtio(vm, Box::new(tablet), "the virtio tablet")?;
        let input = ::devices::i8042::I8042Input::new(vm.i8042.clone(), Some(tablet_input));
        self.input.set(Some(Arc::new(input)));
        if let Some(server) = &self.server {
            // Clients that speak QEMU LED State follow the guest's keyboard LEDs.
            let server = Arc::downgrade(server);
            lock(&vm.i8042).set_led_hook(Box::new(move |leds| {
                if let Some(s) = server.upgrade() {
                    s.set_leds(leds);
                }
            }));
        }
        Ok(Some(VmDisplay {
            screen: self.screen.clone(),
            input: self.input.clone(),
            _vram: region,
        }))
    }

    /// Route VNC input to `sink` (the current VM's input devices).
    pub fn set_input(&self, sink: Arc<dyn InputSink>) {
        self.input.set(Some(sink));
    }

    /// At direct kernel boot (a `boot_params` in guest memory), switch to the
    /// `--display-size` mode and describe it in `screen_info`.
    fn describe_to_kernel(&self, vm: &Vm, vga: &Vga, base: u64) -> Result<()> {
        let zero_page = arch::layout::ZERO_PAGE_START;
        let mut magic = [0u8; 4];
        // "HdrS" in the setup header marks a boot_params (not a PVH start).
        if vm
            .memory
            .read_slice(&mut magic, GuestAddress(zero_page + 0x202))
            .is_err()
            || &magic != b"HdrS"
        {
            return Ok(());
        }
        let (w, h) = self.size;
        let Some(mode) = vga.set_mode(w, h, 32) else {
            bail!("the VGA refused the {w}x{h}x32 mode: pick a smaller --display-size");
        };
        let lfb = LfbInfo::for_mode(&mode)
            .with_context(|| format!("the {w}x{h} mode has no boot-protocol description"))?;
        vm.memory
            .write_slice(&screen_info(&lfb, base), GuestAddress(zero_page))
            .context("cannot write boot_params.screen_info")
    }

    /// What rvmm does with the display when it exits: the `--screenshot-on-exit` PNG.
    pub fn on_exit(&self) -> Result<()> {
        let Some(path) = &self.screenshot else {
            return Ok(());
        };
        let frame = {
            let mut s = lock(&self.screen);
            let (w, h) = s.size();
            let mut bytes = Vec::new();
            s.read_rect(Rect::new(0, 0, w, h), &mut bytes);
            let mut pixels: Vec<u32> = bytes
                .chunks_exact(4)
                .map(|p| u32::from_le_bytes([p[0], p[1], p[2], 0]))
                .collect();
            pixels.resize(usize::from(w) * usize::from(h), 0);
            Frame {
                width: w,
                height: h,
                pixels,
            }
        };
        vnc::screenshot::write_png(&frame, path)
            .with_context(|| format!("cannot write the screenshot {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_sizes_parse_and_are_bounded() {
        assert_eq!(parse_size("1024x768").unwrap(), (1024, 768));
        assert_eq!(parse_size("800X600").unwrap(), (800, 600));
        for bad in [
            "",
            "1024",
            "x768",
            "1024x",
            "0x0",
            "1023x768",
            "99999x1",
            "4096x4096",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn screen_info_describes_an_xrgb8888_framebuffer() {
        let lfb = LfbInfo {
            width: 1024,
            height: 768,
            depth: 32,
            line_length: 4096,
            size_64k: 48,
            channels: [8, 16, 8, 8, 8, 0, 8, 24],
        };
        let si = screen_info(&lfb, 0xc000_0000);
        assert_eq!(si[0x0f], 0x23);
        assert_eq!(u16::from_le_bytes([si[0x12], si[0x13]]), 1024);
        assert_eq!(u16::from_le_bytes([si[0x14], si[0x15]]), 768);
        assert_eq!(u16::from_le_bytes([si[0x16], si[0x17]]), 32);
        assert_eq!(
            u32::from_le_bytes(si[0x18..0x1c].try_into().unwrap()),
            0xc000_0000
        );
        assert_eq!(u32::from_le_bytes(si[0x1c..0x20].try_into().unwrap()), 48);
        assert_eq!(u16::from_le_bytes([si[0x24], si[0x25]]), 4096);
        assert_eq!(&si[0x26..0x2e], &[8, 16, 8, 8, 8, 0, 8, 24]);
        assert_eq!(&si[0x36..0x3e], &[0; 8], "below 4 GiB: no 64-bit base");
        let hi = screen_info(&lfb, 0x10_c000_0000);
        assert_eq!(
            u32::from_le_bytes(hi[0x36..0x3a].try_into().unwrap()),
            VIDEO_CAPABILITY_64BIT_BASE
        );
        assert_eq!(u32::from_le_bytes(hi[0x3a..0x3e].try_into().unwrap()), 0x10);
        assert_eq!(
            u32::from_le_bytes(hi[0x18..0x1c].try_into().unwrap()),
            0xc000_0000
        );
    }

    #[test]
    fn bar_addresses_over_ram_are_detected() {
        let mem = crate::memory::create_guest_memory(64 << 20, false).unwrap();
        assert!(overlaps_ram(&mem, 0x10_0000, 4096));
        assert!(overlaps_ram(&mem, (64 << 20) - 1, 16 << 20));
        assert!(!overlaps_ram(&mem, 64 << 20, 16 << 20));
        assert!(!overlaps_ram(&mem, 0xc000_0000, 16 << 20));
        assert!(!overlaps_ram(&mem, u64::MAX - 10, 100), "no overflow");
    }

    #[test]
    fn an_empty_screen_slot_is_black_and_quiet() {
        let mut s = ScreenSlot::default();
        assert_eq!(s.size(), (640, 400));
        let mut out = Vec::new();
        s.read_rect(Rect::new(0, 0, 2, 2), &mut out);
        assert_eq!(out, vec![0; 16]);
        assert!(matches!(s.take_dirty(), Dirty::None));
    }
}
