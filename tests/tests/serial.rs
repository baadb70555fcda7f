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

#[test]
fn verbose_logs_stay_off_the_serial_stream() {
    // -v -v logs (including the boot marker the guest library writes) go to stderr; stdout
    // carries nothing but the guest's own lines.
    let out = rvmm().kernel(guest("poweroff")).args(["-v", "-v"]).run();
    assert_eq!(out.status, Some(0), "{}", out.report());
    assert!(out.lines().count() >= 3, "{}", out.report());
    assert!(
        out.lines().all(|l| l.starts_with("poweroff: ")),
        "stdout has lines the guest did not print\n{}",
        out.report()
    );
    assert!(
        out.stderr.contains("0x01"),
        "no boot-marker log for 0x01 on stderr\n{}",
        out.report()
    );
}
