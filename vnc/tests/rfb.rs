//! The RFB server end to end over in-memory socket pairs, checked with the reference decoder
//! in `vnc::client`.

mod pki;

use pki::test_pki;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vnc::client::RfbClient;
use vnc::encode::Frame;
use vnc::pixel::{Converter, PixelFormat};
use vnc::proto::enc;
use vnc::{Dirty, Framebuffer, InputSink, Rect, VncServer, VncServerOptions};

/// A framebuffer the test paints directly.
struct Screen {
    frame: Frame,
    dirty: Dirty,
    cursor: Option<vnc::Cursor>,
}

impl Framebuffer for Screen {
    fn size(&self) -> (u16, u16) {
        (self.frame.width, self.frame.height)
    }
    fn pixel_format(&self) -> PixelFormat {
        PixelFormat::XRGB8888
    }
    fn read_rect(&mut self, r: Rect, out: &mut Vec<u8>) {
        for y in r.y..r.y + r.h {
            for p in self.frame.row(r.x, y, r.w) {
                out.extend_from_slice(&p.to_le_bytes());
            }
        }
    }
    fn take_dirty(&mut self) -> Dirty {
        std::mem::replace(&mut self.dirty, Dirty::None)
    }
    fn take_cursor(&mut self) -> Option<vnc::Cursor> {
        self.cursor.take()
    }
}

#[derive(Default)]
struct Events(Mutex<Vec<String>>);

impl InputSink for Events {
    fn key(&self, down: bool, keysym: u32, xt: Option<u16>) {
        self.0
            .lock()
            .unwrap()
            .push(format!("key {down} {keysym:#x} {xt:?}"));
    }
    fn pointer(&self, x: u16, y: u16, buttons: u8, w: u16, h: u16) {
        self.0
            .lock()
            .unwrap()
            .push(format!("ptr {x} {y} {buttons} {w}x{h}"));
    }
}

/// Photo-like content mixed with flat areas, text-like stripes and gradients, so every
/// sub-encoding gets used.
fn pattern(w: u16, h: u16) -> Frame {
    let mut f = Frame::new(w, h, 0x202020);
    for y in 0..h {
        for x in 0..w {
            let i = usize::from(y) * usize::from(w) + usize::from(x);
            let (xu, yu) = (u32::from(x), u32::from(y));
            f.pixels[i] = match (x / 40, y / 30) {
                (0, _) => 0x00ff_0000,
                (1, _) => ((xu * 3) << 16) | (((yu * 2) & 0xff) << 8) | 0x40,
                (2, _) if (x + y) % 7 < 2 => 0x00ff_ffff,
                (3, _) => xu.wrapping_mul(2654435761) ^ yu.wrapping_mul(40503),
                (4, _) => {
                    [0x000000, 0x0000ff, 0x00ff00, 0xffff00, 0x808080][(xu * yu % 5) as usize]
                }
                _ => 0x00_10_20_30,
            } & 0xffffff;
        }
    }
    f
}

struct Rig {
    server: VncServer,
    screen: Arc<Mutex<Screen>>,
    events: Arc<Events>,
}

fn rig(w: u16, h: u16, password: Option<&[u8]>) -> Rig {
    rig_with(w, h, password, false)
}

fn rig_with(w: u16, h: u16, password: Option<&[u8]>, lossy: bool) -> Rig {
    let screen = Arc::new(Mutex::new(Screen {
        frame: pattern(w, h),
        dirty: Dirty::None,
        cursor: None,
    }));
    let events = Arc::new(Events::default());
    let server = VncServer::new(
        screen.clone(),
        events.clone(),
        VncServerOptions {
            password: password.map(|p| p.to_vec()),
            poll_interval: Duration::from_millis(5),
            auth_failure_delay: Duration::from_millis(1),
            auth_max_failures: 3,
            lossy,
            ..Default::default()
        },
    );
    Rig {
        server,
        screen,
        events,
    }
}

impl Rig {
    fn connect_raw(&self) -> UnixStream {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let closer = b.try_clone().unwrap();
        self.server.serve(
            Box::new(b.try_clone().unwrap()),
            Box::new(b),
            Box::new(move || {
                let _ = closer.shutdown(std::net::Shutdown::Both);
            }),
        );
        a
    }

