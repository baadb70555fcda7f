//! The i8042 PS/2 controller with a keyboard behind it and the CPU reset line.
//!
//! Ports: data at 0x60 (offset 0), status/command at 0x64 (offset 4). The keyboard answers the
//! usual commands (reset, identify, LEDs, typematic, scancode set, enable/disable) and sends
//! set-1 bytes while the controller translates (the PC default), set 2 otherwise; a PS/2 mouse
//! sits on the aux port (IRQ 12, standard 3-byte packets). VNC input arrives through
//! [`I8042Input`].

use std::collections::VecDeque;
use std::sync::Arc;

use std::sync::Mutex;

use crate::bus::BusDevice;
use crate::input::keymap::keysym_to_xt;
use crate::input::mouse::RelativePointer;
use crate::input::scancode::set1_bytes;
use crate::irq::Interrupt;

/// Base port (data register).
pub const I8042_BASE: u64 = 0x60;
/// Ports decoded from the base: 0x60..=0x64.
pub const I8042_PORTS: u64 = 5;
/// Keyboard IRQ.
pub const KBD_IRQ: u32 = 1;
/// PS/2 mouse (aux port) IRQ.
pub const AUX_IRQ: u32 = 12;

const DATA: u64 = 0;
const CMD: u64 = 4;

const SR_OBF: u8 = 0x01;
const SR_SYS: u8 = 0x04;
const SR_CMD: u8 = 0x08;
const SR_UNLOCKED: u8 = 0x10;
const SR_AUX_DATA: u8 = 0x20;

const CCB_KBD_INT: u8 = 0x01;
const CCB_AUX_INT: u8 = 0x02;
const CCB_SYS: u8 = 0x04;
const CCB_KBD_DISABLED: u8 = 0x10;
const CCB_AUX_DISABLED: u8 = 0x20;
const CCB_TRANSLATE: u8 = 0x40;

/// Most bytes queued toward the guest; newer input is dropped past this.
const QUEUE_MAX: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    WriteCcb,
    WriteOutPort,
    WriteKbdOut,
    WriteAuxOut,
    WriteAux,
    KbdLeds,
    KbdSet,
    KbdTypematic,
}

/// Keyboard state the guest programs.
#[derive(Debug, Clone, Copy)]
struct Keyboard {
    scanning: bool,
    set: u8,
    leds: u8,
    typematic: u8,
}

impl Default for Keyboard {
    fn default() -> Self {
        Keyboard {
            scanning: true,
            set: 2,
            leds: 0,
            typematic: 0x2b,
        }
    }
}

/// PS/2 mouse state the guest programs.
#[derive(Debug, Default)]
struct Mouse {
    reporting: bool,
    remote: bool,
    rate: u8,
    resolution: u8,
    scaling_2to1: bool,
    buttons: u8,
    pointer: RelativePointer,
    /// A command (sample rate, resolution) waiting for its argument byte.
    arg_for: Option<u8>,
}

impl Mouse {
    fn reset(&mut self) {
        *self = Mouse {
            rate: 100,
            resolution: 2,
            ..Mouse::default()
        };
    }
}

/// The controller.
pub struct I8042 {
    ccb: u8,
    outport: u8,
    last_was_cmd: bool,
    pending: Pending,
    queue: VecDeque<(u8, bool)>,
    irq: Option<Arc<dyn Interrupt>>,
    aux_irq: Option<Arc<dyn Interrupt>>,
    on_reset: Box<dyn FnMut() + Send>,
    kbd: Keyboard,
    mouse: Mouse,
    on_leds: Option<Box<dyn Fn(u8) + Send>>,
}

impl I8042 {
    /// A controller raising `irq` (IRQ 1) for keyboard data and calling `on_reset` when the
    /// guest pulses the reset line.
    pub fn new(irq: Option<Arc<dyn Interrupt>>, on_reset: Box<dyn FnMut() + Send>) -> Self {
        Self {
            ccb: CCB_KBD_INT | CCB_SYS | CCB_TRANSLATE | CCB_AUX_DISABLED,
            outport: 0x01,
            last_was_cmd: false,
            pending: Pending::None,
            queue: VecDeque::new(),
            irq,
            aux_irq: None,
            on_reset,
            kbd: Keyboard::default(),
            mouse: Mouse {
                rate: 100,
                resolution: 2,
                ..Mouse::default()
            },
            on_leds: None,
        }
    }

