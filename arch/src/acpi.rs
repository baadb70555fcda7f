//! ACPI tables: RSDP, XSDT, FADT (+FACS), DSDT with `\_S5`, MADT — and room for the tables and
//! AML that PCI support adds later (MCFG, the PCI root bridge).

use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;

use crate::layout::*;

/// OEM id written into every table.
pub const OEM_ID: [u8; 6] = *b"RVMM  ";
/// OEM table id written into every table.
pub const OEM_TABLE_ID: [u8; 8] = *b"RVMMVM  ";
/// CMOS register holding the century, advertised in the FADT.
pub const CMOS_CENTURY_REG: u8 = 0x32;

/// Errors building the tables.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AcpiError {
    /// The tables do not fit in the BIOS area.
    #[error("ACPI tables need {0} bytes but only {1} fit in 0xe0000-0xfffff")]
    TooLarge(usize, usize),
    /// More vCPUs than an 8-bit APIC ID MADT entry can describe.
    #[error("{0} vCPUs do not fit in the MADT's 8-bit APIC IDs (at most 255)")]
    TooManyCpus(u32),
}

/// What the tables describe.
#[derive(Default)]
pub struct AcpiConfig {
    /// Number of vCPUs; vCPU `i` has APIC ID `i`.
    pub cpus: u32,
    /// Extra AML appended inside the DSDT (for example `\_SB.PCI0`).
    pub dsdt_aml: Vec<u8>,
    /// Extra complete tables (for example MCFG) to be listed in the XSDT.
    pub extra_tables: Vec<Vec<u8>>,
}

/// The finished tables: one image to copy to [`ACPI_START`], with the RSDP first.
#[derive(Debug, Clone)]
pub struct AcpiTables {
    /// Guest address of the RSDP (equal to [`ACPI_START`]).
    pub rsdp_addr: u64,
    /// Bytes to write at `rsdp_addr`.
    pub image: Vec<u8>,
}

struct Image {
    bytes: Vec<u8>,
}

impl Image {
    /// Append `data` aligned to `align`, returning its guest address.
    fn push(&mut self, data: &[u8], align: usize) -> u64 {
        let start = self.bytes.len().div_ceil(align) * align;
        self.bytes.resize(start, 0);
        self.bytes.extend_from_slice(data);
        ACPI_START + start as u64
    }
}

fn to_bytes(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

fn io_gas(port: u16, bits: u8) -> GAS {
    let size = match bits {
        8 => AccessSize::ByteAccess,
        16 => AccessSize::WordAccess,
        _ => AccessSize::DwordAccess,
    };
    GAS::new(AddressSpace::SystemIo, bits, 0, size, u64::from(port))
}

/// `Device(\_SB.<name>)` for a legacy ISA device with a PNP id, its ports and IRQ.
fn isa_device(name: &str, hid: &str, uid: u8, ports: &[(u16, u8)], irq: u32) -> Vec<u8> {
    let ios: Vec<aml::IO> = ports
        .iter()
        .map(|&(base, len)| aml::IO::new(base, base, 1, len))
        .collect();
    let int = aml::Interrupt::new(true, true, false, false, irq);
    let mut res: Vec<&dyn Aml> = ios.iter().map(|i| i as &dyn Aml).collect();
    res.push(&int);
    let crs = aml::ResourceTemplate::new(res);
    let hid = aml::EISAName::new(hid);
    let n_hid = aml::Name::new("_HID".into(), &hid);
    let n_uid = aml::Name::new("_UID".into(), &uid);
    let n_crs = aml::Name::new("_CRS".into(), &crs);
    let dev = aml::Device::new(
        format!("\\_SB_.{name}").as_str().into(),
        vec![&n_hid, &n_uid, &n_crs],
    );
    to_bytes(&dev)
}

fn dsdt(extra: &[u8]) -> Vec<u8> {
    let mut t = Sdt::new(*b"DSDT", 36, 2, OEM_ID, OEM_TABLE_ID, 1);
    let s5 = aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&ACPI_S5_SLP_TYP, &ACPI_S5_SLP_TYP, &0u8, &0u8]),
    );
    t.append_slice(&to_bytes(&s5));
    // The legacy devices, so an OS binds them through ACPI rather than by probing.
    t.append_slice(&isa_device("COM1", "PNP0501", 1, &[(0x3f8, 8)], 4));
    t.append_slice(&isa_device(
        "KBD_",
        "PNP0303",
        0,
        &[(0x60, 1), (0x64, 1)],
        1,
    ));
    t.append_slice(&isa_device("RTC_", "PNP0B00", 0, &[(0x70, 2)], 8));
    if !extra.is_empty() {
        t.append_slice(extra);
    }
    t.as_slice().to_vec()
}

