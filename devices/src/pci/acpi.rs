//! ACPI description of the PCI root bridge: the MCFG table and DSDT AML (`_CRS`, `_PRT`).

use acpi_tables::aml;
use acpi_tables::Aml;

use super::{intx_gsi, PciWindows, CONFIG_IO_BASE, CONFIG_IO_SIZE, ECAM_BASE, ECAM_SIZE};

/// Last bus number the ECAM window covers.
const LAST_BUS: u8 = ((ECAM_SIZE >> 20) - 1) as u8;

/// The MCFG table (one ECAM entry: segment 0, buses 0–255 at [`ECAM_BASE`]).
pub fn mcfg(oem_id: [u8; 6], oem_table_id: [u8; 8]) -> Vec<u8> {
    let mut t = acpi_tables::mcfg::MCFG::new(oem_id, oem_table_id, 1);
    t.add_ecam(ECAM_BASE, 0, 0, LAST_BUS);
    let mut bytes = Vec::new();
    t.to_aml_bytes(&mut bytes);
    bytes
}

/// DSDT AML for `\_SB.PCI0` (the root bridge with its resource windows and INTx routing) and
/// `\_SB.MRES` (reserves the ECAM window, which Linux requires before it uses MCFG).
pub fn root_bridge_aml(windows: PciWindows) -> Vec<u8> {
    let bus = aml::AddressSpace::new_bus_number(0u16, u16::from(LAST_BUS));
    let cfg_io = aml::IO::new(
        CONFIG_IO_BASE as u16,
        CONFIG_IO_BASE as u16,
        1,
        CONFIG_IO_SIZE as u8,
    );
    let io_low = aml::AddressSpace::new_io(0u16, CONFIG_IO_BASE as u16 - 1, None);
    let io_high = aml::AddressSpace::new_io(0x0d00u16, 0xffff, None);
    let (b32, s32) = windows.mmio32;
    let mem32 = aml::AddressSpace::new_memory(
        aml::AddressSpaceCacheable::NotCacheable,
        true,
        b32 as u32,
        (b32 + s32 - 1) as u32,
        None,
    );
    let mem64 = windows.mmio64.map(|(b, s)| {
        aml::AddressSpace::new_memory(
            aml::AddressSpaceCacheable::NotCacheable,
            true,
            b,
            b + s - 1,
            None,
        )
    });
    let mut res: Vec<&dyn Aml> = vec![&bus, &cfg_io, &io_low, &io_high, &mem32];
    if let Some(m) = &mem64 {
        res.push(m);
    }
    let crs = aml::ResourceTemplate::new(res);

    // One _PRT entry per slot and pin: (address = slot << 16 | 0xffff, pin, source 0, GSI).
    let mut entries: Vec<(u32, u8, u32)> = Vec::new();
    for slot in 0..32u8 {
        for pin in 0..4u8 {
            entries.push((u32::from(slot) << 16 | 0xffff, pin, intx_gsi(slot, pin)));
        }
    }
    let zero = aml::ZERO;
    let pkgs: Vec<aml::Package> = entries
        .iter()
        .map(|(addr, pin, gsi)| aml::Package::new(vec![addr, pin, &zero, gsi]))
        .collect();
    let prt = aml::Package::new(pkgs.iter().map(|p| p as &dyn Aml).collect());

    let hid = aml::EISAName::new("PNP0A08");
    let cid = aml::EISAName::new("PNP0A03");
    let names = [
        aml::Name::new("_HID".into(), &hid),
        aml::Name::new("_CID".into(), &cid),
        aml::Name::new("_ADR".into(), &aml::ZERO),
        aml::Name::new("_SEG".into(), &aml::ZERO),
        aml::Name::new("_UID".into(), &aml::ZERO),
        aml::Name::new("_BBN".into(), &aml::ZERO),
        aml::Name::new("_CRS".into(), &crs),
        aml::Name::new("_PRT".into(), &prt),
    ];
    let pci0 = aml::Device::new(
        "\\_SB_.PCI0".into(),
        names.iter().map(|n| n as &dyn Aml).collect(),
    );
    let mres_hid = aml::EISAName::new("PNP0C02");
    let ecam = aml::Memory32Fixed::new(false, ECAM_BASE as u32, ECAM_SIZE as u32);
    let mres_crs = aml::ResourceTemplate::new(vec![&ecam]);
    let mres_names = [
        aml::Name::new("_HID".into(), &mres_hid),
        aml::Name::new("_CRS".into(), &mres_crs),
    ];
    let mres = aml::Device::new(
        "\\_SB_.MRES".into(),
        mres_names.iter().map(|n| n as &dyn Aml).collect(),
    );
    let mut bytes = Vec::new();
    pci0.to_aml_bytes(&mut bytes);
    mres.to_aml_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn mcfg_has_ecam_entry_and_checksum() {
        let t = mcfg(*b"RVMM  ", *b"RVMMMCFG");
        assert_eq!(&t[0..4], b"MCFG");
        assert_eq!(t.len(), 44 + 16);
        assert_eq!(
            u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize,
            t.len()
        );
        assert_eq!(t.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(u64::from_le_bytes(t[44..52].try_into().unwrap()), ECAM_BASE);
        assert_eq!((t[54], t[55]), (0, 255));
    }

    #[test]
    fn dsdt_describes_windows_and_routing() {
        let w = PciWindows::standard(1 << 30);
        let a = root_bridge_aml(w);
        assert!(find(&a, b"PCI0") && find(&a, b"_PRT") && find(&a, b"_CRS"));
        // DWordMemory min/max of the 32-bit window appear little-endian.
        assert!(find(&a, &0xc000_0000u32.to_le_bytes()));
        assert!(find(&a, &0xdfff_ffffu32.to_le_bytes()));
        // Slot 3 INTA routes to GSI 19: package (0x3ffff, 0, 0, 19).
        let mut pkg = vec![0x12, 0x0b, 0x04, 0x0c];
        pkg.extend_from_slice(&0x3ffffu32.to_le_bytes());
        pkg.extend_from_slice(&[0x00, 0x00, 0x0a, 19]);
        assert!(find(&a, &pkg), "_PRT entry for slot 3 INTA missing");
        assert!(find(&a, &ECAM_BASE.to_le_bytes()[..4]));
    }

    /// A DSDT holding `aml`, with a valid header and checksum.
    fn dsdt(aml: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(b"DSDT");
        t.extend_from_slice(&((36 + aml.len()) as u32).to_le_bytes());
        t.extend_from_slice(&[2, 0]);
        t.extend_from_slice(b"RVMM  RVMMDSDT");
        t.extend_from_slice(&1u32.to_le_bytes());
        t.extend_from_slice(b"RVMM");
        t.extend_from_slice(&1u32.to_le_bytes());
        t.extend_from_slice(aml);
        let sum = t.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        t[9] = 0u8.wrapping_sub(sum);
        t
    }

    #[test]
    fn iasl_disassembles_the_root_bridge() {
        let dir = tempfile::tempdir().unwrap();
        let aml = dir.path().join("dsdt.aml");
        std::fs::write(
            &aml,
            dsdt(&root_bridge_aml(PciWindows::standard((4 << 30) + 1))),
        )
        .unwrap();
        let out = std::process::Command::new("iasl")
            .arg("-d")
            .arg(&aml)
            .current_dir(dir.path())
            .output()
            .expect("iasl (acpica-tools) is needed: scripts/setup.sh installs it");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dsl = std::fs::read_to_string(dir.path().join("dsdt.dsl")).unwrap();
        for want in [
            "Device (\\_SB.PCI0)",
            "EisaId (\"PNP0A08\")",
            "EisaId (\"PNP0A03\")",
            "Name (_PRT, Package (0x80)",
            "0x0001FFFF, \n                Zero, \n                Zero, \n                0x11",
            "WordBusNumber",
            "0xC0000000",
            "0xDFFFFFFF",
            "QWordMemory",
            "0x0000000140000000", // 64-bit window at the first GiB boundary above RAM
            "Device (\\_SB.MRES)",
            "EisaId (\"PNP0C02\")",
            "0xE0000000",
        ] {
            assert!(dsl.contains(want), "disassembly lacks {want:?}:\n{dsl}");
        }
    }
}
