//! rvmm's COM1 → stdout path loses, duplicates and reorders nothing under a burst of output
//! (300 lines, ~16 KiB: each byte costs two port exits, ~90 µs on software-nested KVM).

use rvmm_tests::{fnv1a32, guest, rvmm};

#[test]
fn serial_burst_arrives_intact() {
    let out = rvmm()
        .kernel(guest("flood"))
        .cmdline("flood_lines=300")
        .run();
    out.assert_pass();
    // Recompute the guest's chain over the lines we received (the guest hashes "...\n").
    let mut h = 0x811c_9dc5u32;
    let mut n = 0u32;
    for line in out
        .lines()
        .filter(|l| l.starts_with("flood: ") && !l.starts_with("flood: done"))
    {
        let expected = format!("flood: {n:06} the quick brown fox {h:08x}");
        assert_eq!(
            line,
            expected,
            "line {n} damaged\n{}",
            &out.report()[..2000.min(out.report().len())]
        );
        h ^= fnv1a32(format!("{line}\n").as_bytes());
        n += 1;
    }
    assert_eq!(n, 300, "lines lost");
    assert_eq!(
        out.field_u64("flood: done", "hash"),
        Some(u64::from(h)),
        "{}",
        out.stderr
    );
}
