//! The server: frame capture, listeners, and the registry of connected clients.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crate::auth::{read_password_file, AuthLimiter};
use crate::config::{join_host_port, VncListen};
use crate::encode::Frame;
use crate::framebuffer::{Cursor, Dirty, Framebuffer, InputSink, Rect};
use crate::pixel::to_server_pixels;
use crate::session::{self, ClientState};
use crate::websocket;
use crate::{Result, VncError};

/// Tunables of a server.
#[derive(Debug, Clone)]
pub struct VncServerOptions {
    /// VNC Authentication password (first 8 bytes); `None` = security type None.
    pub password: Option<Vec<u8>>,
    /// Desktop name sent in ServerInit.
    pub name: String,
    /// How often the framebuffer is polled for changes.
    pub poll_interval: Duration,
    /// Delay before answering a failed authentication.
    pub auth_failure_delay: Duration,
    /// Failed authentications (within a minute) before attempts are refused.
    pub auth_max_failures: u32,
    /// Most clients connected at once; more are refused.
    pub max_clients: usize,
    /// Time a client has to finish the handshake.
    pub handshake_timeout: Duration,
    /// Allow lossy compression (Tight JPEG) for clients that ask for a JPEG quality level.
    pub lossy: bool,
    /// Require VeNCrypt (X509None, or X509Vnc with a password) with this TLS configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for VncServerOptions {
    fn default() -> Self {
        VncServerOptions {
            password: None,
            name: "rvmm".to_string(),
            poll_interval: Duration::from_millis(30),
            auth_failure_delay: Duration::from_secs(1),
            auth_max_failures: 5,
            max_clients: 16,
            handshake_timeout: Duration::from_secs(30),
            lossy: false,
            tls: None,
        }
    }
}

/// The latest published screen.
pub(crate) struct Screen {
    pub frame: Arc<Frame>,
    pub cursor: Option<Arc<Cursor>>,
}

/// One connected client as the rest of the server sees it.
pub(crate) struct ClientHandle {
    pub id: u64,
    pub state: Mutex<ClientState>,
    pub wake: Condvar,
    pub shutdown: Box<dyn Fn() + Send + Sync>,
}

impl ClientHandle {
    pub fn lock(&self) -> MutexGuard<'_, ClientState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ask the writer to stop and unblock both halves of the connection.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
        (self.shutdown)();
    }
}

/// State shared by the capture thread, listeners and client threads.
pub(crate) struct Shared {
    pub opts: VncServerOptions,
    pub screen: Mutex<Screen>,
    /// Bumped whenever `screen.frame` changes.
    pub frame_gen: AtomicU64,
    /// Bumped whenever `screen.cursor` changes.
    pub cursor_gen: AtomicU64,
    /// Keyboard LEDs (bit 0 scroll, 1 num, 2 caps lock) and their generation.
    pub leds: AtomicU8,
    pub led_gen: AtomicU64,
    pub clients: Mutex<Vec<Arc<ClientHandle>>>,
    pub input: Arc<dyn InputSink>,
    pub limiter: AuthLimiter,
    pub next_id: AtomicU64,
    pub stop: AtomicBool,
    /// Connections accepted but not yet through the handshake.
    pub pending: std::sync::atomic::AtomicUsize,
}

impl Shared {
    pub fn screen(&self) -> (Arc<Frame>, Option<Arc<Cursor>>) {
        let s = self.screen.lock().unwrap_or_else(|p| p.into_inner());
        (s.frame.clone(), s.cursor.clone())
    }

    pub fn clients(&self) -> MutexGuard<'_, Vec<Arc<ClientHandle>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wake every client writer (after a new frame, cursor or LED state).
    pub fn wake_all(&self) {
        for c in self.clients().iter() {
            // Taking the state lock orders this wake-up after the writer's check.
            let _g = c.lock();
            c.wake.notify_all();
        }
    }
}

/// A running VNC server over one framebuffer and input sink.
///
/// Dropping it stops the capture thread and listeners and disconnects every client.
pub struct VncServer {
    shared: Arc<Shared>,
    listeners: Vec<SocketAddr>,
}

impl VncServer {
    /// Start capturing `fb`; no listener yet (see [`VncServer::listen`]).
    pub fn new(
        fb: Arc<Mutex<dyn Framebuffer>>,
        input: Arc<dyn InputSink>,
        opts: VncServerOptions,
    ) -> Self {
        let first = {
            let mut f = fb.lock().unwrap_or_else(|p| p.into_inner());
            let _ = f.take_dirty();
            read_frame(&mut *f)
        };
        let shared = Arc::new(Shared {
            limiter: AuthLimiter::new(
                opts.auth_failure_delay,
                opts.auth_max_failures,
                Duration::from_secs(60),
            ),
            opts,
            screen: Mutex::new(Screen {
                frame: Arc::new(first),
                cursor: None,
            }),
            frame_gen: AtomicU64::new(1),
            cursor_gen: AtomicU64::new(0),
            leds: AtomicU8::new(0),
            led_gen: AtomicU64::new(0),
            clients: Mutex::new(Vec::new()),
            input,
            next_id: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            pending: std::sync::atomic::AtomicUsize::new(0),
        });
        let s = shared.clone();
        thread::Builder::new()
            .name("vnc-capture".into())
            .spawn(move || capture_loop(&s, &fb))
            .map_err(|e| log::error!("vnc: cannot start capture thread: {e}"))
            .ok();
        VncServer {
            shared,
            listeners: Vec::new(),
        }
    }

