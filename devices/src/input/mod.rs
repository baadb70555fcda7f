//! Keyboard and pointer input for PS/2 devices: keysym → scancode mapping, scancode byte
//! sequences, PS/2 mouse packets, and a [`vnc::InputSink`] that queues them for the i8042.
//!
//! The i8042 model (devices/src/i8042.rs) drains [`Ps2Input`]: keyboard bytes are scancode
//! set 1, i.e. what the guest reads with the controller's set-2→set-1 translation on (the PC
//! default, and what Linux uses). Mouse packets are standard 3-byte PS/2 packets.

pub mod keymap;
pub mod mouse;
pub mod scancode;
pub mod sink;

pub use keymap::{keysym_to_xt, KeyMapping};
pub use sink::Ps2Input;
