//! rvmm timer interrupts: the in-kernel LAPIC timer (periodic, one-shot, TSC-deadline) and the
//! PIT through the IOAPIC.

mod guest_checks;

use rvmm_tests::{guest, rvmm};

#[test]
fn lapic_and_pit_interrupts() {
    let out = rvmm().kernel(guest("timer")).run();
    guest_checks::timers_fired(&out);
    // The host CPU model offers the TSC-deadline timer (as KVM does), and it must fire.
    assert_eq!(
        out.field_u64("timer: tsc_deadline ", "ticks"),
        Some(1),
        "{}",
        out.report()
    );
}