    /// Start a server as `--vnc` describes: RFB listener, optional WebSocket listener and
    /// password file.
    pub fn from_config(
        cfg: &VncListen,
        fb: Arc<Mutex<dyn Framebuffer>>,
        input: Arc<dyn InputSink>,
        mut opts: VncServerOptions,
    ) -> Result<Self> {
        if let Some(p) = &cfg.password_file {
            opts.password = Some(read_password_file(p)?);
        }
        opts.lossy |= cfg.lossy;
        if let Some((cert, key)) = &cfg.tls {
            opts.tls = Some(crate::tls::load_server_config(cert, key)?);
        }
        let mut server = VncServer::new(fb, input, opts);
        server.listen(&cfg.bind_addr())?;
        if let Some((host, port)) = &cfg.websocket {
            server.listen_websocket(&join_host_port(host, *port))?;
        }
        Ok(server)
    }

    /// Accept RFB clients on `addr` (e.g. `127.0.0.1:5901`, port 0 for any); returns the bound
    /// address.
    pub fn listen(&mut self, addr: &str) -> Result<SocketAddr> {
        self.listen_kind(addr, false)
    }

    /// Accept RFB-over-WebSocket clients (noVNC) on `addr`.
    pub fn listen_websocket(&mut self, addr: &str) -> Result<SocketAddr> {
        self.listen_kind(addr, true)
    }

    fn listen_kind(&mut self, addr: &str, ws: bool) -> Result<SocketAddr> {
        let l = TcpListener::bind(addr).map_err(|e| {
            VncError::Io(std::io::Error::new(
                e.kind(),
                format!("cannot listen on {addr}: {e} (is another VNC server on that display?)"),
            ))
        })?;
        let local = l.local_addr()?;
        let shared = self.shared.clone();
        thread::Builder::new()
            .name(format!("vnc-accept-{}", local.port()))
            .spawn(move || accept_loop(&shared, l, ws))?;
        self.listeners.push(local);
        Ok(local)
    }

    /// Addresses listened on, in the order they were added.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.listeners
    }

    /// Serve one already-connected client over a reader/writer pair (used for in-memory
    /// streams); `shutdown` must unblock both halves.
    pub fn serve(
        &self,
        reader: Box<dyn Read + Send>,
        writer: Box<dyn Write + Send>,
        shutdown: Box<dyn Fn() + Send + Sync>,
    ) {
        let shared = self.shared.clone();
        let _ = thread::Builder::new()
            .name("vnc-client".into())
            .spawn(move || session::run(shared, reader, writer, shutdown));
    }

    /// Publish the guest keyboard LED state (bit 0 scroll, 1 num, 2 caps lock).
    pub fn set_leds(&self, leds: u8) {
        if self.shared.leds.swap(leds, Ordering::SeqCst) != leds {
            self.shared.led_gen.fetch_add(1, Ordering::SeqCst);
            self.shared.wake_all();
        }
    }

    /// Write the current screen as a PNG.
    pub fn screenshot(&self, path: &std::path::Path) -> Result<()> {
        crate::screenshot::write_png(&self.shared.screen().0, path)
    }

    /// Number of clients currently connected (past the handshake).
    pub fn client_count(&self) -> usize {
        self.shared.clients().len()
    }
}

impl Drop for VncServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Unblock accept() with a throwaway connection.
        for a in &self.listeners {
            let mut a = *a;
            if a.ip().is_unspecified() {
                a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let _ = TcpStream::connect_timeout(&a, Duration::from_millis(200));
        }
        let clients: Vec<_> = self.shared.clients().drain(..).collect();
        for c in clients {
            c.close();
        }
    }
}

/// Read a whole framebuffer into a new frame.
fn read_frame(fb: &mut dyn Framebuffer) -> Frame {
    let (w, h) = fb.size();
    let mut frame = Frame::new(w, h, 0);
    if w > 0 && h > 0 {
        let mut bytes = Vec::new();
        fb.read_rect(Rect::new(0, 0, w, h), &mut bytes);
        let mut px = Vec::with_capacity(frame.pixels.len());
        to_server_pixels(&fb.pixel_format(), &bytes, &mut px);
        px.resize(frame.pixels.len(), 0);
        frame.pixels = px;
    }
    frame
}