fn facs() -> Vec<u8> {
    to_bytes(&acpi_tables::facs::FACS::new())
}

fn fadt(dsdt_addr: u64, facs_addr: u64) -> Vec<u8> {
    let mut b = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, 1)
        .dsdt_64(dsdt_addr)
        .firmware_ctrl_64(facs_addr)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::SlpButton)
        .flag(Flags::TmrValExt)
        .flag(Flags::ResetRegSup);
    b.sci_int = u16::from(ACPI_SCI_IRQ).into();
    // SMI_CMD = 0: the machine is always in ACPI mode, no handover needed.
    b.smi_cmd = 0.into();
    b.pm1a_evt_blk = u32::from(ACPI_PM1A_EVT).into();
    b.pm1a_cnt_blk = u32::from(ACPI_PM1A_CNT).into();
    b.pm_tmr_blk = u32::from(ACPI_PM_TMR).into();
    b.pm1_evt_len = 4;
    b.pm1_cnt_len = 2;
    b.pm_tmr_len = 4;
    b.x_pm1a_evt_blk = io_gas(ACPI_PM1A_EVT, 32);
    b.x_pm1a_cnt_blk = io_gas(ACPI_PM1A_CNT, 16);
    b.x_pm_tmr_blk = io_gas(ACPI_PM_TMR, 32);
    b.century = CMOS_CENTURY_REG;
    // IA-PC boot architecture: legacy devices and an 8042 are present.
    b.iapc_boot_arch = 0x3.into();
    b.reset_reg = io_gas(ACPI_RESET_REG, 8);
    b.reset_value = ACPI_RESET_VALUE;
    to_bytes(&b.finalize())
}

fn madt(cpus: u32) -> Vec<u8> {
    let mut t = Sdt::new(*b"APIC", 36, 4, OEM_ID, OEM_TABLE_ID, 1);
    let mut body = Vec::new();
    body.extend_from_slice(&(LAPIC_START as u32).to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT: dual 8259s present
    for i in 0..cpus {
        // Processor Local APIC: type 0, length 8, UID, APIC ID, flags = enabled.
        body.extend_from_slice(&[0, 8, i as u8, i as u8]);
        body.extend_from_slice(&1u32.to_le_bytes());
    }
    // I/O APIC: type 1, length 12, id 0, reserved, address, GSI base 0.
    body.extend_from_slice(&[1, 12, 0, 0]);
    body.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    // Interrupt source overrides: the PIT's IRQ 0 is IOAPIC pin 2; the SCI is level/high.
    for (irq, gsi, flags) in [(0u8, 2u32, 0u16), (ACPI_SCI_IRQ, 9, 0xd)] {
        body.extend_from_slice(&[2, 10, 0, irq]);
        body.extend_from_slice(&gsi.to_le_bytes());
        body.extend_from_slice(&flags.to_le_bytes());
    }
    // Local APIC NMI: all processors (0xff), LINT1, flags conform.
    body.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]);
    t.append_slice(&body);
    t.as_slice().to_vec()
}