    /// Call `f` with the LED bits whenever the guest sets the keyboard LEDs.
    pub fn set_led_hook(&mut self, f: Box<dyn Fn(u8) + Send>) {
        self.on_leds = Some(f);
    }

    /// Raise `irq` (IRQ 12) for mouse data.
    pub fn with_aux_irq(mut self, irq: Arc<dyn Interrupt>) -> Self {
        self.aux_irq = Some(irq);
        self
    }

    /// Keyboard LEDs the guest set (bit 0 scroll, 1 num, 2 caps lock).
    pub fn leds(&self) -> u8 {
        self.kbd.leds
    }

    /// A key with XT (set 1) code `xt` went down or up: queued as the guest expects it (set 1
    /// through the controller's translation, set 2 without), unless scanning is off.
    pub fn key(&mut self, xt: u16, down: bool) {
        if !self.kbd.scanning {
            return;
        }
        let bytes = if self.ccb & CCB_TRANSLATE != 0 {
            set1_bytes(xt, down)
        } else {
            set2_bytes(xt, down)
        };
        self.push_scancodes(&bytes);
    }

    /// The absolute pointer moved to `(x, y)` with RFB `buttons`: relative packets for the
    /// guest's PS/2 mouse while it has reporting on.
    pub fn pointer(&mut self, x: u16, y: u16, buttons: u8) {
        let packets = self.mouse.pointer.move_to(x, y, buttons);
        self.mouse.buttons = buttons;
        if !self.mouse.reporting || self.mouse.remote || self.ccb & CCB_AUX_DISABLED != 0 {
            return;
        }
        for p in packets {
            if self.queue.len() + 3 > QUEUE_MAX {
                log::debug!("i8042: output queue full, dropping a mouse packet");
                return;
            }
            for b in p {
                self.push(b, true);
            }
        }
    }

    /// Queue scancode bytes from a keyboard (for example a VNC client).
    pub fn push_scancodes(&mut self, codes: &[u8]) {
        if self.ccb & CCB_KBD_DISABLED != 0 {
            return;
        }
        for &c in codes {
            self.push(c, false);
        }
    }

    fn push(&mut self, byte: u8, aux: bool) {
        if self.queue.len() >= QUEUE_MAX {
            log::debug!("i8042: output queue full, dropping {byte:#x}");
            return;
        }
        let was_empty = self.queue.is_empty();
        self.queue.push_back((byte, aux));
        if was_empty {
            self.raise(aux);
        }
    }

    fn raise(&self, aux: bool) {
        let (enabled, irq, n) = if aux {
            (self.ccb & CCB_AUX_INT != 0, &self.aux_irq, AUX_IRQ)
        } else {
            (self.ccb & CCB_KBD_INT != 0, &self.irq, KBD_IRQ)
        };
        if !enabled {
            return;
        }
        if let Some(irq) = irq {
            if let Err(e) = irq.trigger() {
                log::warn!("i8042: cannot raise IRQ {n}: {e}");
            }
        }
    }

    fn status(&self) -> u8 {
        let mut s = SR_UNLOCKED;
        if let Some((_, aux)) = self.queue.front() {
            s |= SR_OBF;
            if *aux {
                s |= SR_AUX_DATA;
            }
        }
        if self.ccb & CCB_SYS != 0 {
            s |= SR_SYS;
        }
        if self.last_was_cmd {
            s |= SR_CMD;
        }
        s
    }

    fn reset(&mut self) {
        log::info!("i8042: guest pulsed the reset line");
        (self.on_reset)();
    }

    fn command(&mut self, cmd: u8) {
        self.pending = Pending::None;
        match cmd {
            0x20 => self.push(self.ccb, false),
            0x60 => self.pending = Pending::WriteCcb,
            0xa7 => self.ccb |= CCB_AUX_DISABLED,
            0xa8 => self.ccb &= !CCB_AUX_DISABLED,
            0xa9 => self.push(0x00, false),
            0xaa => {
                self.push(0x55, false);
            }
            0xab => self.push(0x00, false),
            0xad => self.ccb |= CCB_KBD_DISABLED,
            0xae => self.ccb &= !CCB_KBD_DISABLED,
            0xc0 => self.push(0x00, false),
            0xd0 => self.push(self.outport, false),
            0xd1 => self.pending = Pending::WriteOutPort,
            0xd2 => self.pending = Pending::WriteKbdOut,
            0xd3 => self.pending = Pending::WriteAuxOut,
            0xd4 => self.pending = Pending::WriteAux,
            // Pulse output lines: bit 0 low pulses the CPU reset line.
            0xf0..=0xff => {
                if cmd & 1 == 0 {
                    self.reset();
                }
            }
            _ => log::debug!("i8042: ignoring unknown controller command {cmd:#x}"),
        }
    }

