//! rvmm boot paths against the machine contract (docs/guest-interface.md), using the bootcheck
//! guest: bzImage through the 64-bit entry, PVH and plain ELF; boot_params/start info, e820 with
//! the PCI hole, command line, initrd contents and placement, ACPI RSDP and tables, CMOS sizes.

mod guest_checks;

use rvmm_tests::{fnv1a32, guest_image, rvmm, Format, Outcome};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn initrd_file(len: usize) -> (tempfile::NamedTempFile, u32) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let mut f = tempfile::NamedTempFile::new().expect("temp initrd");
    std::io::Write::write_all(&mut f, &data).expect("write initrd");
    (f, fnv1a32(&data))
}

fn boot(format: Format, memory: &str, initrd_len: usize) -> (Outcome, String) {
    let (initrd, hash) = initrd_file(initrd_len);
    let cmdline =
        format!("console=ttyS0 expect_initrd_size={initrd_len} expect_initrd_fnv={hash:#x}");
    let out = rvmm()
        .kernel(guest_image("bootcheck", format))
        .memory(memory)
        .initrd(initrd.path())
        .cmdline(&cmdline)
        .run();
    (out, cmdline)
}

/// RAM the contract promises for `mem` bytes: 0-0x9fc00, 1 MiB up to min(mem, 3 GiB), and the
/// rest above 4 GiB.
fn assert_contract_memory(out: &Outcome, mem: u64) {
    let low = 0x9fc00u64;
    let below_4g = low + mem.min(3 * GIB) - MIB;
    assert_eq!(
        out.field_u64("e820: entries", "ram_below_4g"),
        Some(below_4g),
        "{}",
        out.report()
    );
    assert_eq!(
        out.field_u64("e820: entries", "ram"),
        Some(low + mem - MIB),
        "{}",
        out.report()
    );
    let top = if mem > 3 * GIB {
        4 * GIB + (mem - 3 * GIB)
    } else {
        mem
    };
    assert_eq!(
        out.field_u64("e820: entries", "top"),
        Some(top),
        "{}",
        out.report()
    );
    assert!(
        out.lines()
            .any(|l| l == format!("e820: addr=0x0 size={low:#x} type=1")),
        "first RAM entry is not 0-0x9fc00\n{}",
        out.report()
    );
    // CMOS 0x34/0x35: 64 KiB units between 16 MiB and 4 GiB; 0x5b-0x5d: above 4 GiB.
    let ext16 = (mem.min(3 * GIB) - 16 * MIB) / (64 * 1024);
    assert_eq!(
        out.field_u64("cmos: ", "mem_above_16m_64k"),
        Some(ext16),
        "{}",
        out.report()
    );
    let above = mem.saturating_sub(3 * GIB) / (64 * 1024);
    assert_eq!(
        out.field_u64("cmos: ", "mem_above_4g_64k"),
        Some(above),
        "{}",
        out.report()
    );
}

fn assert_contract_acpi(out: &Outcome) {
    let boot = out.field_u64("acpi: ", "rsdp_boot").unwrap_or(0);
    let scan = out.field_u64("acpi: ", "rsdp_scan").unwrap_or(0);
    assert!(
        (0xe0000..0x100000).contains(&scan),
        "RSDP not in 0xe0000-0xfffff\n{}",
        out.report()
    );
    assert!(
        (0xe0000..0x100000).contains(&boot),
        "boot info RSDP not set/in range\n{}",
        out.report()
    );
    assert_eq!(
        out.field("acpi: root", "sig"),
        Some("XSDT"),
        "{}",
        out.report()
    );
    for l in out.lines().filter(|l| l.starts_with("acpi: table=")) {
        let addr = l
            .split_whitespace()
            .find_map(|f| f.strip_prefix("addr="))
            .and_then(rvmm_tests::parse_num);
        assert!(
            addr.is_some_and(|a| (0xe0000..0x100000).contains(&a)),
            "ACPI table outside 0xe0000-0xfffff: {l}\n{}",
            out.report()
        );
    }
    assert_eq!(
        out.field_u64("madt: ", "ioapic"),
        Some(0xfec0_0000),
        "{}",
        out.report()
    );
    // The ACPI area must be reserved in e820, or a kernel may reuse it as RAM.
    let reserved = e820(out)
        .into_iter()
        .any(|(a, s, t)| t != 1 && a <= 0xe0000 && a + s >= 0x100000);
    assert!(
        reserved,
        "0xe0000-0xfffff is not covered by a reserved e820 entry\n{}",
        out.report()
    );
}

/// The e820 entries the guest printed: (addr, size, type).
fn e820(out: &Outcome) -> Vec<(u64, u64, u64)> {
    out.lines()
        .filter(|l| l.starts_with("e820: addr="))
        .filter_map(|l| {
            let f = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .and_then(rvmm_tests::parse_num)
            };
            Some((f("addr=")?, f("size=")?, f("type=")?))
        })
        .collect()
}

