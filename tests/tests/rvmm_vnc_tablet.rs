//! A VNC pointer reaches the virtio-input tablet (absolute, exact) of a guest that drives it.

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
fn vncdotool_clicks_arrive_as_absolute_tablet_events() {
    let display = free_display();
    let server = format!("127.0.0.1::{}", 5900 + display);
    let sent = Arc::new(AtomicBool::new(false));
    let vncdo: Arc<Mutex<Option<std::thread::JoinHandle<String>>>> = Arc::new(Mutex::new(None));
    let (s2, v2) = (sent.clone(), vncdo.clone());
    let out = rvmm()
        .kernel(guest("tablet"))
        .args(["--vnc", &format!("127.0.0.1:{display}")])
        .timeout(Duration::from_secs(60))
        .stop_when(move |serial| {
            if serial.contains("tablet: ready") && !s2.swap(true, Ordering::SeqCst) {
                let server = server.clone();
                *v2.lock().unwrap() = Some(std::thread::spawn(move || {
                    match Command::new("timeout")
                        .args(["30", "vncdo", "-s", &server, "move", "512", "384"])
                        .args(["click", "1"])
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
    assert_eq!(
        out.line("tablet: ready "),
        Some("name=\"rvmm virtio tablet\" abs_size=20 abs_max=32767 abs_bits=0x3"),
        "{}",
        out.report()
    );
    let events: Vec<(u32, u32, u32)> = out
        .lines()
        .filter(|l| l.starts_with("tablet: event "))
        .map(|l| {
            let f = |k: &str| {
                l.split(' ')
                    .find_map(|w| w.strip_prefix(k))
                    .and_then(rvmm_tests::parse_num)
                    .unwrap() as u32
            };
            assert_eq!(f("len="), 8, "{l}");
            (f("type="), f("code="), f("value="))
        })
        .collect();
    // The 1024x768 screen maps onto 0..=32767 on both axes.
    let (x, y) = (512 * 32767 / 1023, 384 * 32767 / 767);
    assert!(events.contains(&(3, 0, x)), "ABS_X {x}: {events:?}");
    assert!(events.contains(&(3, 1, y)), "ABS_Y {y}: {events:?}");
    let press = events.iter().position(|e| *e == (1, 0x110, 1));
    let release = events.iter().position(|e| *e == (1, 0x110, 0));
    assert!(press.is_some() && release > press, "{events:?}");
    assert!(events.contains(&(0, 0, 0)), "SYN_REPORT: {events:?}");
}
