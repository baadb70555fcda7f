//! The host console: raw terminal mode (restored on every exit path) and the thread that feeds
//! stdin to the guest's UART, with QEMU's Ctrl-A escapes (Ctrl-A x quits, Ctrl-A Ctrl-A sends
//! Ctrl-A).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::exit::{EventSender, VmEvent};
use devices::serial::Serial;

static SAVED: OnceLock<libc::termios> = OnceLock::new();

/// Whether stdin is a terminal.
pub fn stdin_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

/// Whether stdin is a terminal whose foreground process group is ours. A background rvmm
/// (`rvmm … &`) must neither change the terminal's mode nor read it: either would stop the
/// process with SIGTTOU/SIGTTIN.
pub fn stdin_is_foreground_tty() -> bool {
    // SAFETY: tcgetpgrp and getpgrp only query process state.
    stdin_is_tty() && unsafe { libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgrp() }
}

/// Put back the terminal settings saved by [`RawTerminal::enter`], if any. Safe to call more
/// than once and from a panic hook.
pub fn restore() {
    if let Some(t) = SAVED.get() {
        // SAFETY: `t` is a termios obtained from tcgetattr on the same descriptor.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, t) };
    }
}

/// Raw mode on the controlling terminal for as long as this lives.
pub struct RawTerminal {
    active: bool,
}

impl RawTerminal {
    /// Switch stdin to raw mode if it is a terminal (otherwise do nothing).
    pub fn enter() -> Self {
        if !stdin_is_foreground_tty() {
            return Self { active: false };
        }
        // SAFETY: termios is plain data; tcgetattr fills it in.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor and pointer.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } != 0 {
            log::warn!("cannot read terminal settings; leaving the terminal as it is");
            return Self { active: false };
        }
        let _ = SAVED.set(t);
        let mut raw = t;
        // Keystrokes go to the guest as they are typed: no echo, no line editing, no
        // signals from ^C/^Z, no flow control or CR translation. Output processing stays on.
        raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
        raw.c_iflag &= !(libc::IXON | libc::ICRNL | libc::INLCR | libc::BRKINT | libc::ISTRIP);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: valid descriptor and termios.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) };
        Self { active: true }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if self.active {
            restore();
        }
    }
}

/// Splits console input into bytes for the guest and the quit request.
#[derive(Default)]
pub struct Escape {
    armed: bool,
}

impl Escape {
    /// Process `input`; returns the bytes to forward and whether the user asked to quit.
    pub fn filter(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.armed {
                self.armed = false;
                match b {
                    b'x' | b'X' => return (out, true),
                    0x01 => out.push(0x01),
                    _ => {
                        out.push(0x01);
                        out.push(b);
                    }
                }
            } else if b == 0x01 {
                self.armed = true;
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// Feeds stdin to `serial` until `stop` is set or stdin ends.
pub fn spawn_stdin_reader(
    serial: Arc<Mutex<Serial>>,
    events: EventSender,
    stop: Arc<AtomicBool>,
    escapes: bool,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("rvmm-stdin".into())
        .spawn(move || {
            let mut esc = Escape::default();
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd {
                    fd: libc::STDIN_FILENO,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let r = unsafe { libc::poll(&mut pfd, 1, 100) };
                if r <= 0 {
                    continue;
                }
                // SAFETY: reading into a local buffer of the given length.
                let n =
                    unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    // End of input (or an error): the guest simply gets no more.
                    return;
                }
                let input = &buf[..n as usize];
                let (bytes, quit) = if escapes {
                    esc.filter(input)
                } else {
                    (input.to_vec(), false)
                };
                let mut rest = &bytes[..];
                while !rest.is_empty() && !stop.load(Ordering::Relaxed) {
                    let taken = serial
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .enqueue_input(rest);
                    rest = &rest[taken..];
                    if !rest.is_empty() {
                        // The guest has not drained its FIFO yet.
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                if quit {
                    let _ = events.send(VmEvent::Quit);
                    return;
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_a_x_quits_and_ctrl_a_ctrl_a_sends_one() {
        let mut e = Escape::default();
        assert_eq!(e.filter(b"ls\r"), (b"ls\r".to_vec(), false));
        assert_eq!(e.filter(b"a\x01\x01b"), (b"a\x01b".to_vec(), false));
        assert_eq!(e.filter(b"q\x01"), (b"q".to_vec(), false));
        // The escape spans two reads.
        assert_eq!(e.filter(b"x"), (vec![], true));
        let mut e = Escape::default();
        assert_eq!(e.filter(b"\x01c"), (b"\x01c".to_vec(), false));
    }
}
