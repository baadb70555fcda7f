//! rvmm SMP: every vCPU is in the MADT and starts through INIT-SIPI-SIPI with the right APIC ID
//! (LAPIC register and CPUID leaf 1 agree).

mod guest_checks;

use rvmm_tests::{guest, rvmm};

#[test]
fn four_cpus_start_and_report_apic_ids() {
    let out = rvmm().kernel(guest("smp")).cpus(4).run();
    guest_checks::smp_started(&out, 4);
    assert_eq!(
        out.field_u64("smp: ", "madt_cpus"),
        Some(4),
        "{}",
        out.report()
    );
}

#[test]
fn one_cpu_has_no_aps() {
    let out = rvmm().kernel(guest("smp")).cpus(1).run();
    out.assert_pass();
    assert_eq!(
        out.field_u64("smp: ", "madt_cpus"),
        Some(1),
        "{}",
        out.report()
    );
    assert_eq!(
        out.field_u64("smp: ", "cpus_online"),
        Some(1),
        "{}",
        out.report()
    );
}

#[test]
fn eight_cpus() {
    let out = rvmm().kernel(guest("smp")).cpus(8).run();
    out.assert_pass();
    assert_eq!(
        out.field_u64("smp: ", "cpus_online"),
        Some(8),
        "{}",
        out.report()
    );
}
