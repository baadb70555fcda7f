//! One client connection: handshake (version, security, init), then a reader loop that applies
//! client messages and a writer thread that sends framebuffer updates when asked.

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use crate::auth::{challenge, constant_time_eq, vnc_response};
use crate::encode::diff::changed_rects;
use crate::encode::{Encoder, Frame};
use crate::framebuffer::{Cursor, Rect};
use crate::pixel::{Converter, PixelFormat};
use crate::proto::{enc, put_rect_header, qemu_keycode_to_xt, read_client_message, ClientMessage};
use crate::server::{ClientHandle, Shared};
use crate::{proto_err, Result, VncError};

/// RFB protocol minor version agreed with a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// RFB 3.3.
    V3_3,
    /// RFB 3.7.
    V3_7,
    /// RFB 3.8.
    V3_8,
}

/// Parse a ProtocolVersion message; other 3.x minors fall back as RFC 6143 §7.1.1 suggests.
pub fn parse_version(b: &[u8; 12]) -> Result<Version> {
    let s =
        std::str::from_utf8(b).map_err(|_| VncError::Protocol("version is not ASCII".into()))?;
    let rest = s
        .strip_prefix("RFB ")
        .and_then(|r| r.strip_suffix('\n'))
        .ok_or_else(|| VncError::Protocol(format!("bad version string {s:?}")))?;
    let (maj, min) = rest
        .split_once('.')
        .ok_or_else(|| VncError::Protocol(format!("bad version string {s:?}")))?;
    let (maj, min): (u32, u32) = match (maj.parse(), min.parse()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return proto_err(format!("bad version string {s:?}")),
    };
    match (maj, min) {
        (3, 8..) => Ok(Version::V3_8),
        (3, 7) => Ok(Version::V3_7),
        (3, _) => Ok(Version::V3_3),
        _ => proto_err(format!("unsupported protocol version {maj}.{min}")),
    }
}

/// What the reader thread tells the writer.
pub(crate) struct ClientState {
    pub closed: bool,
    pub pf: PixelFormat,
    pub pf_changed: bool,
    pub encodings: Vec<i32>,
    pub request: Option<(bool, Rect)>,
    pub ext_key_ack: bool,
    /// A SetDesktopSize to refuse (the guest decides the mode).
    pub refuse_resize: bool,
    pub send_leds: bool,
    pub send_cursor: bool,
    /// Region of continuous updates, when the client enabled them.
    pub continuous: Option<Rect>,
    /// Non-update messages for the writer to send (fence replies, EndOfContinuousUpdates).
    pub out_msgs: Vec<Vec<u8>>,
}

impl ClientState {
    fn new() -> Self {
        ClientState {
            closed: false,
            pf: PixelFormat::XRGB8888,
            pf_changed: false,
            encodings: vec![enc::RAW],
            request: None,
            ext_key_ack: false,
            refuse_resize: false,
            send_leds: false,
            send_cursor: false,
            continuous: None,
            out_msgs: Vec::new(),
        }
    }

    fn supports(&self, e: i32) -> bool {
        self.encodings.contains(&e)
    }
}

fn send_reason(w: &mut impl Write, reason: &str) -> Result<()> {
    w.write_all(&(reason.len() as u32).to_be_bytes())?;
    w.write_all(reason.as_bytes())?;
    w.flush()?;
    Ok(())
}

/// Security type: None.
pub const SEC_NONE: u8 = 1;
/// Security type: VNC Authentication.
pub const SEC_VNC: u8 = 2;
/// Security type: VeNCrypt.
pub const SEC_VENCRYPT: u8 = 19;
/// VeNCrypt subtype: TLS with an X.509 certificate, no further authentication.
pub const VENCRYPT_X509_NONE: u32 = 260;
/// VeNCrypt subtype: TLS with an X.509 certificate, then VNC Authentication.
pub const VENCRYPT_X509_VNC: u32 = 261;

