//! The i8042 PS/2 controller with a keyboard behind it and the CPU reset line.
//!
//! Ports: data at 0x60 (offset 0), status/command at 0x64 (offset 4). There is no mouse: aux
//! commands are answered with "resend" so guests give up on it.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::bus::BusDevice;
use crate::irq::Interrupt;

/// Base port (data register).
pub const I8042_BASE: u64 = 0x60;
/// Ports decoded from the base: 0x60..=0x64.
pub const I8042_PORTS: u64 = 5;
/// Keyboard IRQ.
pub const KBD_IRQ: u32 = 1;

const DATA: u64 = 0;
const CMD: u64 = 4;

const SR_OBF: u8 = 0x01;
const SR_SYS: u8 = 0x04;
const SR_CMD: u8 = 0x08;
const SR_UNLOCKED: u8 = 0x10;
const SR_AUX_DATA: u8 = 0x20;

const CCB_KBD_INT: u8 = 0x01;
const CCB_SYS: u8 = 0x04;
const CCB_KBD_DISABLED: u8 = 0x10;
const CCB_AUX_DISABLED: u8 = 0x20;
const CCB_TRANSLATE: u8 = 0x40;

/// Most bytes queued toward the guest; older input is dropped past this.
const QUEUE_MAX: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    WriteCcb,
    WriteOutPort,
    WriteKbdOut,
    WriteAuxOut,
    WriteAux,
    KbdArg,
}

/// The controller.
pub struct I8042 {
    ccb: u8,
    outport: u8,
    last_was_cmd: bool,
    pending: Pending,
    queue: VecDeque<(u8, bool)>,
    irq: Option<Arc<dyn Interrupt>>,
    on_reset: Box<dyn FnMut() + Send>,
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
            on_reset,
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
        if aux || self.ccb & CCB_KBD_INT == 0 {
            return;
        }
        if let Some(irq) = &self.irq {
            if let Err(e) = irq.trigger() {
                log::warn!("i8042: cannot raise IRQ 1: {e}");
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
            // No mouse: "resend".
            Pending::WriteAux => self.push(0xfe, true),
            Pending::KbdArg => self.push(0xfa, false),
            Pending::None => self.keyboard_command(v),
        }
    }

    fn keyboard_command(&mut self, v: u8) {
        match v {
            0xff => {
                self.push(0xfa, false);
                self.push(0xaa, false);
            }
            0xf2 => {
                self.push(0xfa, false);
                self.push(0xab, false);
                self.push(0x83, false);
            }
            0xee => self.push(0xee, false),
            0xed | 0xf0 | 0xf3 => {
                self.push(0xfa, false);
                self.pending = Pending::KbdArg;
            }
            _ => self.push(0xfa, false),
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
    fn aux_has_no_mouse_and_queue_is_bounded() {
        let (mut d, _, _) = dev();
        d.write(CMD, &[0xd4]);
        d.write(DATA, &[0xf4]);
        assert_ne!(rd(&mut d, CMD) & SR_AUX_DATA, 0);
        assert_eq!(rd(&mut d, DATA), 0xfe);
        d.push_scancodes(&[0x1c; 200]);
        let mut n = 0;
        while rd(&mut d, CMD) & SR_OBF != 0 {
            rd(&mut d, DATA);
            n += 1;
        }
        assert_eq!(n, QUEUE_MAX);
    }
}
