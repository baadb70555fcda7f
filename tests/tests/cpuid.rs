//! rvmm CPUID: hypervisor leaves, topology (leaf 0xB counts every vCPU, x2APIC ids match the
//! LAPIC) and the `--cpu-model baseline` feature set (no xsave family, AVX, cmpxchg16b, TSX).

use rvmm_tests::{guest, rvmm, Outcome};

fn feature(out: &Outcome, name: &str) -> Option<u64> {
    out.field_u64("cpuid: features ", name)
}

#[test]
fn hypervisor_leaves_and_topology() {
    let out = rvmm().kernel(guest("cpuid")).cpus(4).run();
    out.assert_pass();
    assert_eq!(feature(&out, "hypervisor"), Some(1), "{}", out.report());
    assert_eq!(
        out.field("cpuid: hypervisor ", "signature"),
        Some("KVMKVMKVM..."),
        "{}",
        out.report()
    );
    let last_level = out
        .lines()
        .filter(|l| l.starts_with("cpuid: topology "))
        .last()
        .unwrap_or("");
    assert!(
        last_level.contains(" logical=4 "),
        "leaf 0xB does not count 4 CPUs\n{}",
        out.report()
    );
    assert_eq!(
        out.field_u64("cpuid: leaf1 ", "logical_per_pkg"),
        Some(4),
        "{}",
        out.report()
    );
    // Cache leaf 4 must describe the same package: cores x threads per core = vCPUs.
    let threads = out
        .field_u64("cpuid: topology level=0", "logical")
        .unwrap_or(0);
    let caches: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("cpuid: cache "))
        .collect();
    assert!(!caches.is_empty(), "no cache leaves\n{}", out.report());
    for c in caches {
        let cores = c
            .split_whitespace()
            .find_map(|f| f.strip_prefix("cores_per_pkg="))
            .and_then(rvmm_tests::parse_num);
        assert_eq!(
            cores.map(|n| n * threads),
            Some(4),
            "leaf 4 disagrees with 4 vCPUs: {c}\n{}",
            out.report()
        );
    }
}

#[test]
#[ignore = "rvmm --cpu-model baseline still exposes xsave, AVX and TSX (found by this test)"]
fn baseline_model_hides_unportable_features() {
    let out = rvmm()
        .kernel(guest("cpuid"))
        .args(["--cpu-model", "baseline"])
        .run();
    out.assert_pass();
    for f in [
        "xsave",
        "osxsave",
        "avx",
        "avx2",
        "cmpxchg16b",
        "hle",
        "rtm",
    ] {
        assert_eq!(
            feature(&out, f),
            Some(0),
            "baseline exposes {f}\n{}",
            out.report()
        );
    }
    assert_eq!(feature(&out, "apic"), Some(1), "{}", out.report());
}
