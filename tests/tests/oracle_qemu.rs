//! Every test guest under QEMU TCG, the oracle: proves the guests and their image formats are
//! right on a reference machine, independently of rvmm. (QEMU's firmware differs from rvmm's
//! contract, so only the universal checks and QEMU-independent facts are asserted here.)

mod guest_checks;

use rvmm_tests::{fnv1a32, guest, guest_image, qemu, Format};
use std::time::Duration;

fn initrd_file(len: usize) -> (tempfile::NamedTempFile, u32) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut f = tempfile::NamedTempFile::new().expect("temp initrd");
    std::io::Write::write_all(&mut f, &data).expect("write initrd");
    (f, fnv1a32(&data))
}

#[test]
fn bootcheck_bzimage_32bit_entry() {
    let (initrd, hash) = initrd_file(300_000);
    let cmdline = format!("console=ttyS0 expect_initrd_size=300000 expect_initrd_fnv={hash:#x}");
    let out = qemu()
        .kernel(guest_image("bootcheck", Format::BzImage))
        .initrd(initrd.path())
        .cmdline(&cmdline)
        .run();
    out.assert_pass();
    assert_eq!(
        out.field("bootcheck: ", "kind"),
        Some("bzimage32"),
        "{}",
        out.report()
    );
    assert_eq!(
        out.line("cmdline: "),
        Some(cmdline.as_str()),
        "{}",
        out.report()
    );
    assert_eq!(
        out.field_u64("initrd: ", "size"),
        Some(300_000),
        "{}",
        out.report()
    );
    assert_eq!(
        out.field_u64("initrd: ", "fnv1a"),
        Some(hash.into()),
        "{}",
        out.report()
    );
    assert!(
        out.field_u64("acpi: ", "rsdp_scan").unwrap_or(0) != 0,
        "{}",
        out.report()
    );
}

#[test]
fn bootcheck_pvh_entry() {
    let (initrd, hash) = initrd_file(70_000);
    let cmdline = format!("pvh=1 expect_initrd_size=70000 expect_initrd_fnv={hash:#x}");
    let out = qemu()
        .kernel(guest_image("bootcheck", Format::Pvh))
        .initrd(initrd.path())
        .cmdline(&cmdline)
        .run();
    guest_checks::pvh_booted(&out, &cmdline);
}

#[test]
fn bootcheck_detects_a_wrong_initrd() {
    // The guest's own checks must be able to fail: announce a hash the initrd does not have.
    let (initrd, hash) = initrd_file(4096);
    let cmdline = format!("expect_initrd_fnv={:#x}", hash ^ 1);
    let out = qemu()
        .kernel(guest("bootcheck"))
        .initrd(initrd.path())
        .cmdline(&cmdline)
        .run();
    assert_eq!(
        out.guest_exit(),
        Some(rvmm_tests::EXIT_FAIL),
        "{}",
        out.report()
    );
    assert!(
        out.lines().any(|l| l.starts_with("FAIL: initrd hash")),
        "{}",
        out.report()
    );
}

#[test]
fn smp_starts_every_ap() {
    let out = qemu().kernel(guest("smp")).cpus(4).run();
    guest_checks::smp_started(&out, 4);
}

#[test]
fn timer_interrupts_arrive() {
    let out = qemu().kernel(guest("timer")).run();
    guest_checks::timers_fired(&out);
}

#[test]
fn poweroff_through_acpi_s5() {
    let out = qemu().kernel(guest("poweroff")).run();
    assert!(!out.timed_out, "{}", out.report());
    assert_eq!(out.status, Some(0), "{}", out.report());
    assert!(
        out.lines()
            .any(|l| l == "poweroff: writing SLP_TYP|SLP_EN to PM1a_CNT"),
        "{}",
        out.report()
    );
    assert!(!out.serial.contains("FAIL"), "{}", out.report());
}

#[test]
fn reboot_with_no_reboot_exits() {
    let out = qemu().kernel(guest("reboot")).run();
    assert!(!out.timed_out, "{}", out.report());
    assert_eq!(out.status, Some(0), "{}", out.report());
    assert_eq!(
        out.lines().filter(|l| *l == "reboot: boot").count(),
        1,
        "{}",
        out.report()
    );
    assert!(!out.serial.contains("FAIL"), "{}", out.report());
}