/// Poll the framebuffer, patch the current frame with changed regions, publish on change.
fn capture_loop(shared: &Shared, fb: &Mutex<dyn Framebuffer>) {
    let mut current = (*shared.screen().0).clone();
    let mut bytes = Vec::new();
    let mut px = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        thread::sleep(shared.opts.poll_interval);
        let mut changed = false;
        let cursor;
        {
            let mut f = fb.lock().unwrap_or_else(|p| p.into_inner());
            let size = f.size();
            let dirty = f.take_dirty();
            cursor = f.take_cursor();
            if size != (current.width, current.height) || dirty == Dirty::All {
                let next = read_frame(&mut *f);
                changed = next != current;
                current = next;
            } else if let Dirty::Rects(rects) = dirty {
                let pf = f.pixel_format();
                for r in rects {
                    let r = r.intersect(&current.bounds());
                    if r.is_empty() {
                        continue;
                    }
                    bytes.clear();
                    px.clear();
                    f.read_rect(r, &mut bytes);
                    to_server_pixels(&pf, &bytes, &mut px);
                    if px.len() != r.area() {
                        log::warn!("vnc: framebuffer returned {} pixels for {r:?}", px.len());
                        continue;
                    }
                    for (i, y) in (r.y..r.y + r.h).enumerate() {
                        let src = &px[i * usize::from(r.w)..(i + 1) * usize::from(r.w)];
                        let start = usize::from(y) * usize::from(current.width) + usize::from(r.x);
                        let dst = &mut current.pixels[start..start + usize::from(r.w)];
                        if dst != src {
                            dst.copy_from_slice(src);
                            changed = true;
                        }
                    }
                }
            }
        }
        if changed || cursor.is_some() {
            {
                let mut s = shared.screen.lock().unwrap_or_else(|p| p.into_inner());
                if changed {
                    s.frame = Arc::new(current.clone());
                }
                if let Some(c) = cursor {
                    s.cursor = Some(Arc::new(c));
                }
            }
            if changed {
                shared.frame_gen.fetch_add(1, Ordering::SeqCst);
            } else {
                shared.cursor_gen.fetch_add(1, Ordering::SeqCst);
            }
            shared.wake_all();
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, l: TcpListener, ws: bool) {
    for conn in l.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log::warn!("vnc: accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let peer = stream.peer_addr().ok();
        let max = shared.opts.max_clients;
        // Half-open handshakes count too, so idle connections cannot exhaust threads.
        if shared.clients().len() >= max || shared.pending.load(Ordering::SeqCst) >= max {
            log::warn!("vnc: refusing {peer:?}: {max} clients or handshakes already");
            continue;
        }
        let guard = PendingGuard::new(shared.clone());
        let shared = shared.clone();
        let spawned = thread::Builder::new()
            .name("vnc-client".into())
            .spawn(move || {
                if let Err(e) = serve_tcp(shared, stream, ws, guard) {
                    log::info!("vnc: client {peer:?}: {e}");
                }
            });
        if spawned.is_err() {
            log::warn!("vnc: cannot start a thread for {peer:?}");
        }
    }
}

/// Counts a connection as pending until dropped (handshake done or failed).
struct PendingGuard(Arc<Shared>);

impl PendingGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared.pending.fetch_add(1, Ordering::SeqCst);
        PendingGuard(shared)
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

fn serve_tcp(shared: Arc<Shared>, stream: TcpStream, ws: bool, guard: PendingGuard) -> Result<()> {
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(shared.opts.handshake_timeout))?;
    let closer = stream.try_clone()?;
    let shutdown: Box<dyn Fn() + Send + Sync> = Box::new(move || {
        let _ = closer.shutdown(std::net::Shutdown::Both);
    });
    if let (Some(tls), false) = (shared.opts.tls.clone(), ws) {
        // VeNCrypt: negotiate in the clear, then the rest of RFB runs inside TLS.
        let (mut r, mut w) = (stream.try_clone()?, stream.try_clone()?);
        let (version, sec) = session::negotiate(&shared, &mut r, &mut w)?;
        if sec != session::SEC_VENCRYPT {
            return Err(VncError::Protocol("VeNCrypt expected".into()));
        }
        session::vencrypt(&shared, &mut r, &mut w)?;
        // The pump reads the socket for the connection's lifetime: no idle timeout there.
        stream.set_read_timeout(None)?;
        let plain = crate::tls::spawn_pump(tls, stream.try_clone()?)?;
        // Closing the plaintext side lets the pump flush what is queued (e.g. a failure
        // reason), send close_notify and then close the TCP connection.
        let plain_closer = plain.try_clone()?;
        let shutdown: Box<dyn Fn() + Send + Sync> = Box::new(move || {
            let _ = plain_closer.shutdown(std::net::Shutdown::Write);
        });
        session::run_negotiated(
            shared,
            Box::new(plain.try_clone()?),
            Box::new(plain),
            shutdown,
            move || drop(guard),
            Some(version),
        );
        return Ok(());
    }
    let (reader, writer): (Box<dyn Read + Send>, Box<dyn Write + Send>) = if ws {
        let mut s = stream.try_clone()?;
        websocket::accept(&mut s)?;
        (
            Box::new(websocket::WsReader::new(stream.try_clone()?)),
            Box::new(websocket::WsWriter::new(stream.try_clone()?)),
        )
    } else {
        (Box::new(stream.try_clone()?), Box::new(stream.try_clone()?))
    };
    let timeout_clear = stream;
    session::run_with_hook(shared, reader, writer, shutdown, move || {
        let _ = timeout_clear.set_read_timeout(None);
        drop(guard);
    });
    Ok(())
}