/// Build every table for `cfg`.
pub fn build(cfg: &AcpiConfig) -> Result<AcpiTables, AcpiError> {
    if cfg.cpus > 255 {
        return Err(AcpiError::TooManyCpus(cfg.cpus));
    }
    let mut img = Image { bytes: Vec::new() };
    // RSDP first so it sits at ACPI_START, 16-byte aligned, where the legacy scan finds it;
    // its XSDT address is patched in at the end.
    img.push(&[0u8; 36], 16);
    let dsdt_addr = img.push(&dsdt(&cfg.dsdt_aml), 16);
    let facs_addr = img.push(&facs(), 64);
    let fadt_addr = img.push(&fadt(dsdt_addr, facs_addr), 16);
    let madt_addr = img.push(&madt(cfg.cpus), 16);
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, 1);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    for t in &cfg.extra_tables {
        let a = img.push(t, 16);
        xsdt.add_entry(a);
    }
    let xsdt_addr = img.push(&to_bytes(&xsdt), 16);
    let rsdp = to_bytes(&Rsdp::new(OEM_ID, xsdt_addr));
    img.bytes[..rsdp.len()].copy_from_slice(&rsdp);
    let room = (ACPI_END - ACPI_START) as usize;
    if img.bytes.len() > room {
        return Err(AcpiError::TooLarge(img.bytes.len(), room));
    }
    Ok(AcpiTables {
        rsdp_addr: ACPI_START,
        image: img.bytes,
    })
}