    fn data(&mut self, v: u8) {
        let pending = std::mem::replace(&mut self.pending, Pending::None);
        match pending {
            Pending::WriteCcb => self.ccb = v,
            Pending::WriteOutPort => {
                self.outport = v;
                if v & 1 == 0 {
                    self.reset();
                }
            }
            Pending::WriteKbdOut => self.push(v, false),
            Pending::WriteAuxOut => self.push(v, true),
            // The argument of a mouse command comes with its own 0xD4 prefix.
            Pending::WriteAux => match self.mouse.arg_for.take() {
                Some(cmd) => {
                    match cmd {
                        0xf3 => self.mouse.rate = v,
                        _ => self.mouse.resolution = v & 3,
                    }
                    self.push(0xfa, true);
                }
                None => self.aux_command(v),
            },
            Pending::KbdLeds => {
                self.kbd.leds = v & 7;
                if let Some(f) = &self.on_leds {
                    f(self.kbd.leds);
                }
                self.push(0xfa, false);
            }
            Pending::KbdTypematic => {
                self.kbd.typematic = v & 0x7f;
                self.push(0xfa, false);
            }
            Pending::KbdSet => {
                self.push(0xfa, false);
                match v {
                    0 => self.push(self.kbd.set, false),
                    1..=3 => self.kbd.set = v,
                    _ => {}
                }
            }
            Pending::None => self.keyboard_command(v),
        }
    }

    fn aux_command(&mut self, v: u8) {
        let ack = |d: &mut Self| d.push(0xfa, true);
        match v {
            0xff => {
                self.mouse.reset();
                ack(self);
                self.push(0xaa, true);
                self.push(0x00, true);
            }
            0xf6 => {
                self.mouse.reset();
                ack(self);
            }
            0xf5 => {
                self.mouse.reporting = false;
                ack(self);
            }
            0xf4 => {
                self.mouse.reporting = true;
                ack(self);
            }
            0xf3 | 0xe8 => {
                ack(self);
                self.mouse.arg_for = Some(v);
            }
            0xf2 => {
                ack(self);
                self.push(0x00, true);
            }
            0xf0 => {
                self.mouse.remote = true;
                ack(self);
            }
            0xea => {
                self.mouse.remote = false;
                ack(self);
            }
            0xeb => {
                ack(self);
                let b = crate::input::mouse::rfb_to_ps2_buttons(self.mouse.buttons);
                for byte in crate::input::mouse::packet(0, 0, b) {
                    self.push(byte, true);
                }
            }
            0xe9 => {
                ack(self);
                let b = crate::input::mouse::rfb_to_ps2_buttons(self.mouse.buttons);
                let status = (u8::from(self.mouse.remote) << 6)
                    | (u8::from(self.mouse.reporting) << 5)
                    | (u8::from(self.mouse.scaling_2to1) << 4)
                    | ((b & 1) << 2)
                    | ((b & 4) >> 1)
                    | ((b & 2) >> 1);
                self.push(status, true);
                self.push(self.mouse.resolution, true);
                self.push(self.mouse.rate, true);
            }
            0xe6 => {
                self.mouse.scaling_2to1 = false;
                ack(self);
            }
            0xe7 => {
                self.mouse.scaling_2to1 = true;
                ack(self);
            }
            _ => {
                log::debug!("i8042: unknown mouse command {v:#x}");
                self.push(0xfe, true);
            }
        }
    }

    fn keyboard_command(&mut self, v: u8) {
        match v {
            0xff => {
                self.kbd = Keyboard::default();
                self.push(0xfa, false);
                self.push(0xaa, false);
            }
            0xf4 => {
                self.kbd.scanning = true;
                self.push(0xfa, false);
            }
            0xf5 | 0xf6 => {
                self.kbd = Keyboard {
                    scanning: v == 0xf6,
                    ..Keyboard::default()
                };
                self.push(0xfa, false);
            }
            0xf2 => {
                self.push(0xfa, false);
                self.push(0xab, false);
                self.push(0x83, false);
            }
            0xee => self.push(0xee, false),
            0xed => {
                self.push(0xfa, false);
                self.pending = Pending::KbdLeds;
            }
            0xf0 => {
                self.push(0xfa, false);
                self.pending = Pending::KbdSet;
            }
            0xf3 => {
                self.push(0xfa, false);
                self.pending = Pending::KbdTypematic;
            }
            0xf7..=0xfd => self.push(0xfa, false),
            _ => {
                log::debug!("i8042: unknown keyboard command {v:#x}");
                self.push(0xfe, false);
            }
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            DATA => match self.queue.pop_front() {
                Some((b, _)) => {
                    if let Some((_, aux)) = self.queue.front() {
                        let aux = *aux;
                        self.raise(aux);
                    }
                    b
                }
                None => 0,
            },
            CMD => self.status(),
            _ => 0xff,
        };
        data.fill(0);
        if let Some(d) = data.first_mut() {
            *d = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            DATA => {
                self.last_was_cmd = false;
                self.data(v);
            }
            CMD => {
                self.last_was_cmd = true;
                self.command(v);
            }
            _ => {}
        }
    }
}