#[test]
fn reboot_restarts_the_guest() {
    // Without -no-reboot QEMU resets and boots the same kernel again.
    let vm = qemu();
    let out = vm
        .args(["-action", "reboot=reset"])
        .kernel(guest("reboot"))
        .timeout(Duration::from_secs(30))
        .stop_when(|s| s.matches("reboot: boot").count() >= 2)
        .run();
    assert!(out.stopped, "guest did not boot twice\n{}", out.report());
    assert!(!out.serial.contains("FAIL"), "{}", out.report());
}

#[test]
fn demo_prints_banner_and_powers_off() {
    let out = qemu().kernel(guest("demo")).cpus(2).cmdline("demo").run();
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
fn pci_enumeration_legacy_and_ecam_agree() {
    // q35 has an MCFG (ECAM); the guest compares every function's ID and class both ways.
    let out = qemu().args(["-M", "q35"]).kernel(guest("pcienum")).run();
    out.assert_pass();
    assert!(
        out.field_u64("pci: ", "ecam").unwrap_or(0) != 0,
        "{}",
        out.report()
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("pci: dev=00:00.0 id=8086:29c0")),
        "{}",
        out.report()
    );
    // i440FX (-M pc): no MCFG, config mechanism #1 only.
    let out = qemu().kernel(guest("pcienum")).run();
    out.assert_pass();
    assert_eq!(out.field_u64("pci: ", "ecam"), Some(0), "{}", out.report());
    assert!(
        out.lines()
            .any(|l| l.starts_with("pci: dev=00:00.0 id=8086:1237")),
        "{}",
        out.report()
    );
}

#[test]
fn cpuid_reports_features_and_topology() {
    let out = qemu().kernel(guest("cpuid")).cpus(2).run();
    out.assert_pass();
    assert_eq!(
        out.field("cpuid: hypervisor ", "signature"),
        Some("TCGTCGTCGTCG"),
        "{}",
        out.report()
    );
    let last_level = out
        .lines()
        .filter(|l| l.starts_with("cpuid: topology "))
        .last()
        .unwrap_or("");
    assert!(last_level.contains(" logical=2 "), "{}", out.report());
}

#[test]
fn serial_input_raises_receive_interrupts() {
    let out = qemu()
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
    assert_eq!(out.field_u64("echo: ", "gsi"), Some(4), "{}", out.report());
}

#[test]
fn hostile_guest_survives() {
    let out = qemu()
        .kernel(guest("hostile"))
        .cmdline("hostile.narrow_serial")
        .run();
    out.assert_pass();
    assert!(
        out.lines().any(|l| l.starts_with("hostile: survived")),
        "{}",
        out.report()
    );
}

#[test]
fn triple_fault_resets() {
    let out = qemu().kernel(guest("triplefault")).run();
    assert_eq!(out.status, Some(0), "{}", out.report());
    assert_eq!(
        out.lines().filter(|l| *l == "triplefault: boot").count(),
        1,
        "{}",
        out.report()
    );
    assert!(!out.serial.contains("FAIL"), "{}", out.report());
}

#[test]
fn rtc_reads_a_plausible_time() {
    let out = qemu().kernel(guest("rtc")).run();
    out.assert_pass();
    let year: u32 = out
        .field("rtc: ", "time")
        .and_then(|t| t.get(..4)?.parse().ok())
        .unwrap_or(0);
    assert!(year >= 2024, "{}", out.report());
}

#[test]
fn bootcheck_probes_ram_above_4g() {
    // 5 GiB on i440FX: 3 GiB below the hole, 2 GiB from 4 GiB up; the guest writes and reads
    // both ends of the high range through the library's 4-64 GiB mapping.
    let out = qemu().kernel(guest("bootcheck")).memory("5G").run();
    out.assert_pass();
    assert_eq!(
        out.field_u64("e820: high_ram_probe", "ok"),
        Some(1),
        "{}",
        out.report()
    );
}

#[test]
fn flood_guest_prints_every_line() {
    let out = qemu()
        .kernel(guest("flood"))
        .cmdline("flood_lines=500")
        .run();
    out.assert_pass();
    let n = out.lines().filter(|l| l.starts_with("flood: 0")).count();
    assert_eq!(n, 500, "{}", out.stderr);
}

#[test]
fn aps_start_again_after_a_reset() {
    let out = qemu()
        .args(["-action", "reboot=reset"])
        .kernel(guest("smp"))
        .cpus(4)
        .cmdline("smp.reset")
        .timeout(Duration::from_secs(30))
        .stop_when(|s| s.matches("smp: cpus_online=4").count() >= 2)
        .run();
    assert!(out.stopped, "{}", out.report());
    assert!(!out.serial.contains("FAIL"), "{}", out.report());
}
