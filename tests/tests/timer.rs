//! rvmm timer interrupts: the in-kernel LAPIC timer (periodic, one-shot, TSC-deadline) and the
//! PIT through the IOAPIC.

use rvmm_tests::{guest, rvmm};

#[test]
fn lapic_and_pit_interrupts() {
    let out = rvmm().kernel(guest("timer")).run();
    out.assert_pass();
    assert!(
        out.field_u64("timer: lapic ", "ticks").unwrap_or(0) >= 5,
        "{}",
        out.report()
    );
    assert!(
        out.field_u64("timer: pit ", "ticks").unwrap_or(0) >= 5,
        "{}",
        out.report()
    );
    assert_eq!(
        out.field_u64("timer: pit ", "gsi"),
        Some(2),
        "{}",
        out.report()
    );
    assert_eq!(
        out.field_u64("timer: oneshot ", "ticks"),
        Some(1),
        "{}",
        out.report()
    );
    // The host CPU model offers the TSC-deadline timer (as KVM does), and it must fire.
    assert_eq!(
        out.field_u64("timer: tsc_deadline ", "ticks"),
        Some(1),
        "{}",
        out.report()
    );
}