    fn connect(&self, password: Option<&[u8]>, shared: bool) -> RfbClient<UnixStream> {
        RfbClient::connect(self.connect_raw(), password, shared).unwrap()
    }

    fn paint(&self, r: Rect, c: u32) {
        let mut s = self.screen.lock().unwrap();
        for y in r.y..r.y + r.h {
            for x in r.x..r.x + r.w {
                let w = s.frame.width;
                s.frame.pixels[usize::from(y) * usize::from(w) + usize::from(x)] = c;
            }
        }
        s.dirty = Dirty::Rects(vec![r]);
    }

    fn expected(&self, pf: PixelFormat) -> Vec<u32> {
        let conv = Converter::new(pf);
        let s = self.screen.lock().unwrap();
        s.frame.pixels.iter().map(|&p| conv.quantise(p)).collect()
    }
}

/// Compare a decoded screen with the expected pixels without printing megabytes.
#[track_caller]
fn assert_screen(got: &[u32], want: &[u32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: size");
    let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
    assert!(
        bad.is_empty(),
        "{what}: {} pixels differ, first at {} ({:#x} vs {:#x})",
        bad.len(),
        bad[0],
        got[bad[0]],
        want[bad[0]]
    );
}

fn formats() -> Vec<PixelFormat> {
    let novnc = PixelFormat {
        red_shift: 0,
        blue_shift: 16,
        ..PixelFormat::XRGB8888
    };
    let be_high = PixelFormat {
        big_endian: true,
        red_shift: 24,
        green_shift: 16,
        blue_shift: 8,
        ..PixelFormat::XRGB8888
    };
    let be565 = PixelFormat {
        big_endian: true,
        ..PixelFormat::RGB565
    };
    vec![
        PixelFormat::XRGB8888,
        novnc,
        be_high,
        PixelFormat::RGB565,
        be565,
        PixelFormat::BGR233,
    ]
}

#[test]
fn every_encoding_and_format_decodes_to_the_screen() {
    let rig = rig(237, 101, None);
    for encoding in [enc::RAW, enc::HEXTILE, enc::ZRLE, enc::TIGHT] {
        for pf in formats() {
            let mut c = rig.connect(None, true);
            c.set_pixel_format(pf).unwrap();
            c.set_encodings(&[encoding]).unwrap();
            c.request(false).unwrap();
            let info = c.read_update().unwrap();
            assert!(
                info.rects.iter().all(|(_, e)| *e == encoding),
                "{encoding}: {:?}",
                info.rects
            );
            assert_screen(
                &c.screen.pixels,
                &rig.expected(pf),
                &format!("encoding {encoding} format {pf:?}"),
            );
            // An incremental update after a change carries only the changed area, and the
            // per-client zlib streams keep working across updates.
            rig.paint(Rect::new(50, 40, 30, 20), 0x00ab_cdef);
            c.request(true).unwrap();
            let info = c.read_update().unwrap();
            let area: usize = info.rects.iter().map(|(r, _)| r.area()).sum();
            assert_eq!(info.rects, vec![(Rect::new(50, 40, 30, 20), encoding)]);
            assert!(area > 0);
            assert_screen(
                &c.screen.pixels,
                &rig.expected(pf),
                &format!("encoding {encoding} format {pf:?}"),
            );
            rig.paint(Rect::new(50, 40, 30, 20), pattern(237, 101).pixels[0]);
            c.request(true).unwrap();
            c.read_update().unwrap();
            assert_screen(&c.screen.pixels, &rig.expected(pf), "restored");
        }
    }
}

#[test]
fn compressed_encodings_beat_raw_on_a_full_screen() {
    let rig = rig(320, 200, None);
    let mut sizes = Vec::new();
    for encoding in [enc::RAW, enc::HEXTILE, enc::ZRLE, enc::TIGHT] {
        let mut c = rig.connect(None, true);
        c.set_encodings(&[encoding]).unwrap();
        c.request(false).unwrap();
        sizes.push(c.read_update().unwrap().bytes);
    }
    assert!(sizes[0] >= 320 * 200 * 4, "{sizes:?}");
    assert!(
        sizes[1] < sizes[0] && sizes[2] < sizes[1] && sizes[3] < sizes[1],
        "{sizes:?}"
    );
}

#[test]
fn a_small_change_sends_one_tile() {
    let rig = rig(64, 64, None);
    let mut c = rig.connect(None, true);
    c.set_encodings(&[enc::ZRLE]).unwrap();
    c.request(false).unwrap();
    c.read_update().unwrap();
    c.request(true).unwrap();
    rig.paint(Rect::new(1, 1, 2, 2), 0x00ff00);
    let info = c.read_update().unwrap();
    assert_eq!(info.rects, vec![(Rect::new(1, 1, 2, 2), enc::ZRLE)]);
    assert_screen(
        &c.screen.pixels,
        &rig.expected(PixelFormat::XRGB8888),
        "screen",
    );
}

/// Whether `s` has bytes waiting (they are consumed; only used where none are allowed).
fn c_stream_has_data(s: &mut UnixStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let r = matches!(s.read(&mut b), Ok(n) if n > 0);
    s.set_nonblocking(false).unwrap();
    r
}

#[test]
fn no_update_while_idle() {
    let rig = rig(64, 64, None);
    let raw = rig.connect_raw();
    let peek = raw.try_clone().unwrap();
    let mut c = RfbClient::connect(raw, None, true).unwrap();
    c.request(false).unwrap();
    c.read_update().unwrap();
    c.request(true).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut peek = peek;
    assert!(
        !c_stream_has_data(&mut peek),
        "idle screen produced traffic"
    );
    // A dirty hint without a real change sends nothing either.
    rig.screen.lock().unwrap().dirty = Dirty::All;
    std::thread::sleep(Duration::from_millis(100));
    assert!(!c_stream_has_data(&mut peek));
    rig.paint(Rect::new(40, 40, 1, 1), 0xffffff);
    c.read_update().unwrap();
    assert_screen(
        &c.screen.pixels,
        &rig.expected(PixelFormat::XRGB8888),
        "screen",
    );
}

#[test]
fn resize_is_announced_and_resent() {
    let rig = rig(100, 80, None);
    let mut c = rig.connect(None, true);
    c.set_encodings(&[enc::ZRLE, enc::EXTENDED_DESKTOP_SIZE, enc::DESKTOP_SIZE])
        .unwrap();
    c.request(false).unwrap();
    c.read_update().unwrap();
    {
        let mut s = rig.screen.lock().unwrap();
        s.frame = pattern(160, 90);
    }
    c.request(true).unwrap();
    let info = c.read_update().unwrap();
    assert_eq!(
        info.rects[0],
        (Rect::new(0, 0, 160, 90), enc::EXTENDED_DESKTOP_SIZE)
    );
    assert_eq!((c.screen.width, c.screen.height), (160, 90));
    assert_screen(
        &c.screen.pixels,
        &rig.expected(PixelFormat::XRGB8888),
        "screen",
    );
}

#[test]
fn scrolling_uses_copyrect() {
    let rig = rig(200, 120, None);
    let mut c = rig.connect(None, true);
    c.set_encodings(&[enc::ZRLE, enc::COPY_RECT]).unwrap();
    c.request(false).unwrap();
    c.read_update().unwrap();
    {
        let mut s = rig.screen.lock().unwrap();
        let w = 200usize;
        s.frame.pixels.copy_within(16 * w.., 0);
        let n = s.frame.pixels.len();
        s.frame.pixels[n - 16 * w..].fill(0x000080);
        s.dirty = Dirty::All;
    }
    c.request(true).unwrap();
    let info = c.read_update().unwrap();
    assert!(
        info.rects.iter().any(|(_, e)| *e == enc::COPY_RECT),
        "{:?}",
        info.rects
    );
    assert_screen(
        &c.screen.pixels,
        &rig.expected(PixelFormat::XRGB8888),
        "screen",
    );
}

#[test]
fn input_reaches_the_sink() {
    let rig = rig(64, 48, None);
    let mut c = rig.connect(None, true);
    c.set_encodings(&[enc::RAW, enc::QEMU_EXTENDED_KEY_EVENT, enc::QEMU_LED_STATE])
        .unwrap();
    c.request(false).unwrap();
    // The first update acknowledges extended key events and reports the LEDs.
    c.read_update().unwrap();
    let mut tries = 0;
    while !(c.ext_key && c.leds.is_some()) && tries < 3 {
        c.request(false).unwrap();
        c.read_update().unwrap();
        tries += 1;
    }
    assert!(c.ext_key);
    assert_eq!(c.leds, Some(0));
    rig.server.set_leds(4);
    c.request(true).unwrap();
    c.read_update().unwrap();
    assert_eq!(c.leds, Some(4));
    c.key(true, 0x61).unwrap();
    c.key(false, 0x61).unwrap();
    c.ext_key(true, 0xff0d, 0x9c).unwrap();
    c.pointer(10, 20, 1).unwrap();
    c.pointer(1000, 1000, 0).unwrap();
    c.request(false).unwrap();
    c.read_update().unwrap();
    let ev = rig.events.0.lock().unwrap().clone();
    assert_eq!(
        ev,
        [
            "key true 0x61 None",
            "key false 0x61 None",
            "key true 0xff0d Some(57372)",
            "ptr 10 20 1 64x48",
            "ptr 63 47 0 64x48"
        ]
    );
}

#[test]
fn password_accepted_and_rejected() {
    let rig = rig(32, 32, Some(b"s3cret"));
    let mut ok = rig.connect(Some(b"s3cret"), true);
    ok.request(false).unwrap();
    ok.read_update().unwrap();
    match RfbClient::connect(rig.connect_raw(), Some(b"wrong"), true) {
        Err(vnc::VncError::AuthFailed(reason)) => {
            assert!(reason.contains("wrong password"), "{reason}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("wrong password accepted"),
    }
    // After the failure budget (3) is used up, even the right password is refused for a while.
    for _ in 0..2 {
        assert!(RfbClient::connect(rig.connect_raw(), Some(b"bad"), true).is_err());
    }
    match RfbClient::connect(rig.connect_raw(), Some(b"s3cret"), true) {
        Err(vnc::VncError::AuthFailed(reason)) => assert!(reason.contains("too many"), "{reason}"),
        other => panic!("expected lockout, got {:?}", other.is_ok()),
    }
    // The client that logged in earlier is unaffected.
    ok.request(false).unwrap();
    ok.read_update().unwrap();
}

#[test]
fn old_protocol_versions() {
    let rig = rig(16, 16, None);
    for (version, expect_type) in [
        (&b"RFB 003.003\n"[..], &[0u8, 0, 0, 1][..]),
        (b"RFB 003.007\n", &[1, 1]),
    ] {
        let mut s = rig.connect_raw();
        let mut v = [0u8; 12];
        s.read_exact(&mut v).unwrap();
        assert_eq!(&v, b"RFB 003.008\n");
        s.write_all(version).unwrap();
        let mut t = vec![0u8; expect_type.len()];
        s.read_exact(&mut t).unwrap();
        assert_eq!(t, expect_type);
        if version == b"RFB 003.007\n" {
            s.write_all(&[1]).unwrap();
        }
        // No SecurityResult for None before 3.8: ServerInit follows ClientInit directly.
        s.write_all(&[1]).unwrap();
        let mut init = [0u8; 24];
        s.read_exact(&mut init).unwrap();
        assert_eq!(&init[..4], &[0, 16, 0, 16]);
        assert_eq!(&init[20..24], &4u32.to_be_bytes());
    }
}

#[test]
fn hostile_client_is_dropped_alone() {
    let rig = rig(48, 48, None);
    let mut good = rig.connect(None, true);
    let bad_inputs: Vec<Vec<u8>> = vec![
        vec![42],                        // unknown message type
        vec![6, 0, 0, 0, 0x7f, 0, 0, 0], // 2 GiB cut text
        vec![
            0, 0, 0, 0, 24, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0,
        ], // 24 bpp
        vec![255, 7],                    // unknown QEMU subtype
    ];
    for b in bad_inputs {
        let mut bad = rig.connect(None, true);
        bad.send_raw(&b).unwrap();
        bad.request(false).unwrap_or(());
        assert!(bad.read_update().is_err(), "{b:?} not rejected");
    }
    // A request for an absurd rectangle is clipped, not trusted.
    good.send_raw(&[3, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
        .unwrap();
    let info = good.read_update().unwrap();
    assert_eq!(info.rects, vec![(Rect::new(0, 0, 48, 48), enc::RAW)]);
    good.request(false).unwrap();
    good.read_update().unwrap();
    assert_screen(
        &good.screen.pixels,
        &rig.expected(PixelFormat::XRGB8888),
        "good client",
    );
}

#[test]
fn exclusive_client_disconnects_the_others() {
    let rig = rig(16, 16, None);
    let mut a = rig.connect(None, true);
    a.request(false).unwrap();
    a.read_update().unwrap();
    let mut b = rig.connect(None, false);
    b.request(false).unwrap();
    b.read_update().unwrap();
    a.request(false).unwrap_or(());
    assert!(a.read_update().is_err());
    assert_eq!(rig.server.client_count(), 1);
}

#[test]
fn a_stalled_client_does_not_stall_the_others() {
    let rig = rig(400, 300, None);
    // This one asks for updates and never reads them: its socket buffer fills up.
    let mut stalled = rig.connect(None, true);
    stalled.set_encodings(&[enc::RAW]).unwrap();
    let mut live = rig.connect(None, true);
    live.set_encodings(&[enc::ZRLE]).unwrap();
    live.request(false).unwrap();
    live.read_update().unwrap();
    for i in 0..20u32 {
        stalled.request(false).unwrap();
        rig.paint(Rect::new(0, 0, 400, 300), i * 0x010203);
        live.request(true).unwrap();
        live.read_update().unwrap();
        // Latest frame wins: the live client converges on the newest content.
        let want = rig.expected(PixelFormat::XRGB8888);
        while live.screen.pixels != want {
            live.request(true).unwrap();
            live.read_update().unwrap();
        }
    }
}

#[test]
fn cursor_shape_is_sent_to_clients_that_ask() {
    let rig = rig(64, 64, None);
    let mut c = rig.connect(None, true);
    c.set_encodings(&[enc::RAW, enc::CURSOR]).unwrap();
    c.request(false).unwrap();
    c.read_update().unwrap();
    c.request(true).unwrap();
    rig.screen.lock().unwrap().cursor = Some(vnc::Cursor {
        width: 9,
        height: 3,
        hot_x: 4,
        hot_y: 1,
        pixels: vec![0xffffff; 27],
        mask: vec![0xff, 0x80, 0x00, 0x00, 0xff, 0x80],
    });
    let info = c.read_update().unwrap();
    assert_eq!(info.rects, vec![(Rect::new(4, 1, 9, 3), enc::CURSOR)]);
    assert_eq!(c.cursor, Some((4, 1, 9, 3)));
    // A malformed shape (mask too short) is not sent.
    c.request(true).unwrap();
    rig.screen.lock().unwrap().cursor = Some(vnc::Cursor {
        width: 9,
        height: 3,
        hot_x: 0,
        hot_y: 0,
        pixels: vec![0; 27],
        mask: vec![0; 2],
    });
    rig.paint(Rect::new(0, 0, 1, 1), 0x123456);
    let info = c.read_update().unwrap();
    assert!(
        info.rects.iter().all(|(_, e)| *e != enc::CURSOR),
        "{:?}",
        info.rects
    );
}

#[test]
fn tcp_listener_serves_and_screenshots() {
    let mut rig = rig(40, 30, None);
    let addr = rig.server.listen("127.0.0.1:0").unwrap();
    let s = std::net::TcpStream::connect(addr).unwrap();
    let mut c = RfbClient::connect(s, None, true).unwrap();
    c.request(false).unwrap();
    c.read_update().unwrap();
    assert_screen(
        &c.screen.pixels,
        &rig.expected(PixelFormat::XRGB8888),
        "tcp client",
    );
    // Half-open connections that never finish the handshake do not block new clients.
    let idle: Vec<_> = (0..4)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let s = std::net::TcpStream::connect(addr).unwrap();
    assert!(RfbClient::connect(s, None, true).is_ok());
    drop(idle);
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("screen.png");
    rig.server.screenshot(&png).unwrap();
    assert!(std::fs::metadata(&png).unwrap().len() > 100);
}

#[test]
fn random_client_bytes_never_take_the_server_down() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Server threads are not joined by the test: count their panics through the hook.
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let rig = rig(33, 17, None);
    // xorshift: reproducible garbage.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..150 {
        let mut s = rig.connect_raw();
        let mut v = [0u8; 12];
        s.read_exact(&mut v).unwrap();
        // A valid handshake, then a burst of messages with random types and bodies, biased
        // towards real message types so the parsers see plausible but hostile input.
        s.write_all(b"RFB 003.008\n").unwrap();
        let mut sec = [0u8; 2];
        s.read_exact(&mut sec).unwrap();
        s.write_all(&[1, 1]).unwrap();
        let n = (next() % 200) as usize;
        let mut junk: Vec<u8> = (0..n).map(|_| next() as u8).collect();
        if let Some(first) = junk.first_mut() {
            *first = [0, 2, 3, 4, 5, 6, 255, 150][round % 8];
        }
        let _ = s.write_all(&junk);
        drop(s);
    }
    // The server still serves a well-behaved client correctly.
    let mut c = rig.connect(None, true);
    for e in [enc::ZRLE, enc::TIGHT, enc::HEXTILE] {
        c.set_encodings(&[e]).unwrap();
        c.request(false).unwrap();
        c.read_update().unwrap();
        assert_screen(
            &c.screen.pixels,
            &rig.expected(PixelFormat::XRGB8888),
            "after fuzzing",
        );
    }
}

#[test]
fn client_resize_requests_are_refused_politely() {
    let rig = rig(50, 40, None);
    let mut c = rig.connect(None, true);
    c.set_encodings(&[enc::RAW, enc::EXTENDED_DESKTOP_SIZE])
        .unwrap();
    c.request(false).unwrap();
    c.read_update().unwrap();
    let mut m = vec![251u8, 0, 0, 200, 0, 100, 1, 0];
    m.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 200, 0, 100, 0, 0, 0, 0]);
    c.send_raw(&m).unwrap();
    c.request(true).unwrap();
    let info = c.read_update().unwrap();
    // Reason 1 = answer to this client, status 1 = prohibited; the size stays.
    assert_eq!(
        info.rects,
        vec![(Rect::new(1, 1, 50, 40), enc::EXTENDED_DESKTOP_SIZE)]
    );
    c.request(false).unwrap();
    c.read_update().unwrap();
    assert_screen(
        &c.screen.pixels,
        &rig.expected(PixelFormat::XRGB8888),
        "after refusal",
    );
}

#[test]
fn continuous_updates_and_fences() {
    let rig = rig(64, 32, None);
    let raw = rig.connect_raw();
    let mut peek = raw.try_clone().unwrap();
    let mut c = RfbClient::connect(raw, None, true).unwrap();
    c.set_encodings(&[enc::RAW, enc::CONTINUOUS_UPDATES, enc::FENCE])
        .unwrap();
    c.request(false).unwrap();
    c.read_update().unwrap();
    // Support is announced with EndOfContinuousUpdates and a server fence request.
    assert_eq!(c.end_of_continuous, 1);
    assert_eq!(c.fences.len(), 1);
    assert!(c.fences[0].0 & (1 << 31) != 0);
    // Continuous mode: changes arrive without further requests.
    c.continuous_updates(true).unwrap();
    for i in 0..3u32 {
        rig.paint(Rect::new(i as u16, 0, 1, 1), 0x010101 * (i + 1));
        let info = c.read_update().unwrap();
        assert!(!info.rects.is_empty());
    }
    assert_screen(
        &c.screen.pixels,
        &rig.expected(PixelFormat::XRGB8888),
        "continuous",
    );
    // A client fence request is answered with its payload, request bit cleared.
    c.fence((1 << 31) | 1, b"sync").unwrap();
    rig.paint(Rect::new(10, 10, 1, 1), 0xffffff);
    c.read_update().unwrap();
    assert_eq!(c.fences.last().unwrap(), &(1, b"sync".to_vec()));
    // Switching off is confirmed, and then nothing is pushed.
    c.continuous_updates(false).unwrap();
    rig.paint(Rect::new(20, 20, 1, 1), 0x00ff00);
    c.request(false).unwrap();
    c.read_update().unwrap();
    assert_eq!(c.end_of_continuous, 2);
    rig.paint(Rect::new(21, 20, 1, 1), 0x00ff00);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!c_stream_has_data(&mut peek));
}