/// Set-2 make codes of XT codes 0x00–0x58 (IBM PC AT keyboard), for the untranslated mode.
const SET2: [u8; 0x59] = [
    0x00, 0x76, 0x16, 0x1e, 0x26, 0x25, 0x2e, 0x36, 0x3d, 0x3e, 0x46, 0x45, 0x4e, 0x55, 0x66, 0x0d,
    0x15, 0x1d, 0x24, 0x2d, 0x2c, 0x35, 0x3c, 0x43, 0x44, 0x4d, 0x54, 0x5b, 0x5a, 0x14, 0x1c, 0x1b,
    0x23, 0x2b, 0x34, 0x33, 0x3b, 0x42, 0x4b, 0x4c, 0x52, 0x0e, 0x12, 0x5d, 0x1a, 0x22, 0x21, 0x2a,
    0x32, 0x31, 0x3a, 0x41, 0x49, 0x4a, 0x59, 0x7c, 0x11, 0x29, 0x58, 0x05, 0x06, 0x04, 0x0c, 0x03,
    0x0b, 0x83, 0x0a, 0x01, 0x09, 0x77, 0x7e, 0x6c, 0x75, 0x7d, 0x7b, 0x6b, 0x73, 0x74, 0x79, 0x69,
    0x72, 0x7a, 0x70, 0x71, 0x84, 0x00, 0x61, 0x78, 0x07,
];

/// The set-2 bytes for the key with XT code `xt` (empty when set 2 has no such key).
pub fn set2_bytes(xt: u16, down: bool) -> Vec<u8> {
    let ext = xt & 0xff00 == 0xe000;
    let code = (xt & 0x7f) as u8;
    let make = match (ext, code) {
        (true, 0x5b) => 0x1f,
        (true, 0x5c) => 0x27,
        (true, 0x5d) => 0x2f,
        (_, c) => SET2.get(usize::from(c)).copied().unwrap_or(0),
    };
    if make == 0 {
        return Vec::new();
    }
    let mut v = Vec::with_capacity(3);
    if ext {
        v.push(0xe0);
    }
    if !down {
        v.push(0xf0);
    }
    v.push(make);
    v
}

/// VNC input for the i8042: keys by keysym (or raw XT code) and the pointer as PS/2 motion.
pub struct I8042Input {
    dev: Arc<Mutex<I8042>>,
    tablet: Option<crate::virtio::input::TabletInput>,
}

