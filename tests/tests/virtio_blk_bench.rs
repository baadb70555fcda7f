//! Benchmark: the virtio-blk test guest's ring-3 I/O loop (queue depth 1, polled) through
//! rvmm's virtio-blk and through `qemu-system-x86_64 -accel kvm` with `virtio-blk-pci`, same
//! guest, same raw image, `cache=none` on both; prints both figures and their ratio. QEMU is
//! the harness's `qemu()` with `-accel kvm`, which replaces its default `-accel tcg` (QEMU
//! would take the first accelerator that works and silently run under TCG).
//! Not a test (no timed assertions): run it with
//!
//! ```text
//! cargo build --release -p vmm --bin rvmm
//! cargo test --release -p rvmm-tests --test virtio_blk_bench -- --ignored --nocapture
//! ```

use std::process::Command;
use std::time::Duration;

use rvmm_tests::{guest, qemu, rvmm, Outcome};

const RANDOM_IOS: u64 = 4000;
const ROUNDS: usize = 3;
/// (label, cycles field, iops-or-MB/s field, unit)
const PHASES: &[(&str, &str, &str, &str)] = &[
    (
        "4K random write",
        "rand4k_write_cycles",
        "rand4k_write_iops",
        "IOPS",
    ),
    (
        "4K random read",
        "rand4k_read_cycles",
        "rand4k_read_iops",
        "IOPS",
    ),
    (
        "1M seq write",
        "seq1m_write_cycles",
        "seq1m_write_mbs",
        "MB/s",
    ),
    ("1M seq read", "seq1m_read_cycles", "seq1m_read_mbs", "MB/s"),
];

fn cycles(out: &Outcome) -> Vec<u64> {
    PHASES
        .iter()
        .map(|(_, c, _, _)| out.field_u64("blkbench: ", c).expect("cycles field"))
        .collect()
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn rvmm_virtio_blk_vs_qemu_kvm() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let img = dir.path().join("bench.raw");
    let st = Command::new("qemu-img")
        // Fully written, so no run pays for converting unwritten extents that the run before
        // it already converted (both write the same pseudo-random sectors).
        .args(["create", "-q", "-f", "raw", "-o", "preallocation=full"])
        .arg(&img)
        .arg("256M")
        .status()
        .unwrap();
    assert!(st.success());
    let img_s = img.to_str().unwrap();
    let cmdline = format!("console=ttyS0 blk_bench={RANDOM_IOS}");
    let mut ours = vec![u64::MAX; PHASES.len()];
    let mut theirs = vec![u64::MAX; PHASES.len()];
    let mut khz = 0u64;
    for round in 0..ROUNDS {
        // Alternate who goes first, so neither always runs on a warmer host.
        for which in [round % 2, 1 - round % 2] {
            if which == 0 {
                let r = rvmm()
                    .kernel(guest("virtio-blk"))
                    .cmdline(&cmdline)
                    .arg("--disk")
                    .arg(format!("{img_s},format=raw,cache=none"))
                    .timeout(Duration::from_secs(120))
                    .run();
                r.assert_pass();
                khz = r.field_u64("blkbench: ", "tsc_khz").unwrap_or(4_000_000);
                for (b, c) in ours.iter_mut().zip(cycles(&r)) {
                    *b = (*b).min(c);
                }
            } else {
                // The caller's -accel replaces the harness's default TCG.
                let q = qemu()
                    .args(["-accel", "kvm"])
                    .kernel(guest("virtio-blk"))
                    .cmdline(&cmdline)
                    .arg("-drive")
                    .arg(format!(
                        "file={img_s},if=none,id=d0,format=raw,cache=none,aio=threads"
                    ))
                    .args(["-device", "virtio-blk-pci,drive=d0,disable-legacy=on"])
                    .timeout(Duration::from_secs(120))
                    .run();
                q.assert_pass();
                for (b, c) in theirs.iter_mut().zip(cycles(&q)) {
                    *b = (*b).min(c);
                }
            }
        }
    }
    // Rates from the guest's TSC (its tsc_khz may be an assumed 4 GHz; the ratio does not
    // depend on it).
    let khz = khz as f64;
    println!("\nvirtio-blk test guest, ring-3 polled QD1, raw 256M cache=none, best of {ROUNDS}");
    println!(
        "{:<16} {:>12} {:>18} {:>7}  unit",
        "workload", "rvmm", "qemu -accel kvm", "ratio"
    );
    for (i, (label, _, _, unit)) in PHASES.iter().enumerate() {
        let work = if *unit == "IOPS" {
            RANDOM_IOS as f64
        } else {
            64.0 * 1.048_576
        };
        let rate = |c: u64| work * khz * 1000.0 / c as f64;
        println!(
            "{label:<16} {:>12.0} {:>18.0} {:>7.2}  {unit}",
            rate(ours[i]),
            rate(theirs[i]),
            theirs[i] as f64 / ours[i] as f64
        );
    }
}
