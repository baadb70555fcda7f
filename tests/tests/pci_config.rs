//! rvmm PCI configuration space: bus 0 enumerates through 0xcf8/0xcfc and through the ECAM the
//! MCFG table describes (0xE0000000 per the contract), and both agree.

use rvmm_tests::{guest, rvmm};

#[test]
fn legacy_and_ecam_config_space_agree() {
    let out = rvmm().kernel(guest("pcienum")).run();
    out.assert_pass();
    assert_eq!(
        out.field_u64("pci: ", "ecam"),
        Some(0xe000_0000),
        "{}",
        out.report()
    );
    assert!(
        out.field_u64("pci: ", "functions").unwrap_or(0) >= 1,
        "{}",
        out.report()
    );
}
