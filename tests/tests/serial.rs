//! rvmm's COM1: guest output reaches stdout, host input on stdin reaches the guest with receive
//! interrupts through the IOAPIC, and `--serial file:PATH` writes the output to a file.

use rvmm_tests::{guest, rvmm};

#[test]
fn stdin_reaches_the_guest_with_interrupts() {
    let out = rvmm()
        .kernel(guest("serialecho"))
        .send_when("echo: ready", b"hello-rx\n")
        .run();
    out.assert_pass();
    assert_eq!(
        out.field("echo: ", "line"),
        Some("hello-rx"),
        "{}",
        out.report()
    );
    assert!(
        out.field_u64("echo: ", "irqs").unwrap_or(0) >= 1,
        "{}",
        out.report()
    );
}

#[test]
fn serial_to_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("serial.log");
    let out = rvmm()
        .kernel(guest("poweroff"))
        .serial(Some(&format!("file:{}", path.display())))
        .run();
    assert_eq!(out.status, Some(0), "{}", out.report());
    assert!(
        !out.serial.contains("poweroff: start"),
        "serial also went to stdout\n{}",
        out.report()
    );
    let text = std::fs::read_to_string(&path).expect("serial log written");
    assert!(
        text.contains("poweroff: start"),
        "serial file: {text:?}\n{}",
        out.report()
    );
}
