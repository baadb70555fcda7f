//! VNC key presses and pointer moves (vncdotool) reach a guest's i8042: set-1 scancodes on
//! IRQ 1 and relative PS/2 mouse packets on IRQ 12.

use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rvmm_tests::{guest, rvmm};

fn free_display() -> u16 {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().unwrap().port();
        if port >= 5950 {
            return port - 5900;
        }
    }
    panic!("no free TCP port above 5950");
}

#[test]
fn vncdotool_key_presses_arrive_as_scancodes() {
    let display = free_display();
    let server = format!("127.0.0.1::{}", 5900 + display);
    let sent = Arc::new(AtomicBool::new(false));
    let vncdo: Arc<Mutex<Option<std::thread::JoinHandle<String>>>> = Arc::new(Mutex::new(None));
    let (s2, v2) = (sent.clone(), vncdo.clone());
    let out = rvmm()
        .kernel(guest("kbd"))
        .args(["--vnc", &format!("127.0.0.1:{display}")])
        .timeout(Duration::from_secs(60))
        .stop_when(move |serial| {
            if serial.contains("kbd: ready") && !s2.swap(true, Ordering::SeqCst) {
                let server = server.clone();
                *v2.lock().unwrap() = Some(std::thread::spawn(move || {
                    match Command::new("timeout")
                        .args([
                            "30", "vncdo", "-s", &server, "move", "100", "100", "pause", "0.2",
                        ])
                        .args([
                            "move", "110", "95", "pause", "0.2", "type", "ab", "key", "enter",
                        ])
                        .output()
                    {
                        Ok(o) if o.status.success() => String::new(),
                        Ok(o) => format!("vncdo failed: {}", String::from_utf8_lossy(&o.stderr)),
                        Err(e) => format!("cannot run vncdo: {e}"),
                    }
                }));
            }
            false
        })
        .run();
    let err = vncdo
        .lock()
        .unwrap()
        .take()
        .map(|h| h.join().unwrap())
        .unwrap_or_else(|| "the guest never got ready".into());
    assert!(err.is_empty(), "{err}\n{}", out.report());
    out.assert_pass();
    let codes: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("kbd: scancode="))
        .collect();
    // a down/up, b down/up, Enter down/up.
    assert_eq!(
        codes,
        ["0x1e", "0x9e", "0x30", "0xb0", "0x1c", "0x9c"],
        "{}",
        out.report()
    );
    // The pointer went 10 right and 5 up (PS/2 y grows upwards), no button held.
    let (mut dx, mut dy, mut n) = (0, 0, 0);
    for l in out.lines().filter(|l| l.starts_with("kbd: mouse ")) {
        let f = |k: &str| {
            l.split(' ')
                .find_map(|w| w.strip_prefix(k))
                .and_then(|v| v.parse::<i32>().ok())
                .unwrap()
        };
        assert_eq!((f("buttons="), f("sync=")), (0, 1), "{l}");
        dx += f("dx=");
        dy += f("dy=");
        n += 1;
    }
    assert!(n >= 1, "no mouse packet\n{}", out.report());
    assert_eq!((dx, dy), (10, 5), "{}", out.report());
    assert!(
        out.field_u64("kbd: irqs=", "mouse_irqs") > Some(0),
        "{}",
        out.report()
    );
}
