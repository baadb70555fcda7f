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

/// A temp file holding `bytes`.
fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut f, bytes).expect("write");
    f
}

/// The plain-ELF bootcheck image with its first program header patched: `field` is the byte
/// offset inside the Elf64_Phdr (16 vaddr, 24 paddr, 32 filesz, 40 memsz).
fn patched_elf(patches: &[(usize, u64)]) -> tempfile::NamedTempFile {
    let path = rvmm_tests::guest_image("bootcheck", rvmm_tests::Format::Elf64);
    let mut elf = std::fs::read(path).expect("read the elf64 guest");
    let phoff = u64::from_le_bytes(elf[32..40].try_into().expect("e_phoff")) as usize;
    for (field, value) in patches {
        elf[phoff + field..phoff + field + 8].copy_from_slice(&value.to_le_bytes());
    }
    file_with(&elf)
}

#[test]
fn empty_kernel_file() {
    let f = file_with(b"");
    let out = quick().kernel(f.path()).run();
    assert_clean_failure(&out, &[&f.path().display().to_string()]);
}

#[test]
fn kernel_that_is_a_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = quick().kernel(dir.path()).run();
    assert_clean_failure(&out, &[&dir.path().display().to_string()]);
}

#[test]
fn bzimage_whose_setup_sectors_run_past_the_file() {
    let mut image = std::fs::read(guest("bootcheck")).expect("read the bzImage guest");
    image[0x1f1] = 0xff; // setup_sects: 255 sectors, far more than the file has
    let f = file_with(&image);
    let out = quick().kernel(f.path()).run();
    assert_clean_failure(&out, &[&f.path().display().to_string()]);
}

#[test]
fn truncated_bzimage() {
    let image = std::fs::read(guest("bootcheck")).expect("read the bzImage guest");
    let f = file_with(&image[..0x1200]); // setup + the first 512 bytes of the kernel
    let out = quick().kernel(f.path()).arg("--no-reboot").run();
    assert_clean_failure(&out, &[&f.path().display().to_string()]);
}

#[test]
fn elf_segment_outside_guest_ram() {
    let f = patched_elf(&[(16, 100 << 30), (24, 100 << 30)]);
    let out = quick().kernel(f.path()).run();
    assert_clean_failure(&out, &[&f.path().display().to_string(), "memory"]);
}

#[test]
fn elf_segment_file_size_beyond_the_file() {
    let f = patched_elf(&[(32, 1 << 40)]);
    let out = quick().kernel(f.path()).run();
    assert_clean_failure(&out, &[&f.path().display().to_string()]);
}

#[test]
fn elf_segment_huge_memory_size() {
    let f = patched_elf(&[(40, 1 << 40)]);
    let out = quick().kernel(f.path()).run();
    assert_clean_failure(&out, &[&f.path().display().to_string()]);
}

#[test]
fn initrd_that_is_a_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = quick().kernel(guest("poweroff")).initrd(dir.path()).run();
    assert_clean_failure(&out, &[&dir.path().display().to_string()]);
}

#[test]
fn cmdline_longer_than_the_kernel_accepts() {
    // The guest's setup header says cmdline_size = 2047.
    let out = quick()
        .kernel(guest("poweroff"))
        .cmdline(&"a".repeat(5000))
        .run();
    assert_clean_failure(&out, &["cmdline"]);
}
