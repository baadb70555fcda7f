//! TLS for VeNCrypt (X509None / X509Vnc): certificate loading and a pump that carries the
//! plaintext RFB stream of a TLS connection over a local socket pair, so the session keeps
//! its separate reader and writer threads.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

use crate::VncError;

fn cfg_err(path: &Path, reason: impl std::fmt::Display) -> VncError {
    VncError::Io(io::Error::other(format!(
        "vnc TLS {}: {reason}",
        path.display()
    )))
}

/// A server configuration from a PEM certificate chain and a PEM private key.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, VncError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut io::BufReader::new(
        std::fs::File::open(cert).map_err(|e| cfg_err(cert, e))?,
    ))
    .collect::<Result<_, _>>()
    .map_err(|e| cfg_err(cert, e))?;
    if certs.is_empty() {
        return Err(cfg_err(cert, "no PEM certificate found"));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut io::BufReader::new(
        std::fs::File::open(key).map_err(|e| cfg_err(key, e))?,
    ))
    .map_err(|e| cfg_err(key, e))?
    .ok_or_else(|| cfg_err(key, "no PEM private key found"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cfg_err(cert, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| cfg_err(cert, e))?;
    // No TLS 1.3 session tickets: VNC clients never resume, and when a ticket and the first
    // RFB bytes (SecurityResult) reach TigerVNC (GnuTLS) in one read, it handles the ticket,
    // keeps the RFB record buffered and waits for the socket forever.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Run TLS over `tcp` and return the plaintext end of a socket pair. Two threads move data:
/// network → TLS → plaintext, and plaintext → TLS → network; closing either side closes both.
pub fn spawn_pump(config: Arc<ServerConfig>, tcp: TcpStream) -> io::Result<UnixStream> {
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let conn = Arc::new(Mutex::new(conn));
    let (plain, inner) = UnixStream::pair()?;
    let (tcp_in, mut tcp_out) = (tcp.try_clone()?, tcp.try_clone()?);
    let (mut inner_in, mut inner_out) = (inner.try_clone()?, inner);

    let c1 = conn.clone();
    let mut tcp_w = tcp.try_clone()?;
    thread::Builder::new()
        .name("vnc-tls-rx".into())
        .spawn(move || {
            if let Err(e) = network_to_plain(&c1, tcp_in, &mut tcp_w, &mut inner_out) {
                log::info!("vnc: TLS connection ended: {e}");
            }
            let _ = inner_out.shutdown(Shutdown::Both);
            let _ = tcp_w.shutdown(Shutdown::Both);
        })?;
    thread::Builder::new()
        .name("vnc-tls-tx".into())
        .spawn(move || {
            let _ = plain_to_network(&conn, &mut inner_in, &mut tcp_out);
            let _ = tcp_out.shutdown(Shutdown::Both);
            let _ = inner_in.shutdown(Shutdown::Both);
        })?;
    Ok(plain)
}

fn lock(c: &Mutex<ServerConnection>) -> std::sync::MutexGuard<'_, ServerConnection> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

fn flush_tls(conn: &mut ServerConnection, tcp: &mut TcpStream) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(tcp)?;
    }
    Ok(())
}

fn network_to_plain(
    conn: &Mutex<ServerConnection>,
    mut tcp: TcpStream,
    tcp_w: &mut TcpStream,
    plain: &mut UnixStream,
) -> io::Result<()> {
    let mut net = vec![0u8; 16 * 1024];
    let mut out = Vec::new();
    loop {
        // Read outside the lock so the sending side is never held up by an idle peer.
        let n = tcp.read(&mut net)?;
        if n == 0 {
            return Ok(());
        }
        out.clear();
        {
            let mut c = lock(conn);
            let mut slice = &net[..n];
            while !slice.is_empty() {
                c.read_tls(&mut slice)?;
                let state = c.process_new_packets().map_err(|e| {
                    // Tell the peer why before giving up.
                    let _ = flush_tls(&mut c, tcp_w);
                    io::Error::new(io::ErrorKind::InvalidData, e)
                })?;
                let avail = state.plaintext_bytes_to_read();
                if avail > 0 {
                    let at = out.len();
                    out.resize(at + avail, 0);
                    c.reader().read_exact(&mut out[at..])?;
                }
                if state.peer_has_closed() {
                    flush_tls(&mut c, tcp_w)?;
                    plain.write_all(&out)?;
                    return Ok(());
                }
            }
            flush_tls(&mut c, tcp_w)?;
        }
        plain.write_all(&out)?;
    }
}

fn plain_to_network(
    conn: &Mutex<ServerConnection>,
    plain: &mut UnixStream,
    tcp: &mut TcpStream,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = plain.read(&mut buf)?;
        // Hold application data until the handshake is complete: sent as 0.5-RTT data it
        // arrives with the server's handshake flight, and clients that wait for the socket
        // to become readable after their handshake (TigerVNC) then never see it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while lock(conn).is_handshaking() {
            if std::time::Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ));
            }
            thread::sleep(std::time::Duration::from_millis(2));
        }
        let mut c = lock(conn);
        if n == 0 {
            c.send_close_notify();
            return flush_tls(&mut c, tcp);
        }
        c.writer().write_all(&buf[..n])?;
        flush_tls(&mut c, tcp)?;
    }
}