impl I8042Input {
    /// Input for `dev`; pointer events go to `tablet` (absolute) instead of the PS/2 mouse
    /// while a driver runs it.
    pub fn new(dev: Arc<Mutex<I8042>>, tablet: Option<crate::virtio::input::TabletInput>) -> Self {
        I8042Input { dev, tablet }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, I8042> {
        self.dev.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl vnc::InputSink for I8042Input {
    fn key(&self, down: bool, keysym: u32, xt: Option<u16>) {
        match xt.or_else(|| keysym_to_xt(keysym).map(|m| m.xt)) {
            Some(code) => self.lock().key(code, down),
            None => log::debug!("i8042: no key for keysym {keysym:#x}"),
        }
    }

    fn pointer(&self, x: u16, y: u16, buttons: u8, width: u16, height: u16) {
        match &self.tablet {
            Some(t) if t.driver_active() => t.pointer(x, y, buttons, width, height),
            _ => self.lock().pointer(x, y, buttons),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Interrupt for Count {
        fn trigger(&self) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn dev() -> (I8042, Arc<AtomicUsize>, Arc<Count>) {
        let resets = Arc::new(AtomicUsize::new(0));
        let r = resets.clone();
        let irq = Arc::new(Count::default());
        let d = I8042::new(
            Some(irq.clone()),
            Box::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            }),
        );
        (d, resets, irq)
    }

    fn rd(d: &mut I8042, off: u64) -> u8 {
        let mut b = [0u8];
        d.read(off, &mut b);
        b[0]
    }

    #[test]
    fn fe_on_the_command_port_resets() {
        let (mut d, resets, _) = dev();
        d.write(CMD, &[0xfe]);
        assert_eq!(resets.load(Ordering::SeqCst), 1);
        d.write(CMD, &[0xff]);
        assert_eq!(resets.load(Ordering::SeqCst), 1, "0xff pulses no line");
        // Writing the output port with bit 0 clear also resets.
        d.write(CMD, &[0xd1]);
        d.write(DATA, &[0xfe]);
        assert_eq!(resets.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn self_test_and_command_byte_round_trip() {
        let (mut d, _, _) = dev();
        assert_eq!(rd(&mut d, CMD) & SR_OBF, 0);
        d.write(CMD, &[0xaa]);
        assert_ne!(rd(&mut d, CMD) & SR_OBF, 0);
        assert_eq!(rd(&mut d, DATA), 0x55);
        assert_eq!(rd(&mut d, CMD) & SR_OBF, 0);
        d.write(CMD, &[0x60]);
        d.write(DATA, &[0x65]);
        d.write(CMD, &[0x20]);
        assert_eq!(rd(&mut d, DATA), 0x65);
    }

    #[test]
    fn keyboard_reset_and_identify_answer_and_interrupt() {
        let (mut d, _, irq) = dev();
        d.write(DATA, &[0xff]);
        assert_eq!(irq.0.load(Ordering::SeqCst), 1);
        assert_eq!(rd(&mut d, DATA), 0xfa);
        assert_eq!(irq.0.load(Ordering::SeqCst), 2, "next byte raises again");
        assert_eq!(rd(&mut d, DATA), 0xaa);
        d.write(DATA, &[0xf2]);
        assert_eq!(
            [rd(&mut d, DATA), rd(&mut d, DATA), rd(&mut d, DATA)],
            [0xfa, 0xab, 0x83]
        );
        // Set LEDs takes an argument byte, both ACKed.
        d.write(DATA, &[0xed]);
        d.write(DATA, &[0x07]);
        assert_eq!([rd(&mut d, DATA), rd(&mut d, DATA)], [0xfa, 0xfa]);
        d.push_scancodes(&[0x1e, 0x9e]);
        assert_eq!([rd(&mut d, DATA), rd(&mut d, DATA)], [0x1e, 0x9e]);
    }

    #[test]
    fn unknown_aux_command_is_resent_and_queue_is_bounded() {
        let (mut d, _, _) = dev();
        d.write(CMD, &[0xd4]);
        d.write(DATA, &[0x12]);
        assert_ne!(rd(&mut d, CMD) & SR_AUX_DATA, 0);
        assert_eq!(rd(&mut d, DATA), 0xfe);
        d.push_scancodes(&[0x1c; 400]);
        let mut n = 0;
        while rd(&mut d, CMD) & SR_OBF != 0 {
            rd(&mut d, DATA);
            n += 1;
        }
        assert_eq!(n, QUEUE_MAX);
    }

    fn aux(d: &mut I8042, v: u8) {
        d.write(CMD, &[0xd4]);
        d.write(DATA, &[v]);
    }

    fn drain(d: &mut I8042) -> Vec<(u8, bool)> {
        let mut v = Vec::new();
        while rd(d, CMD) & SR_OBF != 0 {
            let aux = rd(d, CMD) & SR_AUX_DATA != 0;
            v.push((rd(d, DATA), aux));
        }
        v
    }

    #[test]
    fn mouse_on_the_aux_port_reports_motion_on_irq_12() {
        let (d, _, kirq) = dev();
        let mirq = Arc::new(Count::default());
        let mut d = d.with_aux_irq(mirq.clone());
        // Reset: ACK, self-test passed, ID 0. No IRQ 12 until the guest enables it.
        aux(&mut d, 0xff);
        assert_eq!(drain(&mut d), [(0xfa, true), (0xaa, true), (0x00, true)]);
        assert_eq!(mirq.0.load(Ordering::SeqCst), 0);
        d.write(CMD, &[0x60]);
        d.write(DATA, &[CCB_KBD_INT | CCB_AUX_INT | CCB_SYS | CCB_TRANSLATE]);
        // Motion before reporting is on is not sent.
        d.pointer(10, 10, 0);
        assert!(drain(&mut d).is_empty());
        aux(&mut d, 0xf3);
        aux(&mut d, 40);
        aux(&mut d, 0xf4);
        assert_eq!(drain(&mut d), [(0xfa, true), (0xfa, true), (0xfa, true)]);
        let before = mirq.0.load(Ordering::SeqCst);
        d.pointer(15, 5, 1);
        assert_eq!(
            drain(&mut d),
            [(0x09, true), (5, true), (5, true)],
            "left button, +5 right, +5 up"
        );
        assert!(mirq.0.load(Ordering::SeqCst) > before);
        assert_eq!(
            kirq.0.load(Ordering::SeqCst),
            0,
            "mouse data never raises IRQ 1"
        );
        // Status request: stream mode, reporting on, left button, resolution 2, rate 40.
        aux(&mut d, 0xe9);
        assert_eq!(
            drain(&mut d),
            [(0xfa, true), (0x24, true), (2, true), (40, true)]
        );
        // Disabling the aux port stops packets.
        d.write(CMD, &[0xa7]);
        d.pointer(20, 20, 0);
        assert!(drain(&mut d).is_empty());
    }

    #[test]
    fn keys_follow_translation_scanning_and_led_commands() {
        let (mut d, _, _) = dev();
        d.key(0x1e, true);
        d.key(0x1e, false);
        d.key(0xe048, true);
        assert_eq!(
            drain(&mut d).into_iter().map(|b| b.0).collect::<Vec<_>>(),
            [0x1e, 0x9e, 0xe0, 0x48]
        );
        // Translation off: set 2 (A = 1C, Up = E0 75, break with F0).
        d.write(CMD, &[0x60]);
        d.write(DATA, &[CCB_KBD_INT | CCB_SYS]);
        d.key(0x1e, true);
        d.key(0x1e, false);
        d.key(0xe048, false);
        assert_eq!(
            drain(&mut d).into_iter().map(|b| b.0).collect::<Vec<_>>(),
            [0x1c, 0xf0, 0x1c, 0xe0, 0xf0, 0x75]
        );
        // Scancode set query answers 2; LEDs and typematic take an argument.
        d.write(DATA, &[0xf0]);
        d.write(DATA, &[0x00]);
        d.write(DATA, &[0xed]);
        d.write(DATA, &[0x04]);
        d.write(DATA, &[0xf3]);
        d.write(DATA, &[0x20]);
        assert_eq!(
            drain(&mut d).into_iter().map(|b| b.0).collect::<Vec<_>>(),
            [0xfa, 0xfa, 0x02, 0xfa, 0xfa, 0xfa, 0xfa]
        );
        assert_eq!(d.leds(), 4);
        let seen = Arc::new(AtomicUsize::new(0));
        let s2 = seen.clone();
        d.set_led_hook(Box::new(move |l| {
            s2.store(usize::from(l) + 1, Ordering::SeqCst)
        }));
        d.write(DATA, &[0xed]);
        d.write(DATA, &[0xff]);
        assert_eq!(
            seen.load(Ordering::SeqCst),
            8,
            "caps|num|scroll, masked to 3 bits"
        );
        drain(&mut d);
        // Scanning off (F5): keys are dropped; F4 turns it back on.
        d.write(DATA, &[0xf5]);
        d.key(0x1e, true);
        assert_eq!(drain(&mut d), [(0xfa, false)]);
        d.write(DATA, &[0xf4]);
        d.key(0x1e, true);
        assert_eq!(drain(&mut d), [(0xfa, false), (0x1c, false)]);
    }

    #[test]
    fn vnc_input_reaches_the_controller() {
        use vnc::InputSink;
        let (d, _, _) = dev();
        let d = Arc::new(Mutex::new(d));
        let input = I8042Input::new(d.clone(), None);
        input.key(true, 0x61, None); // 'a'
        input.key(false, 0, Some(0xe01d)); // right Ctrl up, raw XT
        input.key(true, 0x1234_5678, None); // unknown: dropped
        let mut dev = d.lock().unwrap();
        assert_eq!(
            drain(&mut dev).into_iter().map(|b| b.0).collect::<Vec<_>>(),
            [0x1e, 0xe0, 0x9d]
        );
        assert_eq!(set2_bytes(0xe05b, true), [0xe0, 0x1f]);
        assert_eq!(set2_bytes(0x58, false), [0xf0, 0x07]);
        assert!(set2_bytes(0x7f, true).is_empty());
    }
}