#[test]
fn bzimage_64bit_entry_and_boot_params() {
    let (out, cmdline) = boot(Format::BzImage, "512M", 300_000);
    out.assert_pass();
    assert_eq!(
        out.field("bootcheck: ", "kind"),
        Some("64bit"),
        "{}",
        out.report()
    );
    assert_eq!(out.field("entry: ", "cs"), Some("0x10"), "{}", out.report());
    assert_eq!(out.field("entry: ", "ds"), Some("0x18"), "{}", out.report());
    assert_eq!(
        out.field("paging: ", "identity_4g"),
        Some("1"),
        "{}",
        out.report()
    );
    assert_eq!(
        out.line("cmdline: "),
        Some(cmdline.as_str()),
        "{}",
        out.report()
    );
    assert!(
        out.field_u64("setup: ", "type_of_loader").unwrap_or(0) != 0,
        "{}",
        out.report()
    );
    assert_contract_memory(&out, 512 * MIB);
    assert_contract_acpi(&out);
    assert_eq!(out.field_u64("madt: ", "cpus"), Some(1), "{}", out.report());
    assert!(
        out.field_u64("fadt: ", "pm1a_cnt").unwrap_or(0) != 0,
        "{}",
        out.report()
    );
}

#[test]
fn initrd_stays_below_initrd_addr_max() {
    // 1 GiB of RAM: the top of memory is above the guest's initrd_addr_max (0x37ffffff), so the
    // initrd must be placed lower; the guest checks placement, alignment and contents.
    let (out, _) = boot(Format::BzImage, "1G", 2 * MIB as usize);
    out.assert_pass();
    let addr = out.field_u64("initrd: ", "addr").unwrap_or(0);
    assert!(
        addr != 0 && addr + 2 * MIB <= 0x3800_0000,
        "{}",
        out.report()
    );
    assert_contract_memory(&out, GIB);
}

#[test]
fn memory_above_4g_skips_the_pci_hole() {
    let (out, _) = boot(Format::BzImage, "4G", 4096);
    out.assert_pass();
    assert_contract_memory(&out, 4 * GIB);
    assert_eq!(
        out.field_u64("e820: high_ram_probe", "ok"),
        Some(1),
        "{}",
        out.report()
    );
}

#[test]
fn pvh_entry_and_start_info() {
    let (out, cmdline) = boot(Format::Pvh, "512M", 100_000);
    guest_checks::pvh_booted(&out, &cmdline);
    assert_contract_memory(&out, 512 * MIB);
    assert_contract_acpi(&out);
}

#[test]
fn plain_elf_64bit_entry() {
    let (out, _) = boot(Format::Elf64, "512M", 4096);
    out.assert_pass();
    assert_eq!(
        out.field("bootcheck: ", "kind"),
        Some("64bit"),
        "{}",
        out.report()
    );
    assert_contract_memory(&out, 512 * MIB);
}

#[test]
fn default_memory_and_cmdline() {
    let out = rvmm()
        .kernel(guest_image("bootcheck", Format::BzImage))
        .run();
    out.assert_pass();
    assert_contract_memory(&out, 512 * MIB);
    let cmdline = out.line("cmdline: ").unwrap_or("");
    assert!(cmdline.contains("console=ttyS0"), "{}", out.report());
    assert_eq!(
        out.field_u64("initrd: ", "size"),
        Some(0),
        "{}",
        out.report()
    );
}

#[test]
fn relocatable_bzimage_loads_at_pref_address() {
    // Linked at 16 MiB, relocatable, pref_address 16 MiB: it only runs if loaded there.
    let out = rvmm()
        .kernel(guest_image("bootcheck", Format::BzImageReloc))
        .timeout(std::time::Duration::from_secs(15))
        .run();
    out.assert_pass();
    assert_eq!(
        out.field_u64("setup: relocatable", "loaded_at"),
        Some(0x100_0000),
        "{}",
        out.report()
    );
    assert_eq!(
        out.field("bootcheck: ", "kind"),
        Some("64bit"),
        "{}",
        out.report()
    );
}

#[test]
fn memory_as_a_plain_number_is_mib() {
    let out = rvmm()
        .kernel(guest_image("bootcheck", Format::BzImage))
        .memory("1024")
        .run();
    out.assert_pass();
    assert_contract_memory(&out, GIB);
}

#[test]
fn longest_cmdline_arrives_whole() {
    // cmdline_size is 2047 in the guest's header: a 2047-byte command line must arrive intact.
    let cmdline: String = (0..2047).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let out = rvmm()
        .kernel(guest_image("bootcheck", Format::BzImage))
        .cmdline(&cmdline)
        .run();
    out.assert_pass();
    assert_eq!(
        out.field_u64("cmdline_info: ", "len"),
        Some(2047),
        "{}",
        out.report()
    );
    let hash = u64::from(fnv1a32(cmdline.as_bytes()));
    assert_eq!(
        out.field_u64("cmdline_info: ", "fnv1a"),
        Some(hash),
        "{}",
        out.report()
    );
}
