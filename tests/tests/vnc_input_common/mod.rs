//! Shared by the VNC input tests (`rvmm_vnc_kbd.rs`, `rvmm_vnc_tablet.rs`): boot a guest with
//! `--vnc` and, once it reports ready, drive the server with vncdotool.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rvmm_tests::{free_display, guest, rvmm, Outcome};

/// Boot guest `name` under rvmm with a VNC server; when its serial shows `ready`, run
/// `vncdo -s <server> <vncdo>` (30 s at most). Asserts that vncdo succeeded and the guest
/// passed, and returns the run for the caller's checks.
pub fn run_with_vncdo(name: &str, ready: &str, vncdo: &[&str]) -> Outcome {
    let display = free_display();
    let server = format!("127.0.0.1::{}", 5900 + display);
    let args: Vec<String> = vncdo.iter().map(|a| a.to_string()).collect();
    let ready = ready.to_string();
    let sent = Arc::new(AtomicBool::new(false));
    let client: Arc<Mutex<Option<std::thread::JoinHandle<String>>>> = Arc::new(Mutex::new(None));
    let (s2, c2) = (sent.clone(), client.clone());
    let out = rvmm()
        .kernel(guest(name))
        .args(["--vnc", &format!("127.0.0.1:{display}")])
        .timeout(Duration::from_secs(60))
        .stop_when(move |serial| {
            if serial.contains(ready.as_str()) && !s2.swap(true, Ordering::SeqCst) {
                let (server, args) = (server.clone(), args.clone());
                *c2.lock().unwrap() = Some(std::thread::spawn(move || {
                    match Command::new("timeout")
                        .args(["30", "vncdo", "-s", &server])
                        .args(&args)
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
    let err = client
        .lock()
        .unwrap()
        .take()
        .map(|h| h.join().unwrap())
        .unwrap_or_else(|| "the guest never got ready".into());
    assert!(err.is_empty(), "{err}\n{}", out.report());
    out.assert_pass();
    out
}
