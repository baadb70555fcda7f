//! `rvmm --help` documents every flag issue 2 asks for, and exits 0 without needing a kernel.

use rvmm_tests::command;

#[test]
fn help_documents_every_flag() {
    let out = command(rvmm_tests::rvmm_bin()).arg("--help").run();
    assert_eq!(out.status, Some(0), "{}", out.report());
    for flag in [
        "--kernel",
        "--initrd",
        "--cmdline",
        "--memory",
        "--cpus",
        "--serial",
        "--no-reboot",
        "--cpu-model",
        "--verbose",
    ] {
        assert!(
            out.serial.contains(flag),
            "--help does not mention {flag}\n{}",
            out.report()
        );
    }
    for value in ["stdio", "file:", "none", "host", "baseline"] {
        assert!(
            out.serial.contains(value),
            "--help does not explain `{value}`\n{}",
            out.report()
        );
    }
}
