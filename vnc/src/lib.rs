//! An RFB (VNC) server: protocol versions 3.3–3.8, authentication, encodings and input events.
//!
//! It serves any [`Framebuffer`] and forwards keys and pointer events to an [`InputSink`]; it has
//! no knowledge of KVM, so it is tested with in-memory streams and fake screens.
//!
//! Data flow: a capture thread polls the framebuffer's dirty regions and publishes the latest
//! frame; each client has a reader thread (parses client messages, forwards input) and a writer
//! thread (compares the latest frame against what that client was last sent, encodes the changed
//! tiles). A slow client only ever delays its own writer, which then skips to the newest frame.
//!
//! Serving a screen as `--vnc 127.0.0.1:1,websocket=5701` describes:
//!
//! ```no_run
//! use std::sync::{Arc, Mutex};
//! use vnc::{Dirty, Framebuffer, PixelFormat, Rect, VncConfig, VncServer, VncServerOptions};
//!
//! struct Grey;
//! impl Framebuffer for Grey {
//!     fn size(&self) -> (u16, u16) { (640, 480) }
//!     fn pixel_format(&self) -> PixelFormat { PixelFormat::XRGB8888 }
//!     fn read_rect(&mut self, r: Rect, out: &mut Vec<u8>) {
//!         out.resize(out.len() + r.area() * 4, 0x80);
//!     }
//!     fn take_dirty(&mut self) -> Dirty { Dirty::None }
//! }
//!
//! let VncConfig::Listen(cfg) = "127.0.0.1:1,websocket=5701".parse().unwrap() else { return };
//! let server = VncServer::from_config(
//!     &cfg,
//!     Arc::new(Mutex::new(Grey)),
//!     Arc::new(vnc::framebuffer::NoInput),
//!     VncServerOptions::default(),
//! )
//! .unwrap();
//! println!("VNC on {:?}", server.local_addrs());
//! ```
//!
//! Supported: RFB 3.3/3.7/3.8; security None and VNC Authentication (with a lockout after
//! repeated failures), or VeNCrypt X509None/X509Vnc over TLS (rustls) with
//! `tls-cert`/`tls-key`; any true-colour pixel format (8/16/32 bpp, any shifts, both byte
//! orders) and 8-bit colour-map formats (the server sends a BGR233 map); Raw, CopyRect
//! (scroll detection), Hextile, ZRLE, Tight (zlib; JPEG with `lossy=on`); DesktopSize,
//! ExtendedDesktopSize, Cursor, QEMU Extended Key Event, QEMU LED State, ContinuousUpdates
//! and Fence; RFB over WebSocket for noVNC. Not supported: clipboard, TLS on the WebSocket
//! listener.

pub mod auth;
pub mod client;
pub mod config;
pub mod encode;
pub mod framebuffer;
pub mod pixel;
pub mod proto;
pub mod screenshot;
pub mod server;
pub mod session;
pub mod tls;
pub mod websocket;

pub use config::VncConfig;
pub use framebuffer::{Cursor, Dirty, Framebuffer, InputSink, Rect};
pub use pixel::PixelFormat;
pub use server::{VncServer, VncServerOptions};

/// Errors of the RFB server and client.
#[derive(Debug, thiserror::Error)]
pub enum VncError {
    /// Socket or file I/O failed.
    #[error("vnc I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something the protocol does not allow.
    #[error("vnc protocol violation: {0}")]
    Protocol(String),
    /// Authentication was refused.
    #[error("vnc authentication failed: {0}")]
    AuthFailed(String),
    /// A `--vnc` option string could not be parsed.
    #[error("invalid --vnc option {value:?}: {reason} (expected HOST[:DISPLAY][,password-file=PATH][,websocket=PORT][,lossy=on][,tls-cert=PEM,tls-key=PEM] or none)")]
    Config {
        /// The option text as given.
        value: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The password file could not be used.
    #[error("vnc password file {path}: {reason}")]
    PasswordFile {
        /// Path of the file.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, VncError>;

pub(crate) fn proto_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(VncError::Protocol(msg.into()))
}
