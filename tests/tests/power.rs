//! rvmm power paths: ACPI S5 power-off ends rvmm with 0; an i8042 reset restarts the VM, or ends
//! rvmm with --no-reboot; the demo guest boots and powers off.

use rvmm_tests::{guest, rvmm};
use std::time::Duration;

#[test]
fn acpi_poweroff_exits_zero() {
    let out = rvmm().kernel(guest("poweroff")).run();
    assert!(!out.timed_out, "{}", out.report());
    assert_eq!(out.status, Some(0), "{}", out.report());
    assert!(
        out.lines()
            .any(|l| l.starts_with("poweroff: writing SLP_TYP|SLP_EN")),
        "{}",
        out.report()
    );
    assert!(!out.serial.contains("FAIL"), "{}", out.report());
}

#[test]
fn reset_with_no_reboot_exits() {
    let out = rvmm().kernel(guest("reboot")).arg("--no-reboot").run();
    assert!(!out.timed_out, "{}", out.report());
    assert_eq!(out.status, Some(0), "{}", out.report());
    assert_eq!(
        out.lines().filter(|l| *l == "reboot: boot").count(),
        1,
        "{}",
        out.report()
    );
    assert!(
        out.lines().any(|l| l == "reboot: requesting reset"),
        "{}",
        out.report()
    );
    assert!(!out.serial.contains("FAIL"), "{}", out.report());
}

#[test]
fn reset_restarts_the_vm() {
    let out = rvmm()
        .kernel(guest("reboot"))
        .timeout(Duration::from_secs(30))
        .stop_when(|s| s.matches("reboot: boot").count() >= 2)
        .run();
    assert!(
        out.stopped,
        "the guest did not boot a second time after the reset\n{}",
        out.report()
    );
    assert!(!out.serial.contains("FAIL"), "{}", out.report());
}

#[test]
fn demo_guest_boots_and_powers_off() {
    let out = rvmm().kernel(guest("demo")).cpus(2).run();
    assert_eq!(out.status, Some(0), "{}", out.report());
    assert!(out.serial.contains("rvmm demo guest"), "{}", out.report());
    assert!(
        out.serial.contains("CPUs:   2 in the ACPI MADT"),
        "{}",
        out.report()
    );
    assert!(out.lines().any(|l| l == "demo: ok"), "{}", out.report());
}

#[test]
fn reset_restarts_a_four_vcpu_vm() {
    // Every vCPU thread must stop and the VM come back with all of them parked again.
    let out = rvmm()
        .kernel(guest("reboot"))
        .cpus(4)
        .timeout(Duration::from_secs(30))
        .stop_when(|s| s.matches("reboot: boot").count() >= 3)
        .run();
    assert!(
        out.stopped,
        "the 4-vCPU guest did not boot three times\n{}",
        out.report()
    );
    assert!(!out.serial.contains("FAIL"), "{}", out.report());
}

#[test]
fn aps_start_again_after_a_reset() {
    // smp.reset: after bringing up every AP the guest resets the machine (i8042); on the next
    // boot the APs must be back in wait-for-SIPI and start again.
    let out = rvmm()
        .kernel(guest("smp"))
        .cpus(4)
        .cmdline("smp.reset")
        .timeout(Duration::from_secs(30))
        .stop_when(|s| s.matches("smp: cpus_online=4").count() >= 2)
        .run();
    assert!(
        out.stopped,
        "the APs did not all start again after the reset\n{}",
        out.report()
    );
    assert!(!out.serial.contains("FAIL"), "{}", out.report());
}