const LOCKED: &str = "too many authentication failures; try again in a minute";

/// Version exchange and choice of security type; returns the version and the type.
pub(crate) fn negotiate(
    shared: &Shared,
    r: &mut impl Read,
    w: &mut impl Write,
) -> Result<(Version, u8)> {
    w.write_all(b"RFB 003.008\n")?;
    w.flush()?;
    let mut v = [0u8; 12];
    r.read_exact(&mut v)?;
    let version = parse_version(&v)?;
    let sec_type = if shared.opts.tls.is_some() {
        SEC_VENCRYPT
    } else if shared.opts.password.is_some() {
        SEC_VNC
    } else {
        SEC_NONE
    };
    let locked = shared.opts.password.is_some() && !shared.limiter.allowed();
    let refusal = if locked {
        Some(LOCKED)
    } else if sec_type == SEC_VENCRYPT && version == Version::V3_3 {
        Some("this server requires VeNCrypt (TLS), which needs an RFB 3.7 or newer client")
    } else {
        None
    };
    if version == Version::V3_3 {
        if let Some(reason) = refusal {
            w.write_all(&0u32.to_be_bytes())?;
            send_reason(w, reason)?;
            return Err(VncError::AuthFailed(reason.into()));
        }
        w.write_all(&u32::from(sec_type).to_be_bytes())?;
        w.flush()?;
    } else {
        if let Some(reason) = refusal {
            w.write_all(&[0])?;
            send_reason(w, reason)?;
            return Err(VncError::AuthFailed(reason.into()));
        }
        w.write_all(&[1, sec_type])?;
        w.flush()?;
        let mut chosen = [0u8; 1];
        r.read_exact(&mut chosen)?;
        if chosen[0] != sec_type {
            if version == Version::V3_8 {
                w.write_all(&1u32.to_be_bytes())?;
                send_reason(w, "security type not offered")?;
            }
            return proto_err(format!("client chose security type {}", chosen[0]));
        }
    }
    Ok((version, sec_type))
}

/// VeNCrypt 0.2 sub-negotiation before TLS starts: offers X509Vnc when a password is set,
/// else X509None.
pub(crate) fn vencrypt(shared: &Shared, r: &mut impl Read, w: &mut impl Write) -> Result<()> {
    w.write_all(&[0, 2])?;
    w.flush()?;
    let mut v = [0u8; 2];
    r.read_exact(&mut v)?;
    if v != [0, 2] {
        w.write_all(&[0xff])?;
        return proto_err(format!("VeNCrypt version {}.{} not supported", v[0], v[1]));
    }
    let sub = if shared.opts.password.is_some() {
        VENCRYPT_X509_VNC
    } else {
        VENCRYPT_X509_NONE
    };
    let mut m = vec![0u8, 1];
    m.extend_from_slice(&sub.to_be_bytes());
    w.write_all(&m)?;
    w.flush()?;
    let mut chosen = [0u8; 4];
    r.read_exact(&mut chosen)?;
    if u32::from_be_bytes(chosen) != sub {
        w.write_all(&[0])?;
        return proto_err(format!(
            "client chose VeNCrypt subtype {}",
            u32::from_be_bytes(chosen)
        ));
    }
    w.write_all(&[1])?;
    w.flush()?;
    Ok(())
}

