//! The guests themselves under QEMU TCG (the oracle): proves each guest and its image formats
//! work on a reference machine, independently of rvmm.

use rvmm_tests::{guest_image, qemu, Format};

#[test]
fn hello_bzimage_under_qemu() {
    let out = qemu()
        .kernel(guest_image("hello", Format::BzImage))
        .cmdline("hello=1")
        .run();
    out.assert_pass();
    assert_eq!(
        out.line("hello from "),
        Some("bzimage32 cpl=3 cmdline=hello=1"),
        "{}",
        out.report()
    );
}

#[test]
fn hello_pvh_under_qemu() {
    let out = qemu()
        .kernel(guest_image("hello", Format::Pvh))
        .cmdline("hello=2")
        .run();
    out.assert_pass();
    assert_eq!(
        out.line("hello from "),
        Some("pvh cpl=3 cmdline=hello=2"),
        "{}",
        out.report()
    );
}
