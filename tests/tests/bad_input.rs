//! rvmm refuses bad input with a clear message on stderr and a non-zero exit — never a panic,
//! a signal or a hang. (A missing /dev/kvm cannot be simulated here and is not tested.)

use rvmm_tests::{guest, rvmm, Outcome};
use std::time::Duration;

fn assert_clean_failure(out: &Outcome, words: &[&str]) {
    assert!(!out.timed_out, "rvmm hung on bad input\n{}", out.report());
    assert_eq!(
        out.signal,
        None,
        "rvmm died from a signal\n{}",
        out.report()
    );
    assert!(
        matches!(out.status, Some(s) if s != 0),
        "expected a non-zero exit\n{}",
        out.report()
    );
    assert!(
        !out.stderr.contains("panicked"),
        "rvmm panicked\n{}",
        out.report()
    );
    let err = out.stderr.to_lowercase();
    for w in words {
        assert!(
            err.contains(&w.to_lowercase()),
            "stderr does not mention `{w}`\n{}",
            out.report()
        );
    }
}

fn quick() -> rvmm_tests::Vm {
    rvmm().timeout(Duration::from_secs(20))
}

#[test]
fn missing_kernel_file() {
    let out = quick().kernel("/nonexistent/rvmm-test-kernel").run();
    assert_clean_failure(&out, &["/nonexistent/rvmm-test-kernel"]);
}

#[test]
fn no_kernel_flag() {
    let out = quick().run();
    assert_clean_failure(&out, &["kernel"]);
}

#[test]
fn kernel_that_is_not_a_kernel() {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut f, b"this is a text file, not a bzImage or ELF\n")
        .expect("write");
    let out = quick().kernel(f.path()).run();
    assert_clean_failure(&out, &[&f.path().display().to_string()]);
}

#[test]
fn memory_zero() {
    let out = quick().kernel(guest("poweroff")).memory("0").run();
    assert_clean_failure(&out, &["memory"]);
}

#[test]
fn memory_not_a_size() {
    let out = quick().kernel(guest("poweroff")).memory("lots").run();
    assert_clean_failure(&out, &["lots"]);
}

#[test]
fn cpus_zero() {
    let out = quick().kernel(guest("poweroff")).cpus(0).run();
    assert_clean_failure(&out, &["cpus"]);
}

#[test]
fn cpus_above_the_kvm_limit() {
    let out = quick().kernel(guest("poweroff")).cpus(100_000).run();
    assert_clean_failure(&out, &["cpus"]);
}

#[test]
fn initrd_larger_than_memory() {
    let f = tempfile::NamedTempFile::new().expect("temp file");
    f.as_file()
        .set_len(200 << 20)
        .expect("sparse 200 MiB initrd");
    let out = quick()
        .kernel(guest("poweroff"))
        .memory("64M")
        .initrd(f.path())
        .run();
    assert_clean_failure(&out, &["initrd"]);
}

#[test]
fn missing_initrd_file() {
    let out = quick()
        .kernel(guest("poweroff"))
        .initrd("/nonexistent/rvmm-test-initrd")
        .run();
    assert_clean_failure(&out, &["/nonexistent/rvmm-test-initrd"]);
}

#[test]
fn memory_larger_than_the_host_can_map() {
    let out = quick().kernel(guest("poweroff")).memory("1000T").run();
    assert_clean_failure(&out, &["memory"]);
}