/// After the security type (and TLS, for VeNCrypt): VNC Authentication when a password is
/// set, SecurityResult, then ClientInit/ServerInit; returns the client's shared flag.
pub(crate) fn finish_handshake(
    shared: &Shared,
    r: &mut impl Read,
    w: &mut impl Write,
    version: Version,
) -> Result<bool> {
    if let Some(pw) = &shared.opts.password {
        let ch = challenge()?;
        w.write_all(&ch)?;
        w.flush()?;
        let mut resp = [0u8; 16];
        r.read_exact(&mut resp)?;
        if !constant_time_eq(&resp, &vnc_response(pw, &ch)) {
            shared.limiter.failed();
            w.write_all(&1u32.to_be_bytes())?;
            if version == Version::V3_8 {
                send_reason(w, "authentication failed: wrong password")?;
            }
            w.flush()?;
            return Err(VncError::AuthFailed("wrong password".into()));
        }
        shared.limiter.succeeded();
        w.write_all(&0u32.to_be_bytes())?;
    } else if version == Version::V3_8 {
        w.write_all(&0u32.to_be_bytes())?;
    }
    w.flush()?;
    let mut flag = [0u8; 1];
    r.read_exact(&mut flag)?;
    let (frame, _) = shared.screen();
    let mut init = Vec::with_capacity(32 + shared.opts.name.len());
    init.extend_from_slice(&frame.width.to_be_bytes());
    init.extend_from_slice(&frame.height.to_be_bytes());
    init.extend_from_slice(&PixelFormat::XRGB8888.to_bytes());
    init.extend_from_slice(&(shared.opts.name.len() as u32).to_be_bytes());
    init.extend_from_slice(shared.opts.name.as_bytes());
    w.write_all(&init)?;
    w.flush()?;
    Ok(flag[0] != 0)
}

/// Run the whole handshake on one stream pair (no TLS); returns the shared flag.
pub(crate) fn handshake(shared: &Shared, r: &mut impl Read, w: &mut impl Write) -> Result<bool> {
    let (version, sec) = negotiate(shared, r, w)?;
    if sec == SEC_VENCRYPT {
        return proto_err("VeNCrypt is only available on TCP listeners");
    }
    finish_handshake(shared, r, w, version)
}

/// Serve one client to the end of its connection.
pub(crate) fn run(
    shared: Arc<Shared>,
    reader: Box<dyn Read + Send>,
    writer: Box<dyn Write + Send>,
    shutdown: Box<dyn Fn() + Send + Sync>,
) {
    run_with_hook(shared, reader, writer, shutdown, || {})
}

/// As [`run`], calling `after_handshake` once the client is in (to lift handshake timeouts).
pub(crate) fn run_with_hook(
    shared: Arc<Shared>,
    reader: Box<dyn Read + Send>,
    writer: Box<dyn Write + Send>,
    shutdown: Box<dyn Fn() + Send + Sync>,
    after_handshake: impl FnOnce(),
) {
    run_negotiated(shared, reader, writer, shutdown, after_handshake, None)
}

/// As [`run_with_hook`]; with `negotiated`, the version and security type were already
/// settled on the raw connection (VeNCrypt) and the handshake continues from there.
pub(crate) fn run_negotiated(
    shared: Arc<Shared>,
    mut reader: Box<dyn Read + Send>,
    mut writer: Box<dyn Write + Send>,
    shutdown: Box<dyn Fn() + Send + Sync>,
    after_handshake: impl FnOnce(),
    negotiated: Option<Version>,
) {
    let result = match negotiated {
        None => handshake(&shared, &mut reader, &mut writer),
        Some(v) => finish_handshake(&shared, &mut reader, &mut writer, v),
    };
    let shared_flag = match result {
        Ok(f) => f,
        Err(e) => {
            log::info!("vnc: handshake failed: {e}");
            shutdown();
            return;
        }
    };
    after_handshake();
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let handle = Arc::new(ClientHandle {
        id,
        state: Mutex::new(ClientState::new()),
        wake: Condvar::new(),
        shutdown,
    });
    {
        let mut clients = shared.clients();
        if !shared_flag {
            // An exclusive client takes the screen from everyone else (RFC 6143 §7.3.1).
            for other in clients.drain(..) {
                log::info!(
                    "vnc: client {id} connected exclusively; dropping client {}",
                    other.id
                );
                other.close();
            }
        }
        clients.push(handle.clone());
    }
    log::info!("vnc: client {id} connected (shared={shared_flag})");
    let s2 = shared.clone();
    let h2 = handle.clone();
    let writer_thread = thread::Builder::new()
        .name(format!("vnc-writer-{id}"))
        .spawn(move || {
            if let Err(e) = writer_loop(&s2, &h2, &mut writer) {
                log::info!("vnc: client {}: send failed: {e}", h2.id);
            }
            h2.close();
        });
    if let Err(e) = reader_loop(&shared, &handle, &mut reader) {
        log::info!("vnc: client {id}: {e}");
    }
    handle.close();
    if let Ok(t) = writer_thread {
        let _ = t.join();
    }
    shared.clients().retain(|c| c.id != id);
    log::info!("vnc: client {id} disconnected");
}