#[test]
fn scattered_changes_are_bounded_in_rectangle_count() {
    let rig = rig(1024, 768, None);
    let mut c = rig.connect(None, true);
    c.set_encodings(&[enc::HEXTILE]).unwrap();
    c.request(false).unwrap();
    c.read_update().unwrap();
    {
        // One pixel in every other 16x16 tile: 1536 separate changes.
        let mut s = rig.screen.lock().unwrap();
        for ty in 0..48usize {
            for tx in (ty % 2..64).step_by(2) {
                s.frame.pixels[(ty * 16) * 1024 + tx * 16] ^= 0xffffff;
            }
        }
        s.dirty = Dirty::All;
    }
    c.request(true).unwrap();
    let info = c.read_update().unwrap();
    assert!(info.rects.len() <= 1024, "{} rectangles", info.rects.len());
    assert_screen(
        &c.screen.pixels,
        &rig.expected(PixelFormat::XRGB8888),
        "scattered",
    );
}

#[test]
fn tight_jpeg_only_when_lossy_is_allowed() {
    // Noise-like content, where JPEG pays off.
    let noisy = |rig: &Rig| {
        let mut s = rig.screen.lock().unwrap();
        let mut v = 12345u32;
        for (i, p) in s.frame.pixels.iter_mut().enumerate() {
            v = v.wrapping_mul(1103515245).wrapping_add(12345);
            // Smooth gradient plus mild noise.
            let base = ((i % 256) as u32) * 0x010101;
            *p = (base ^ ((v >> 16) & 0x070707)) & 0xffffff;
        }
        s.dirty = Dirty::All;
        drop(s);
        // Let the capture thread publish it.
        std::thread::sleep(Duration::from_millis(100));
    };
    let encodings = [enc::TIGHT, enc::JPEG_QUALITY_0 + 8];
    let lossless = rig(256, 128, None);
    noisy(&lossless);
    let mut c = lossless.connect(None, true);
    c.set_encodings(&encodings).unwrap();
    c.request(false).unwrap();
    let exact = c.read_update().unwrap();
    assert_screen(
        &c.screen.pixels,
        &lossless.expected(PixelFormat::XRGB8888),
        "no lossy",
    );

    let lossy = rig_with(256, 128, None, true);
    noisy(&lossy);
    let mut c = lossy.connect(None, true);
    c.set_encodings(&encodings).unwrap();
    c.request(false).unwrap();
    let jpeg = c.read_update().unwrap();
    assert!(
        jpeg.bytes * 2 < exact.bytes,
        "jpeg {} vs lossless {}",
        jpeg.bytes,
        exact.bytes
    );
    // Close to the original: small mean error per channel.
    let want = lossy.expected(PixelFormat::XRGB8888);
    let err: u64 = c
        .screen
        .pixels
        .iter()
        .zip(&want)
        .map(|(a, b)| {
            (0..3)
                .map(|k| ((a >> (8 * k)) & 0xff).abs_diff((b >> (8 * k)) & 0xff) as u64)
                .sum::<u64>()
        })
        .sum();
    let mean = err as f64 / (want.len() * 3) as f64;
    assert!(mean < 6.0, "mean channel error {mean}");
    // Without a quality level the same server stays lossless.
    let mut c = lossy.connect(None, true);
    c.set_encodings(&[enc::TIGHT]).unwrap();
    c.request(false).unwrap();
    c.read_update().unwrap();
    assert_screen(&c.screen.pixels, &want, "no quality level");
}

