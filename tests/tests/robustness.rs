//! rvmm survives a hostile guest (odd ports, widths, offsets, unassigned MMIO, bad IOAPIC
//! selectors) with the VM still running, and treats a triple fault like a PC: reset (restart), or
//! exit with --no-reboot — never a hang or a host-side crash.

use rvmm_tests::{guest, rvmm};
use std::time::Duration;

#[test]
fn hostile_guest_cannot_break_the_monitor() {
    let out = rvmm().kernel(guest("hostile")).run();
    out.assert_pass();
    assert!(
        out.lines().any(|l| l.starts_with("hostile: survived")),
        "{}",
        out.report()
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.report());
}

#[test]
fn triple_fault_with_no_reboot_exits() {
    let out = rvmm().kernel(guest("triplefault")).arg("--no-reboot").run();
    assert!(!out.timed_out, "{}", out.report());
    assert_eq!(out.signal, None, "{}", out.report());
    assert_eq!(out.status, Some(0), "{}", out.report());
    assert_eq!(
        out.lines().filter(|l| *l == "triplefault: boot").count(),
        1,
        "{}",
        out.report()
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.report());
}

#[test]
fn triple_fault_restarts_the_vm() {
    let out = rvmm()
        .kernel(guest("triplefault"))
        .timeout(Duration::from_secs(30))
        .stop_when(|s| s.matches("triplefault: boot").count() >= 2)
        .run();
    assert!(
        out.stopped,
        "no second boot after the triple fault\n{}",
        out.report()
    );
}