fn reader_loop(shared: &Shared, h: &ClientHandle, r: &mut impl Read) -> Result<()> {
    loop {
        let msg = read_client_message(r)?;
        match msg {
            ClientMessage::SetPixelFormat(pf) => {
                let mut st = h.lock();
                st.pf = pf;
                st.pf_changed = true;
                if !pf.true_colour {
                    st.out_msgs.push(crate::pixel::colour_map_message());
                    h.wake.notify_all();
                }
            }
            ClientMessage::SetEncodings(list) => {
                let mut st = h.lock();
                st.ext_key_ack |= list.contains(&enc::QEMU_EXTENDED_KEY_EVENT)
                    && !st.supports(enc::QEMU_EXTENDED_KEY_EVENT);
                st.send_leds |= list.contains(&enc::QEMU_LED_STATE);
                if list.contains(&enc::CONTINUOUS_UPDATES) && !st.supports(enc::CONTINUOUS_UPDATES)
                {
                    // EndOfContinuousUpdates announces that the server supports them.
                    st.out_msgs.push(vec![150]);
                }
                if list.contains(&enc::FENCE) && !st.supports(enc::FENCE) {
                    // A first fence tells the client fences work here.
                    st.out_msgs.push(fence_message(FENCE_REQUEST, &[]));
                }
                st.send_cursor |= list.contains(&enc::CURSOR);
                st.encodings = list;
                h.wake.notify_all();
            }
            ClientMessage::UpdateRequest { incremental, rect } => {
                let mut st = h.lock();
                // A pending full request stays full.
                let incremental = incremental && st.request.is_none_or(|(i, _)| i);
                st.request = Some((incremental, rect));
                h.wake.notify_all();
            }
            ClientMessage::Key { down, keysym } => shared.input.key(down, keysym, None),
            ClientMessage::ExtendedKey {
                down,
                keysym,
                keycode,
            } => shared.input.key(down, keysym, qemu_keycode_to_xt(keycode)),
            ClientMessage::Pointer { buttons, x, y } => {
                let (frame, _) = shared.screen();
                let (w, hgt) = (frame.width, frame.height);
                shared.input.pointer(
                    x.min(w.saturating_sub(1)),
                    y.min(hgt.saturating_sub(1)),
                    buttons,
                    w,
                    hgt,
                );
            }
            ClientMessage::CutText(_) => {}
            ClientMessage::EnableContinuousUpdates { enable, rect } => {
                let mut st = h.lock();
                if enable {
                    st.continuous = Some(rect);
                } else if st.continuous.take().is_some() {
                    st.out_msgs.push(vec![150]);
                }
                h.wake.notify_all();
            }
            ClientMessage::Fence { flags, payload } => {
                if flags & FENCE_REQUEST != 0 {
                    // Every earlier message is already handled: answer with the flags we
                    // honour and the same payload.
                    let mut st = h.lock();
                    st.out_msgs
                        .push(fence_message(flags & FENCE_SUPPORTED, &payload));
                    h.wake.notify_all();
                }
            }
            ClientMessage::SetDesktopSize { width, height } => {
                log::info!(
                    "vnc: client {} asked for {width}x{height}; the guest sets the mode",
                    h.id
                );
                let mut st = h.lock();
                st.refuse_resize = true;
                h.wake.notify_all();
            }
        }
    }
}