/// The 8-bit sum of `data`; a valid ACPI table sums to zero.
pub fn checksum(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Parsed<'a> {
        img: &'a [u8],
    }

    impl<'a> Parsed<'a> {
        fn at(&self, addr: u64) -> &'a [u8] {
            &self.img[(addr - ACPI_START) as usize..]
        }
        fn table(&self, addr: u64) -> &'a [u8] {
            let t = self.at(addr);
            let len = u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize;
            &t[..len]
        }
        fn u32(b: &[u8], o: usize) -> u32 {
            u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
        }
        fn u64(b: &[u8], o: usize) -> u64 {
            u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
        }
        fn xsdt_entries(&self) -> Vec<u64> {
            let rsdp = self.at(ACPI_START);
            let x = self.table(Self::u64(rsdp, 24));
            assert_eq!(&x[..4], b"XSDT");
            (36..x.len()).step_by(8).map(|o| Self::u64(x, o)).collect()
        }
        fn find(&self, sig: &[u8; 4]) -> &'a [u8] {
            let a = self
                .xsdt_entries()
                .into_iter()
                .find(|a| &self.at(*a)[..4] == sig)
                .unwrap_or_else(|| panic!("{sig:?} missing"));
            self.table(a)
        }
    }

    fn tables(cpus: u32) -> AcpiTables {
        build(&AcpiConfig {
            cpus,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn rsdp_is_valid_and_findable_by_the_legacy_scan() {
        let t = tables(1);
        assert_eq!(t.rsdp_addr % 16, 0);
        assert!((0xe0000..0x100000).contains(&t.rsdp_addr));
        let r = &t.image[..36];
        assert_eq!(&r[..8], b"RSD PTR ");
        assert_eq!(checksum(&r[..20]), 0);
        assert_eq!(checksum(r), 0);
        assert_eq!(r[15], 2, "revision 2 (XSDT)");
        assert!(t.image.len() <= 0x20000);
    }

    #[test]
    fn every_table_checksums_to_zero() {
        let t = tables(4);
        let p = Parsed { img: &t.image };
        let entries = p.xsdt_entries();
        assert_eq!(entries.len(), 2);
        for a in entries {
            assert_eq!(checksum(p.table(a)), 0, "{:?}", &p.at(a)[..4]);
        }
        let fadt = p.find(b"FACP");
        let dsdt = p.table(Parsed::u64(fadt, 140));
        assert_eq!(&dsdt[..4], b"DSDT");
        assert_eq!(checksum(dsdt), 0);
        let facs = p.at(Parsed::u64(fadt, 132));
        assert_eq!(&facs[..4], b"FACS");
    }

    #[test]
    fn fadt_points_at_our_pm_ports_and_reset_register() {
        let t = tables(1);
        let p = Parsed { img: &t.image };
        let f = p.find(b"FACP");
        assert_eq!(u16::from_le_bytes([f[46], f[47]]), 9, "SCI_INT");
        assert_eq!(Parsed::u32(f, 48), 0, "SMI_CMD");
        assert_eq!(Parsed::u32(f, 56), 0x600, "PM1a_EVT_BLK");
        assert_eq!(Parsed::u32(f, 64), 0x604, "PM1a_CNT_BLK");
        assert_eq!(Parsed::u32(f, 76), 0x608, "PM_TMR_BLK");
        assert_eq!((f[88], f[89], f[91]), (4, 2, 4));
        assert_eq!(f[108], 0x32, "century");
        assert_ne!(Parsed::u32(f, 112) & (1 << 10), 0, "RESET_REG_SUP");
        assert_eq!(f[116], 1, "reset reg in system I/O");
        assert_eq!(Parsed::u64(f, 120), 0x60c);
        assert_eq!(f[128], 1, "reset value");
        assert_eq!(Parsed::u32(f, 112) & (1 << 20), 0, "not hardware-reduced");
    }

    #[test]
    fn dsdt_has_s5_with_our_sleep_type() {
        let t = tables(1);
        let p = Parsed { img: &t.image };
        let f = p.find(b"FACP");
        let d = p.table(Parsed::u64(f, 140));
        let pos = d.windows(4).position(|w| w == b"_S5_").expect("_S5_");
        // NameOp, name, PackageOp, PkgLength, NumElements, BytePrefix 5 ...
        assert_eq!(d[pos - 1], 0x08);
        assert_eq!(d[pos + 4], 0x12);
        assert_eq!(d[pos + 7], 0x0a);
        assert_eq!(d[pos + 8], ACPI_S5_SLP_TYP);
    }

    #[test]
    fn madt_has_one_enabled_lapic_per_cpu_an_ioapic_and_overrides() {
        for cpus in [1u32, 2, 7] {
            let t = tables(cpus);
            let p = Parsed { img: &t.image };
            let m = p.find(b"APIC");
            assert_eq!(Parsed::u32(m, 36), 0xfee0_0000);
            let mut off = 44;
            let mut lapics = Vec::new();
            let mut ioapic = None;
            let mut overrides = Vec::new();
            while off < m.len() {
                let (ty, len) = (m[off], m[off + 1] as usize);
                assert!(len >= 2);
                match ty {
                    0 => {
                        assert_eq!(Parsed::u32(m, off + 4) & 1, 1);
                        lapics.push(m[off + 3]);
                    }
                    1 => ioapic = Some(Parsed::u32(m, off + 4)),
                    2 => overrides.push((m[off + 3], Parsed::u32(m, off + 4))),
                    _ => {}
                }
                off += len;
            }
            assert_eq!(off, m.len());
            assert_eq!(lapics, (0..cpus as u8).collect::<Vec<_>>());
            assert_eq!(ioapic, Some(0xfec0_0000));
            assert!(overrides.contains(&(0, 2)));
        }
        assert_eq!(
            build(&AcpiConfig {
                cpus: 256,
                ..Default::default()
            })
            .err(),
            Some(AcpiError::TooManyCpus(256))
        );
    }

    #[test]
    fn dsdt_describes_the_legacy_devices() {
        let t = tables(1);
        let p = Parsed { img: &t.image };
        let d = p.table(Parsed::u64(p.find(b"FACP"), 140));
        for name in [&b"COM1"[..], b"KBD_", b"RTC_"] {
            assert!(d.windows(4).any(|w| w == name), "{name:?}");
        }
        // IO descriptor for 0x3f8, 8 ports, and an extended IRQ descriptor for IRQ 4.
        assert!(d.windows(8).any(|w| w == [0x47, 1, 0xf8, 3, 0xf8, 3, 1, 8]));
        assert!(d.windows(9).any(|w| w == [0x89, 6, 0, 0x3, 1, 4, 0, 0, 0]));
    }

    #[test]
    fn extra_tables_and_aml_are_included() {
        let mut mcfg = Sdt::new(*b"MCFG", 60, 1, OEM_ID, OEM_TABLE_ID, 1);
        mcfg.write_u64(44, PCIE_ECAM_START);
        let t = build(&AcpiConfig {
            cpus: 1,
            dsdt_aml: to_bytes(&aml::Name::new("TEST".into(), &0x1234u16)),
            extra_tables: vec![mcfg.as_slice().to_vec()],
        })
        .unwrap();
        let p = Parsed { img: &t.image };
        let m = p.find(b"MCFG");
        assert_eq!(checksum(m), 0);
        assert_eq!(Parsed::u64(m, 44), PCIE_ECAM_START);
        let d = p.table(Parsed::u64(p.find(b"FACP"), 140));
        assert!(d.windows(4).any(|w| w == b"TEST"));
        assert_eq!(checksum(d), 0);
    }
}
