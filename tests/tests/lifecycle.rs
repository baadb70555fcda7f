//! rvmm's life cycle from outside the guest: SIGTERM/SIGINT stop the VM with a non-zero status
//! (not death by signal), the serial escape Ctrl-A x quits and restores the terminal, and a vCPU
//! that cannot be emulated (instruction fetch from unmapped MMIO) gets its registers reported
//! and a non-zero exit instead of a hang.

use rvmm_tests::{command, guest, rvmm, rvmm_bin};
use std::time::Duration;

fn assert_stopped_by(sig: i32) {
    let out = rvmm()
        .kernel(guest("idle"))
        .timeout(Duration::from_secs(20))
        .signal_when("idle: ready", sig)
        .run();
    assert!(
        !out.timed_out,
        "rvmm ignored signal {sig}\n{}",
        out.report()
    );
    assert_eq!(
        out.signal,
        None,
        "rvmm died from signal {sig} instead of stopping\n{}",
        out.report()
    );
    assert!(
        matches!(out.status, Some(s) if s != 0),
        "expected a non-zero exit\n{}",
        out.report()
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.report());
}

#[test]
fn sigterm_stops_the_vm() {
    assert_stopped_by(libc::SIGTERM);
}

#[test]
fn sigint_stops_the_vm() {
    assert_stopped_by(libc::SIGINT);
}

#[test]
fn serial_escape_quits_and_restores_the_terminal() {
    // script(1) gives rvmm a pseudo-terminal, so it switches it to raw mode; the shell prints
    // the terminal settings before and after.
    let cmd = format!(
        "stty -g; {} --kernel {} --serial stdio; echo rvmm-exit=$?; stty -g",
        rvmm_bin().display(),
        guest("idle").display()
    );
    let out = command("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .timeout(Duration::from_secs(20))
        .send_when("idle: ready", b"\x01x")
        .run();
    assert!(
        !out.timed_out,
        "Ctrl-A x did not end rvmm\n{}",
        out.report()
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"rvmm-exit=0"), "{}", out.report());
    let settings: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains(':') && !l.contains(' '))
        .collect();
    assert_eq!(settings.len(), 2, "{}", out.report());
    assert_eq!(
        settings[0],
        settings[1],
        "terminal settings not restored\n{}",
        out.report()
    );
    assert!(
        !out.serial.contains("idle: got 0x1"),
        "the escape reached the guest\n{}",
        out.report()
    );
}

#[test]
fn emulation_failure_reports_registers_and_exits() {
    let out = rvmm()
        .kernel(guest("badexec"))
        .timeout(Duration::from_secs(20))
        .run();
    assert!(!out.timed_out, "{}", out.report());
    assert_eq!(out.signal, None, "{}", out.report());
    assert!(matches!(out.status, Some(s) if s != 0), "{}", out.report());
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("rip") && err.contains("d0000000"),
        "no register dump\n{}",
        out.report()
    );
}

/// A guest that resets as fast as it boots must not keep SIGTERM from stopping rvmm (the signal
/// used to be checked only when no VM event arrived for 50 ms).
#[test]
fn sigterm_stops_a_guest_in_a_reset_loop() {
    let out = rvmm()
        .kernel(guest("reboot"))
        .timeout(Duration::from_secs(20))
        .signal_when("reboot: boot", libc::SIGTERM)
        .run();
    assert!(
        !out.timed_out,
        "rvmm kept restarting the VM after SIGTERM\n{}",
        out.report()
    );
    assert_eq!(out.status, Some(128 + libc::SIGTERM), "{}", out.report());
}
