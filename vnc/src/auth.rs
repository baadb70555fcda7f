//! VNC Authentication (RFC 6143 §7.2.2): DES challenge-response, password files, and a
//! limiter that slows down and then locks out repeated failures.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use des::cipher::{BlockEncrypt, KeyInit};

use crate::VncError;

/// Only the first 8 bytes of a VNC password count.
pub const MAX_PASSWORD_LEN: usize = 8;

/// The DES key VNC derives from a password: up to 8 bytes, zero padded, each byte bit-reversed.
fn des_key(password: &[u8]) -> [u8; 8] {
    let mut key = [0u8; 8];
    for (k, p) in key.iter_mut().zip(password.iter().take(MAX_PASSWORD_LEN)) {
        *k = p.reverse_bits();
    }
    key
}

/// The response a client holding `password` sends for `challenge`.
pub fn vnc_response(password: &[u8], challenge: &[u8; 16]) -> [u8; 16] {
    let cipher = des::Des::new(&des_key(password).into());
    let mut out = *challenge;
    for block in out.chunks_exact_mut(8) {
        cipher.encrypt_block(block.into());
    }
    out
}

/// Compare without an early exit, so timing does not reveal how many bytes matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Read a password file: the first line, without its newline, at most 8 bytes used.
pub fn read_password_file(path: &Path) -> Result<Vec<u8>, VncError> {
    let err = |reason: String| VncError::PasswordFile {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot stat: {e}")))?;
    if meta.len() > 4096 {
        return Err(err(
            "larger than 4 KiB; expected one line holding the password".into(),
        ));
    }
    let data = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(err("first line is empty; write the password on it".into()));
    }
    if line.len() > MAX_PASSWORD_LEN {
        log::warn!(
            "vnc password file {}: only the first {MAX_PASSWORD_LEN} characters are used by VNC authentication",
            path.display()
        );
    }
    Ok(line[..line.len().min(MAX_PASSWORD_LEN)].to_vec())
}

/// A fresh random 16-byte challenge (from the kernel's CSPRNG).
pub fn challenge() -> std::io::Result<[u8; 16]> {
    use std::io::Read;
    let mut c = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut c)?;
    Ok(c)
}

/// Server-wide brake on password guessing: every failure waits `delay` before it is answered,
/// and after `max_failures` failures within `window`, attempts are refused until the window
/// has passed since the last failure.
pub struct AuthLimiter {
    delay: Duration,
    max_failures: u32,
    window: Duration,
    state: Mutex<(u32, Option<Instant>)>,
}

impl AuthLimiter {
    /// A limiter with the given failure delay, failure budget and window.
    pub fn new(delay: Duration, max_failures: u32, window: Duration) -> Self {
        AuthLimiter {
            delay,
            max_failures,
            window,
            state: Mutex::new((0, None)),
        }
    }

    /// Whether an attempt may proceed now.
    pub fn allowed(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = s.1 {
            if last.elapsed() >= self.window {
                *s = (0, None);
            }
        }
        s.0 < self.max_failures
    }

    /// Record a failure and wait the penalty delay (in the failing client's thread only).
    pub fn failed(&self) {
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.0 = s.0.saturating_add(1);
            s.1 = Some(Instant::now());
        }
        std::thread::sleep(self.delay);
    }

    /// Forget failures after a success.
    pub fn succeeded(&self) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = (0, None);
    }
}

impl Default for AuthLimiter {
    fn default() -> Self {
        AuthLimiter::new(Duration::from_secs(1), 5, Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_des_response() {
        // DES of the all-zero block under the key derived from "password": bit-reversed bytes
        // of "password" are 0e 86 ce ce ee f6 4e 26. Checked against OpenSSL des-ecb.
        let r = vnc_response(b"password", &[0u8; 16]);
        assert_eq!(&r[..8], &[0xff, 0x97, 0x50, 0x2e, 0x94, 0x22, 0xf0, 0x89]);
        assert_eq!(&r[..8], &r[8..]);
        let other = vnc_response(b"passwore", &[0u8; 16]);
        assert_ne!(r, other);
        // Bytes past the 8th do not matter.
        assert_eq!(
            vnc_response(b"password123", &[7; 16]),
            vnc_response(b"password", &[7; 16])
        );
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn password_file_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "secret\nignored\n").unwrap();
        assert_eq!(read_password_file(&p).unwrap(), b"secret");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_password_file(&p).is_err());
        assert!(read_password_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn limiter_locks_out_then_recovers() {
        let l = AuthLimiter::new(Duration::ZERO, 2, Duration::from_millis(100));
        assert!(l.allowed());
        l.failed();
        assert!(l.allowed());
        l.failed();
        assert!(!l.allowed());
        std::thread::sleep(Duration::from_millis(120));
        assert!(l.allowed());
    }
}
