//! What a guest's report must say, shared by the runs under rvmm (`boot.rs`, `smp.rs`,
//! `timer.rs`) and under the QEMU oracle (`oracle_qemu.rs`), so both monitors are held to the
//! same checks. Each test file adds what only its monitor guarantees.
// Each test binary uses only some of these.
#![allow(dead_code)]

use rvmm_tests::Outcome;

/// The smp guest brought `cpus` CPUs online and every AP reported matching APIC IDs.
pub fn smp_started(out: &Outcome, cpus: u64) {
    out.assert_pass();
    assert_eq!(
        out.field_u64("smp: ", "cpus_online"),
        Some(cpus),
        "{}",
        out.report()
    );
    for id in 1..cpus {
        let line = format!("ap: index={id} apic_id={id} cpuid_apic_id={id} cpl=0");
        assert!(
            out.lines().any(|l| l == line),
            "missing `{line}`\n{}",
            out.report()
        );
    }
}

/// The timer guest took LAPIC periodic and one-shot interrupts and PIT interrupts on GSI 2.
pub fn timers_fired(out: &Outcome) {
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
}

/// The bootcheck guest was entered through PVH with a valid start info and `cmdline`.
pub fn pvh_booted(out: &Outcome, cmdline: &str) {
    out.assert_pass();
    assert_eq!(
        out.field("bootcheck: ", "kind"),
        Some("pvh"),
        "{}",
        out.report()
    );
    assert_eq!(
        out.field("pvh: ", "magic"),
        Some("0x336ec578"),
        "{}",
        out.report()
    );
    assert_eq!(out.line("cmdline: "), Some(cmdline), "{}", out.report());
}