#[test]
fn colour_map_clients_get_a_bgr233_map() {
    let rig = rig(64, 40, None);
    for e in [enc::RAW, enc::HEXTILE, enc::ZRLE, enc::TIGHT] {
        let mut c = rig.connect(None, true);
        let mut cm = PixelFormat::BGR233;
        cm.true_colour = false;
        cm.red_max = 0;
        c.send_raw(&[0, 0, 0, 0]).unwrap();
        let mut b = cm.to_bytes();
        b[3] = 0;
        c.send_raw(&b).unwrap();
        c.pf = PixelFormat::COLOUR_MAP_8;
        c.set_encodings(&[e]).unwrap();
        c.request(false).unwrap();
        c.read_update().unwrap();
        // Same picture as a BGR233 true-colour client, through the map.
        assert_screen(
            &c.screen.pixels,
            &rig.expected(PixelFormat::BGR233),
            &format!("colour map, encoding {e}"),
        );
    }
}

#[test]
fn vencrypt_tls_with_and_without_password() {
    let dir = tempfile::tempdir().unwrap();
    let Some((ca, cert, key)) = test_pki(dir.path()) else {
        eprintln!("skipping: openssl CLI not available");
        return;
    };
    let tls = vnc::tls::load_server_config(&cert, &key).unwrap();
    for password in [None, Some(&b"tlspass"[..])] {
        let screen = Arc::new(Mutex::new(Screen {
            frame: pattern(80, 60),
            dirty: Dirty::None,
            cursor: None,
        }));
        let mut server = VncServer::new(
            screen.clone(),
            Arc::new(Events::default()),
            VncServerOptions {
                password: password.map(|p| p.to_vec()),
                tls: Some(tls.clone()),
                auth_failure_delay: Duration::from_millis(1),
                ..Default::default()
            },
        );
        let addr = server.listen("127.0.0.1:0").unwrap();
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        let mut c = RfbClient::connect_vencrypt(tcp, password, true, &ca, "localhost").unwrap();
        c.set_encodings(&[enc::ZRLE]).unwrap();
        c.request(false).unwrap();
        c.read_update().unwrap();
        let want = Converter::new(PixelFormat::XRGB8888);
        let expected: Vec<u32> = pattern(80, 60)
            .pixels
            .iter()
            .map(|&p| want.quantise(p))
            .collect();
        assert_screen(&c.screen.pixels, &expected, "over TLS");
        // Updates keep flowing through the TLS pump.
        screen.lock().unwrap().frame.pixels[0] = 0x00ff00;
        screen.lock().unwrap().dirty = Dirty::All;
        c.request(true).unwrap();
        c.read_update().unwrap();
        assert_eq!(c.screen.pixels[0], 0x00ff00);
        // Plain RFB security types are not offered.
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        assert!(RfbClient::connect(tcp, password, true).is_err());
        if password.is_some() {
            let tcp = std::net::TcpStream::connect(addr).unwrap();
            match RfbClient::connect_vencrypt(tcp, Some(b"nope"), true, &ca, "localhost") {
                Err(vnc::VncError::AuthFailed(_)) => {}
                other => panic!("wrong password over TLS: {:?}", other.is_ok()),
            }
        }
    }
}

#[test]
fn idle_half_open_connections_are_capped() {
    let screen = Arc::new(Mutex::new(Screen {
        frame: pattern(16, 16),
        dirty: Dirty::None,
        cursor: None,
    }));
    let mut server = VncServer::new(
        screen,
        Arc::new(Events::default()),
        VncServerOptions {
            max_clients: 2,
            handshake_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    );
    let addr = server.listen("127.0.0.1:0").unwrap();
    let idle: Vec<_> = (0..2)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let mut v = [0u8; 12];
            s.read_exact(&mut v).unwrap();
            s
        })
        .collect();
    // Both slots are held by clients that never answer: the next one is turned away.
    let mut third = std::net::TcpStream::connect(addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut v = [0u8; 12];
    assert!(
        third.read_exact(&mut v).is_err(),
        "third connection was served"
    );
    // The handshake timeout frees the slots.
    std::thread::sleep(Duration::from_millis(800));
    drop(idle);
    let s = std::net::TcpStream::connect(addr).unwrap();
    assert!(RfbClient::connect(s, None, true).is_ok());
}