/// Order in which encodings are considered when the client lists several.
fn pick_encoding(list: &[i32]) -> i32 {
    list.iter()
        .copied()
        .find(|e| matches!(*e, enc::RAW | enc::HEXTILE | enc::ZRLE | enc::TIGHT))
        .unwrap_or(enc::RAW)
}

/// What the client currently has on screen.
struct Sent {
    frame: Option<Frame>,
    size: (u16, u16),
    frame_gen: u64,
    cursor_gen: u64,
    led_gen: u64,
}

fn writer_loop(shared: &Shared, h: &ClientHandle, w: &mut impl Write) -> Result<()> {
    let (first, _) = shared.screen();
    let mut sent = Sent {
        frame: None,
        size: (first.width, first.height),
        frame_gen: 0,
        cursor_gen: u64::MAX,
        led_gen: u64::MAX,
    };
    let mut encoder = Encoder::new(Converter::new(PixelFormat::XRGB8888));
    let mut msg = Vec::new();
    let mut refuse_resize;
    let mut from_request;
    loop {
        let (incremental, region, encodings, ext_ack, leds, cursor) = {
            let mut st = h.lock();
            loop {
                if st.closed {
                    return Ok(());
                }
                if !st.out_msgs.is_empty() {
                    break;
                }
                if let Some((incr, _)) = st.request.or(st.continuous.map(|r| (true, r))) {
                    let fresh = shared.frame_gen.load(Ordering::SeqCst) != sent.frame_gen;
                    let cursor = st.send_cursor
                        && shared.cursor_gen.load(Ordering::SeqCst) != sent.cursor_gen;
                    let leds =
                        st.send_leds && shared.led_gen.load(Ordering::SeqCst) != sent.led_gen;
                    if !incr
                        || fresh
                        || st.pf_changed
                        || st.ext_key_ack
                        || st.refuse_resize
                        || leds
                        || cursor
                    {
                        break;
                    }
                }
                st = h
                    .wake
                    .wait_timeout(st, Duration::from_secs(1))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            if st.pf_changed {
                st.pf_changed = false;
                encoder = Encoder::new(Converter::new(st.pf));
                sent.frame = None;
            }
            let out_msgs = std::mem::take(&mut st.out_msgs);
            if !out_msgs.is_empty() {
                drop(st);
                for m in out_msgs {
                    w.write_all(&m)?;
                }
                w.flush()?;
                continue;
            }
            from_request = st.request.is_some();
            let Some((incremental, region)) =
                st.request.take().or(st.continuous.map(|r| (true, r)))
            else {
                continue;
            };
            let ext = std::mem::take(&mut st.ext_key_ack);
            refuse_resize = std::mem::take(&mut st.refuse_resize);
            (
                incremental,
                region,
                st.encodings.clone(),
                ext,
                st.send_leds,
                st.send_cursor,
            )
        };
        if let Some(level) = encodings
            .iter()
            .find(|e| (enc::COMPRESS_LEVEL_0..=enc::COMPRESS_LEVEL_0 + 9).contains(*e))
        {
            encoder.compress_level = (level - enc::COMPRESS_LEVEL_0) as u32;
        }
        encoder.jpeg_quality = encodings
            .iter()
            .find(|e| (enc::JPEG_QUALITY_0..=enc::JPEG_QUALITY_0 + 9).contains(*e))
            .filter(|_| shared.opts.lossy)
            .map(|q| (q - enc::JPEG_QUALITY_0) as u8);
        let frame_gen = shared.frame_gen.load(Ordering::SeqCst);
        let (frame, cursor_shape) = shared.screen();
        msg.clear();
        msg.extend_from_slice(&[0, 0, 0, 0]);
        let mut count: u16 = 0;

        if ext_ack {
            put_rect_header(&mut msg, Rect::default(), enc::QEMU_EXTENDED_KEY_EVENT);
            count += 1;
        }
        if refuse_resize && encodings.contains(&enc::EXTENDED_DESKTOP_SIZE) {
            // Reason 1 (client request), status 1 (resize prohibited), current layout.
            put_rect_header(
                &mut msg,
                Rect::new(1, 1, frame.width, frame.height),
                enc::EXTENDED_DESKTOP_SIZE,
            );
            put_screen_layout(&mut msg, (frame.width, frame.height));
            count += 1;
        }
        let led_gen = shared.led_gen.load(Ordering::SeqCst);
        if leds && led_gen != sent.led_gen {
            put_rect_header(&mut msg, Rect::default(), enc::QEMU_LED_STATE);
            msg.push(shared.leds.load(Ordering::SeqCst));
            count += 1;
            sent.led_gen = led_gen;
        }
        let cursor_gen = shared.cursor_gen.load(Ordering::SeqCst);
        if cursor && cursor_gen != sent.cursor_gen {
            if let Some(c) = cursor_shape.as_deref() {
                if put_cursor(&encoder.conv, c, &mut msg) {
                    count += 1;
                }
            }
            sent.cursor_gen = cursor_gen;
        }

        let size = (frame.width, frame.height);
        let mut bounds = frame.bounds();
        if size != sent.size {
            let ext = encodings.contains(&enc::EXTENDED_DESKTOP_SIZE);
            if ext || encodings.contains(&enc::DESKTOP_SIZE) {
                put_resize(&mut msg, size, ext);
                count += 1;
                sent.size = size;
                sent.frame = None;
            } else {
                // The client cannot follow: keep serving the part it knows about.
                bounds = bounds.intersect(&Rect::new(0, 0, sent.size.0, sent.size.1));
            }
        }
        let mut region = region.intersect(&bounds);
        if sent.frame.is_none() && sent.size == size {
            // After a resize (or format change) the client needs the whole new screen.
            region = frame.bounds();
        }
        let rects = match (&sent.frame, incremental) {
            (Some(old), true) if (old.width, old.height) == size => {
                changed_rects(old, &frame, region)
            }
            _ if region.is_empty() => Vec::new(),
            _ => vec![region],
        };
        // Many scattered changes cost more as rectangles than as one box (and the update's
        // rectangle count is 16 bits).
        let rects = if rects.len() > MAX_RECTS {
            vec![bounding_box(&rects)]
        } else {
            rects
        };
        let encoding = pick_encoding(&encodings);
        let use_copy = encodings.contains(&enc::COPY_RECT);
        for r in &rects {
            if let (true, Some(old)) = (use_copy, &sent.frame) {
                if let Some((src_y, dst)) = crate::encode::scroll::find_scroll(old, &frame, *r) {
                    put_rect_header(&mut msg, dst, enc::COPY_RECT);
                    msg.extend_from_slice(&dst.x.to_be_bytes());
                    msg.extend_from_slice(&src_y.to_be_bytes());
                    count = count.saturating_add(1);
                    for rest in crate::encode::scroll::remainder(*r, dst) {
                        count =
                            count.saturating_add(encoder.encode(encoding, &frame, rest, &mut msg));
                    }
                    continue;
                }
            }
            count = count.saturating_add(encoder.encode(encoding, &frame, *r, &mut msg));
        }
        if count == 0 && incremental {
            // Woken without anything to show: keep the request for the next change.
            sent.frame_gen = frame_gen;
            let mut st = h.lock();
            if from_request && st.request.is_none() {
                st.request = Some((true, region));
            }
            continue;
        }
        msg[2..4].copy_from_slice(&count.to_be_bytes());
        w.write_all(&msg)?;
        w.flush()?;
        match &mut sent.frame {
            Some(old) if (old.width, old.height) == size => {
                for r in &rects {
                    old.copy_rect_from(&frame, *r);
                }
            }
            _ => {
                // Only a complete frame can serve as the comparison base.
                if region == frame.bounds() {
                    sent.frame = Some((*frame).clone());
                }
            }
        }
        sent.frame_gen = frame_gen;
    }
}

fn put_resize(msg: &mut Vec<u8>, (w, h): (u16, u16), extended: bool) {
    if extended {
        put_rect_header(msg, Rect::new(0, 0, w, h), enc::EXTENDED_DESKTOP_SIZE);
        put_screen_layout(msg, (w, h));
    } else {
        put_rect_header(msg, Rect::new(0, 0, w, h), enc::DESKTOP_SIZE);
    }
}

/// Most changed rectangles sent separately in one update.
const MAX_RECTS: usize = 1024;

fn bounding_box(rects: &[Rect]) -> Rect {
    let x0 = rects.iter().map(|r| r.x).min().unwrap_or(0);
    let y0 = rects.iter().map(|r| r.y).min().unwrap_or(0);
    let x1 = rects
        .iter()
        .map(|r| u32::from(r.x) + u32::from(r.w))
        .max()
        .unwrap_or(0);
    let y1 = rects
        .iter()
        .map(|r| u32::from(r.y) + u32::from(r.h))
        .max()
        .unwrap_or(0);
    Rect::new(
        x0,
        y0,
        (x1 - u32::from(x0)) as u16,
        (y1 - u32::from(y0)) as u16,
    )
}

/// Fence flag: the other side must answer.
pub const FENCE_REQUEST: u32 = 1 << 31;
/// Fence flags this server honours (BlockBefore, BlockAfter, SyncNext) — trivially, since it
/// answers in message order.
pub const FENCE_SUPPORTED: u32 = 0b111;

/// A server Fence message.
fn fence_message(flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![248, 0, 0, 0];
    m.extend_from_slice(&flags.to_be_bytes());
    m.push(payload.len() as u8);
    m.extend_from_slice(payload);
    m
}

/// One screen covering the framebuffer.
fn put_screen_layout(msg: &mut Vec<u8>, (w, h): (u16, u16)) {
    msg.extend_from_slice(&[1, 0, 0, 0]);
    msg.extend_from_slice(&0u32.to_be_bytes());
    put_rect_bounds(msg, Rect::new(0, 0, w, h));
    msg.extend_from_slice(&0u32.to_be_bytes());
}

fn put_rect_bounds(msg: &mut Vec<u8>, r: Rect) {
    for v in [r.x, r.y, r.w, r.h] {
        msg.extend_from_slice(&v.to_be_bytes());
    }
}

fn put_cursor(conv: &Converter, c: &Cursor, msg: &mut Vec<u8>) -> bool {
    let n = usize::from(c.width) * usize::from(c.height);
    let mask_len = usize::from(c.width).div_ceil(8) * usize::from(c.height);
    if c.pixels.len() != n || c.mask.len() != mask_len {
        log::warn!("vnc: ignoring malformed cursor {}x{}", c.width, c.height);
        return false;
    }
    put_rect_header(
        msg,
        Rect::new(c.hot_x, c.hot_y, c.width, c.height),
        enc::CURSOR,
    );
    for &p in &c.pixels {
        conv.put(p, msg);
    }
    msg.extend_from_slice(&c.mask);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version(b"RFB 003.008\n").unwrap(), Version::V3_8);
        assert_eq!(parse_version(b"RFB 003.007\n").unwrap(), Version::V3_7);
        assert_eq!(parse_version(b"RFB 003.003\n").unwrap(), Version::V3_3);
        assert_eq!(parse_version(b"RFB 003.005\n").unwrap(), Version::V3_3);
        assert_eq!(parse_version(b"RFB 003.889\n").unwrap(), Version::V3_8);
        assert!(parse_version(b"RFB 004.000\n").is_err());
        assert!(parse_version(b"GET / HTTP/1").is_err());
    }
}
