//! A [`vnc::InputSink`] that turns VNC events into PS/2 keyboard bytes and mouse packets,
//! queued for the i8042 to deliver.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::keymap::keysym_to_xt;
use super::mouse::RelativePointer;
use super::scancode::set1_bytes;

/// Most bytes queued per device; older input is dropped first when the guest does not read.
pub const MAX_QUEUE: usize = 4096;

#[derive(Default)]
struct Queues {
    kbd: VecDeque<u8>,
    mouse: VecDeque<u8>,
    pointer: RelativePointer,
}

/// Queues PS/2 input from VNC clients.
pub struct Ps2Input {
    q: Mutex<Queues>,
    notify: Box<dyn Fn() + Send + Sync>,
}

impl Ps2Input {
    /// A sink that calls `notify` after queueing input (so the i8042 can raise its IRQ).
    pub fn new(notify: Box<dyn Fn() + Send + Sync>) -> Self {
        Ps2Input {
            q: Mutex::new(Queues::default()),
            notify,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.q.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Next keyboard byte (scancode set 1).
    pub fn pop_keyboard(&self) -> Option<u8> {
        self.lock().kbd.pop_front()
    }

    /// Next mouse byte.
    pub fn pop_mouse(&self) -> Option<u8> {
        self.lock().mouse.pop_front()
    }
}

fn push_bounded(q: &mut VecDeque<u8>, bytes: &[u8]) {
    q.extend(bytes);
    while q.len() > MAX_QUEUE {
        q.pop_front();
    }
}

impl vnc::InputSink for Ps2Input {
    fn key(&self, down: bool, keysym: u32, xt: Option<u16>) {
        let Some(code) = xt.or_else(|| keysym_to_xt(keysym).map(|m| m.xt)) else {
            log::debug!("input: no key for keysym {keysym:#x}");
            return;
        };
        push_bounded(&mut self.lock().kbd, &set1_bytes(code, down));
        (self.notify)();
    }

    fn pointer(&self, x: u16, y: u16, buttons: u8, _w: u16, _h: u16) {
        {
            let mut q = self.lock();
            let packets = q.pointer.move_to(x, y, buttons);
            for p in packets {
                push_bounded(&mut q.mouse, &p);
            }
        }
        (self.notify)();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use vnc::InputSink;

    #[test]
    fn keys_become_set1_bytes() {
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        let s = Ps2Input::new(Box::new(move || {
            n2.fetch_add(1, Ordering::SeqCst);
        }));
        s.key(true, 0x61, None);
        s.key(false, 0x61, None);
        s.key(true, 0xff52, None); // Up
        s.key(true, 0, Some(0xe01d)); // raw XT from a QEMU extended key event wins
        s.key(true, 0x12345678, None); // unknown: dropped
        let mut got = Vec::new();
        while let Some(b) = s.pop_keyboard() {
            got.push(b);
        }
        assert_eq!(got, [0x1e, 0x9e, 0xe0, 0x48, 0xe0, 0x1d]);
        assert_eq!(n.load(Ordering::SeqCst), 4);
        s.pointer(10, 10, 0, 100, 100);
        s.pointer(15, 5, 1, 100, 100);
        let mut m = Vec::new();
        while let Some(b) = s.pop_mouse() {
            m.push(b);
        }
        assert_eq!(m, [0x08, 0, 0, 0x09, 5, 5]);
    }
}
