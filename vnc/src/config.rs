//! The `--vnc` option: `HOST[:DISPLAY][,password-file=PATH][,websocket=PORT]` or `none`.
//!
//! Follows QEMU's `-vnc` semantics: display N listens on TCP port 5900+N, an empty host means
//! every interface, and `websocket` without a value listens on 5700+N.

use std::path::PathBuf;
use std::str::FromStr;

use crate::VncError;

/// First TCP port of VNC displays (display 0).
pub const BASE_PORT: u16 = 5900;
/// First TCP port of the WebSocket listener when `websocket` is given without a port.
pub const WEBSOCKET_BASE_PORT: u16 = 5700;

/// Where the VNC server listens, as given by `--vnc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VncConfig {
    /// `--vnc none`: no server.
    Disabled,
    /// Serve on the given addresses.
    Listen(VncListen),
}

/// An enabled VNC server's addresses and options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VncListen {
    /// Host or address to bind (no brackets for IPv6); `0.0.0.0` when omitted.
    pub host: String,
    /// Display number N (port 5900+N).
    pub display: u16,
    /// File whose first line is the VNC password (VNC authentication on when set).
    pub password_file: Option<PathBuf>,
    /// Separate WebSocket listener `(host, port)`, for browsers (noVNC).
    pub websocket: Option<(String, u16)>,
    /// Allow lossy compression (Tight JPEG), as QEMU's `lossy=on`.
    pub lossy: bool,
    /// Require VeNCrypt TLS with this PEM certificate chain and key.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl VncListen {
    /// The TCP port of the RFB listener.
    pub fn port(&self) -> u16 {
        BASE_PORT + self.display
    }

    /// `host:port` suitable for `TcpListener::bind`.
    pub fn bind_addr(&self) -> String {
        join_host_port(&self.host, self.port())
    }
}

/// `host:port`, bracketing IPv6 literals.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn bad(value: &str, reason: impl Into<String>) -> VncError {
    VncError::Config {
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Split `HOST[:N]` / `[V6][:N]` into host and optional trailing number.
fn split_host(value: &str, part: &str) -> Result<(String, Option<u32>), VncError> {
    let (host, rest) = if let Some(inner) = part.strip_prefix('[') {
        let end = inner
            .find(']')
            .ok_or_else(|| bad(value, "unterminated '[' in IPv6 host"))?;
        let rest = &inner[end + 1..];
        let rest = if rest.is_empty() {
            None
        } else {
            Some(
                rest.strip_prefix(':')
                    .ok_or_else(|| bad(value, "expected ':' after ']'"))?,
            )
        };
        (inner[..end].to_string(), rest)
    } else {
        match part.rsplit_once(':') {
            Some((h, n)) => (h.to_string(), Some(n)),
            None => (part.to_string(), None),
        }
    };
    let num = match rest {
        None => None,
        Some(n) => Some(
            n.parse::<u32>()
                .map_err(|_| bad(value, format!("{n:?} is not a number")))?,
        ),
    };
    let host = if host.is_empty() {
        "0.0.0.0".to_string()
    } else {
        host
    };
    Ok((host, num))
}

impl FromStr for VncConfig {
    type Err = VncError;

    fn from_str(value: &str) -> Result<Self, VncError> {
        if value == "none" {
            return Ok(VncConfig::Disabled);
        }
        let mut parts = value.split(',');
        let first = parts.next().unwrap_or_default();
        let (host, display) = split_host(value, first)?;
        let display = display.unwrap_or(0);
        if display > u32::from(u16::MAX - BASE_PORT) {
            return Err(bad(value, format!("display {display} is out of range")));
        }
        let display = display as u16;
        let mut cfg = VncListen {
            host,
            display,
            password_file: None,
            websocket: None,
            lossy: false,
            tls: None,
        };
        let (mut tls_cert, mut tls_key) = (None, None);
        for opt in parts {
            let (key, val) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            match (key, val) {
                ("password-file", Some(p)) if !p.is_empty() => {
                    cfg.password_file = Some(PathBuf::from(p))
                }
                ("tls-cert", Some(p)) if !p.is_empty() => tls_cert = Some(PathBuf::from(p)),
                ("tls-key", Some(p)) if !p.is_empty() => tls_key = Some(PathBuf::from(p)),
                ("lossy", None) | ("lossy", Some("on")) => cfg.lossy = true,
                ("lossy", Some("off")) => cfg.lossy = false,
                ("websocket", None) | ("websocket", Some("on")) => {
                    let port = u32::from(WEBSOCKET_BASE_PORT) + u32::from(display);
                    let port = u16::try_from(port)
                        .map_err(|_| bad(value, "websocket port out of range"))?;
                    cfg.websocket = Some((cfg.host.clone(), port));
                }
                ("websocket", Some(w)) => {
                    let (whost, wport) = if w.contains(':') {
                        let (h, p) = split_host(value, w)?;
                        (h, p)
                    } else {
                        let p = w
                            .parse::<u32>()
                            .map_err(|_| bad(value, format!("websocket port {w:?}")))?;
                        (cfg.host.clone(), Some(p))
                    };
                    let port = wport
                        .and_then(|p| u16::try_from(p).ok())
                        .filter(|p| *p != 0)
                        .ok_or_else(|| bad(value, "websocket port must be 1-65535"))?;
                    cfg.websocket = Some((whost, port));
                }
                _ => return Err(bad(value, format!("unknown option {opt:?}"))),
            }
        }
        cfg.tls = match (tls_cert, tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(bad(value, "tls-cert and tls-key must be given together")),
        };
        Ok(VncConfig::Listen(cfg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(s: &str) -> VncListen {
        match s.parse::<VncConfig>().unwrap() {
            VncConfig::Listen(l) => l,
            VncConfig::Disabled => panic!("disabled"),
        }
    }

    #[test]
    fn display_maps_to_port() {
        let l = listen("0.0.0.0");
        assert_eq!((l.host.as_str(), l.port()), ("0.0.0.0", 5900));
        let l = listen("127.0.0.1:3");
        assert_eq!((l.host.as_str(), l.port()), ("127.0.0.1", 5903));
        let l = listen(":1");
        assert_eq!(l.bind_addr(), "0.0.0.0:5901");
        let l = listen("[::1]:2");
        assert_eq!(l.bind_addr(), "[::1]:5902");
        assert_eq!("none".parse::<VncConfig>().unwrap(), VncConfig::Disabled);
    }

    #[test]
    fn options() {
        let l = listen("localhost:1,password-file=/tmp/pw,websocket=5701");
        assert_eq!(l.password_file, Some(PathBuf::from("/tmp/pw")));
        assert_eq!(l.websocket, Some(("localhost".to_string(), 5701)));
        let l = listen("127.0.0.1:4,websocket");
        assert_eq!(l.websocket, Some(("127.0.0.1".to_string(), 5704)));
        assert!(listen("h,lossy=on").lossy && !listen("h").lossy);
        assert_eq!(
            listen("h,tls-cert=/c.pem,tls-key=/k.pem").tls,
            Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem")))
        );
        let l = listen(":0,websocket=127.0.0.2:6000");
        assert_eq!(l.websocket, Some(("127.0.0.2".to_string(), 6000)));
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            "host:x",
            "host:70000",
            "host:1,colour=red",
            "host,websocket=0",
            "host,websocket=99999",
            "[::1",
            "host,password-file=",
            "host,tls-cert=/c.pem",
        ] {
            let err = bad.parse::<VncConfig>().unwrap_err();
            assert!(err.to_string().contains("--vnc"), "{bad}: {err}");
        }
    }
}
