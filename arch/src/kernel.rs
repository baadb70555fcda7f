//! Recognising and taking apart kernel images: bzImage (Linux boot protocol) and ELF
//! (32- or 64-bit, with or without the Xen PVH entry note).

use linux_loader::loader::bootparam::setup_header;
use vm_memory::ByteValued;

use crate::bootparams::HDRS_MAGIC;
use crate::layout::HIMEM_START;

/// Offset of the setup header in a bzImage.
pub const SETUP_HEADER_OFFSET: usize = 0x1f1;
/// Offset of the 64-bit entry point from the protected-mode kernel's start.
pub const STARTUP_64_OFFSET: u64 = 0x200;
/// ELF note type of the PVH 32-bit entry point, in notes named "Xen".
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const LOADED_HIGH: u8 = 0x1;
const XLF_KERNEL_64: u16 = 0x1;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;

/// Why an image cannot be booted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    /// Neither an ELF file nor a bzImage.
    #[error("not a kernel image: no ELF magic and no bzImage \"HdrS\" header at 0x202")]
    NotAKernel,
    /// A bzImage whose boot protocol cannot be entered in 64-bit mode.
    #[error(
        "bzImage boot protocol {0:#06x} (xloadflags {1:#x}) has no 64-bit entry; rvmm needs \
         protocol 2.12 or later with XLF_KERNEL_64 (a Linux 3.8+ x86_64 kernel)"
    )]
    No64BitEntry(u16, u16),
    /// A bzImage that does not load at 1 MiB.
    #[error(
        "bzImage is not a high-loading (LOADED_HIGH) kernel; zImage kernels are not supported"
    )]
    NotLoadedHigh,
    /// The file ends before the header says it should.
    #[error("kernel image is truncated: {0}")]
    Truncated(&'static str),
    /// A malformed ELF file.
    #[error("bad ELF kernel: {0}")]
    BadElf(&'static str),
}

/// One piece of an ELF image to copy into guest memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Guest-physical load address.
    pub paddr: u64,
    /// Bytes from the file.
    pub data: &'a [u8],
    /// Size in memory (the tail past `data` is zeroed).
    pub mem_size: u64,
}

/// A parsed kernel image.
#[derive(Debug, Clone)]
pub enum KernelImage<'a> {
    /// A bzImage: the setup header and the protected-mode kernel.
    BzImage {
        /// Setup header as found in the image.
        hdr: setup_header,
        /// The protected-mode kernel (everything after the setup sectors).
        payload: &'a [u8],
    },
    /// An ELF vmlinux.
    Elf {
        /// Loadable segments.
        segments: Vec<Segment<'a>>,
        /// `e_entry`.
        entry: u64,
        /// The PVH 32-bit entry, if the image has a `XEN_ELFNOTE_PHYS32_ENTRY` note.
        pvh_entry: Option<u64>,
    },
}

impl KernelImage<'_> {
    /// Guest address the bzImage's protected-mode kernel is loaded at: `pref_address` for a
    /// relocatable kernel that names one, else 1 MiB.
    pub fn bzimage_load_addr(hdr: &setup_header) -> u64 {
        if hdr.version >= 0x020a && hdr.relocatable_kernel != 0 && hdr.pref_address >= HIMEM_START {
            hdr.pref_address
        } else {
            HIMEM_START
        }
    }

    /// The guest-physical range `[start, end)` the kernel occupies once loaded (for a bzImage
    /// including the room it needs to decompress itself, `init_size`).
    pub fn footprint(&self) -> (u64, u64) {
        match self {
            KernelImage::BzImage { hdr, payload } => {
                let start = Self::bzimage_load_addr(hdr);
                let size = if hdr.version >= 0x020a {
                    u64::from(hdr.init_size).max(payload.len() as u64)
                } else {
                    payload.len() as u64
                };
                (start, start.saturating_add(size))
            }
            KernelImage::Elf { segments, .. } => {
                let start = segments.iter().map(|s| s.paddr).min().unwrap_or(0);
                let end = segments
                    .iter()
                    .map(|s| s.paddr.saturating_add(s.mem_size))
                    .max()
                    .unwrap_or(0);
                (start, end)
            }
        }
    }
}

/// Identify and take apart `bytes`.
pub fn parse(bytes: &[u8]) -> Result<KernelImage<'_>, KernelError> {
    if bytes.starts_with(b"\x7fELF") {
        return parse_elf(bytes);
    }
    let hdr_size = std::mem::size_of::<setup_header>();
    if bytes.len() < SETUP_HEADER_OFFSET + hdr_size {
        return Err(KernelError::NotAKernel);
    }
    let mut hdr = setup_header::default();
    hdr.as_mut_slice()
        .copy_from_slice(&bytes[SETUP_HEADER_OFFSET..SETUP_HEADER_OFFSET + hdr_size]);
    if hdr.header != HDRS_MAGIC {
        return Err(KernelError::NotAKernel);
    }
    if hdr.version < 0x020c || hdr.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(KernelError::No64BitEntry(hdr.version, hdr.xloadflags));
    }
    if hdr.loadflags & LOADED_HIGH == 0 {
        return Err(KernelError::NotLoadedHigh);
    }
    let sects = if hdr.setup_sects == 0 {
        4
    } else {
        usize::from(hdr.setup_sects)
    };
    let payload_start = (sects + 1) * 512;
    if bytes.len() <= payload_start {
        return Err(KernelError::Truncated(
            "no protected-mode kernel after the setup sectors",
        ));
    }
    let payload = &bytes[payload_start..];
    // syssize counts 16-byte paragraphs, rounded up: a shorter payload is a cut-off file whose
    // guest would run into memory that was never loaded.
    let syssize = u64::from(hdr.syssize);
    if (payload.len() as u64).saturating_add(15) < syssize.saturating_mul(16) {
        return Err(KernelError::Truncated(
            "the protected-mode kernel is shorter than the header's syssize",
        ));
    }
    Ok(KernelImage::BzImage { hdr, payload })
}

fn rd_u16(b: &[u8], o: usize) -> Result<u16, KernelError> {
    b.get(o..o + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(KernelError::Truncated("ELF header"))
}

fn rd_u32(b: &[u8], o: usize) -> Result<u32, KernelError> {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(KernelError::Truncated("ELF header"))
}

fn rd_u64(b: &[u8], o: usize) -> Result<u64, KernelError> {
    b.get(o..o + 8)
        .map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
        .ok_or(KernelError::Truncated("ELF header"))
}

struct Phdr {
    kind: u32,
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

fn parse_elf(b: &[u8]) -> Result<KernelImage<'_>, KernelError> {
    let class = *b.get(4).ok_or(KernelError::Truncated("ELF header"))?;
    if b.get(5) != Some(&1) {
        return Err(KernelError::BadElf("not little-endian"));
    }
    let machine = rd_u16(b, 0x12)?;
    if machine != 3 && machine != 62 {
        return Err(KernelError::BadElf("not an x86 (EM_386/EM_X86_64) image"));
    }
    let is64 = match class {
        1 => false,
        2 => true,
        _ => return Err(KernelError::BadElf("unknown ELF class")),
    };
    let (entry, phoff, phentsize, phnum) = if is64 {
        (
            rd_u64(b, 0x18)?,
            rd_u64(b, 0x20)?,
            rd_u16(b, 0x36)?,
            rd_u16(b, 0x38)?,
        )
    } else {
        (
            u64::from(rd_u32(b, 0x18)?),
            u64::from(rd_u32(b, 0x1c)?),
            rd_u16(b, 0x2a)?,
            rd_u16(b, 0x2c)?,
        )
    };
    let want = if is64 { 56 } else { 32 };
    if usize::from(phentsize) != want {
        return Err(KernelError::BadElf("unexpected program header size"));
    }
    let mut phdrs = Vec::new();
    for i in 0..u64::from(phnum) {
        let o = phoff
            .checked_add(i * u64::from(phentsize))
            .and_then(|o| usize::try_from(o).ok())
            .ok_or(KernelError::BadElf("program header offset overflows"))?;
        if o.checked_add(want).is_none_or(|end| end > b.len()) {
            return Err(KernelError::Truncated(
                "program headers run past the end of the file",
            ));
        }
        phdrs.push(if is64 {
            Phdr {
                kind: rd_u32(b, o)?,
                offset: rd_u64(b, o + 8)?,
                paddr: rd_u64(b, o + 24)?,
                filesz: rd_u64(b, o + 32)?,
                memsz: rd_u64(b, o + 40)?,
                align: rd_u64(b, o + 48)?,
            }
        } else {
            Phdr {
                kind: rd_u32(b, o)?,
                offset: u64::from(rd_u32(b, o + 4)?),
                paddr: u64::from(rd_u32(b, o + 12)?),
                filesz: u64::from(rd_u32(b, o + 16)?),
                memsz: u64::from(rd_u32(b, o + 20)?),
                align: u64::from(rd_u32(b, o + 28)?),
            }
        });
    }
    let file_range = |p: &Phdr| -> Result<&[u8], KernelError> {
        let start = usize::try_from(p.offset).map_err(|_| KernelError::BadElf("offset"))?;
        let len = usize::try_from(p.filesz).map_err(|_| KernelError::BadElf("size"))?;
        start
            .checked_add(len)
            .and_then(|end| b.get(start..end))
            .ok_or(KernelError::Truncated(
                "a segment runs past the end of the file",
            ))
    };
    let mut segments = Vec::new();
    let mut pvh_entry = None;
    for p in &phdrs {
        match p.kind {
            PT_LOAD => {
                if p.filesz > p.memsz {
                    return Err(KernelError::BadElf(
                        "segment file size exceeds its memory size",
                    ));
                }
                if p.paddr.checked_add(p.memsz).is_none() {
                    return Err(KernelError::BadElf("segment address overflows"));
                }
                segments.push(Segment {
                    paddr: p.paddr,
                    data: file_range(p)?,
                    mem_size: p.memsz,
                });
            }
            PT_NOTE => {
                if let Some(e) = find_pvh_note(file_range(p)?, p.align) {
                    pvh_entry = Some(e);
                }
            }
            _ => {}
        }
    }
    if segments.is_empty() {
        return Err(KernelError::BadElf("no loadable (PT_LOAD) segments"));
    }
    Ok(KernelImage::Elf {
        segments,
        entry,
        pvh_entry,
    })
}

/// Scan a PT_NOTE segment for the Xen PHYS32_ENTRY note.
fn find_pvh_note(notes: &[u8], align: u64) -> Option<u64> {
    let pad = if align == 8 { 8 } else { 4 };
    let up = |n: usize| n.div_ceil(pad) * pad;
    let mut o = 0usize;
    while o + 12 <= notes.len() {
        let namesz = rd_u32(notes, o).ok()? as usize;
        let descsz = rd_u32(notes, o + 4).ok()? as usize;
        let kind = rd_u32(notes, o + 8).ok()?;
        let name_start = o + 12;
        let desc_start = name_start.checked_add(up(namesz))?;
        let next = desc_start.checked_add(up(descsz))?;
        let name = notes.get(name_start..name_start + namesz)?;
        if kind == XEN_ELFNOTE_PHYS32_ENTRY && name.starts_with(b"Xen") && descsz >= 4 {
            return rd_u32(notes, desc_start).ok().map(u64::from);
        }
        o = next;
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal bzImage: header fields at their protocol offsets, then the payload.
    pub fn fake_bzimage(version: u16, payload: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 5 * 512];
        img[0x1f1] = 4; // setup_sects
        img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        img[0x211] = LOADED_HIGH;
        img[0x22c..0x230].copy_from_slice(&0x37ff_ffffu32.to_le_bytes());
        img[0x236..0x238].copy_from_slice(&XLF_KERNEL_64.to_le_bytes());
        img[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
        img.extend_from_slice(payload);
        img
    }

    /// A minimal ELF64 with one PT_LOAD at `paddr` and optionally a PVH note.
    pub fn fake_elf64(paddr: u64, code: &[u8], pvh: Option<u32>) -> Vec<u8> {
        let mut note = Vec::new();
        if let Some(e) = pvh {
            note.extend_from_slice(&4u32.to_le_bytes());
            note.extend_from_slice(&4u32.to_le_bytes());
            note.extend_from_slice(&XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
            note.extend_from_slice(b"Xen\0");
            note.extend_from_slice(&e.to_le_bytes());
        }
        let phnum = if pvh.is_some() { 2u16 } else { 1 };
        let data_off = 64 + 56 * u64::from(phnum);
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[0x10..0x12].copy_from_slice(&2u16.to_le_bytes());
        b[0x12..0x14].copy_from_slice(&62u16.to_le_bytes());
        b[0x18..0x20].copy_from_slice(&paddr.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&phnum.to_le_bytes());
        let ph = |kind: u32, off: u64, addr: u64, filesz: u64, memsz: u64| {
            let mut p = vec![0u8; 56];
            p[0..4].copy_from_slice(&kind.to_le_bytes());
            p[8..16].copy_from_slice(&off.to_le_bytes());
            p[16..24].copy_from_slice(&addr.to_le_bytes());
            p[24..32].copy_from_slice(&addr.to_le_bytes());
            p[32..40].copy_from_slice(&filesz.to_le_bytes());
            p[40..48].copy_from_slice(&memsz.to_le_bytes());
            p[48..56].copy_from_slice(&4u64.to_le_bytes());
            p
        };
        b.extend(ph(
            PT_LOAD,
            data_off,
            paddr,
            code.len() as u64,
            code.len() as u64 + 0x100,
        ));
        if pvh.is_some() {
            b.extend(ph(
                PT_NOTE,
                data_off + code.len() as u64,
                0,
                note.len() as u64,
                0,
            ));
        }
        b.extend_from_slice(code);
        b.extend_from_slice(&note);
        b
    }

    #[test]
    fn bzimage_is_recognised_and_split_after_the_setup_sectors() {
        let img = fake_bzimage(0x020f, b"KERNEL");
        match parse(&img).unwrap() {
            KernelImage::BzImage { hdr, payload } => {
                assert_eq!(payload, b"KERNEL");
                assert_eq!({ hdr.version }, 0x020f);
                assert_eq!({ hdr.cmdline_size }, 2047);
                assert_eq!(KernelImage::bzimage_load_addr(&hdr), 0x100000);
            }
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn relocatable_bzimage_loads_at_pref_address() {
        let mut img = fake_bzimage(0x020f, &[0x90; 16]);
        img[0x234] = 1; // relocatable_kernel
        img[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes());
        img[0x260..0x264].copy_from_slice(&0x40_0000u32.to_le_bytes()); // init_size
        let k = parse(&img).unwrap();
        assert_eq!(k.footprint(), (0x100_0000, 0x140_0000));
    }

    #[test]
    fn old_or_32_bit_only_bzimages_are_refused() {
        assert_eq!(
            parse(&fake_bzimage(0x020b, b"x")).err(),
            Some(KernelError::No64BitEntry(0x020b, 1))
        );
        let mut img = fake_bzimage(0x020f, b"x");
        img[0x236] = 0;
        assert!(matches!(parse(&img), Err(KernelError::No64BitEntry(..))));
        let mut img = fake_bzimage(0x020f, b"x");
        img[0x211] = 0;
        assert_eq!(parse(&img).err(), Some(KernelError::NotLoadedHigh));
        assert!(matches!(
            parse(&fake_bzimage(0x020f, b"")),
            Err(KernelError::Truncated(_))
        ));
    }

    #[test]
    fn bzimage_shorter_than_its_syssize_is_truncated() {
        let mut img = fake_bzimage(0x020f, &[0x90; 64]);
        img[0x1f4..0x1f8].copy_from_slice(&4u32.to_le_bytes()); // 64 bytes: exactly present
        assert!(parse(&img).is_ok());
        img[0x1f4..0x1f8].copy_from_slice(&5u32.to_le_bytes()); // 80 bytes claimed, 64 there
        assert!(matches!(parse(&img), Err(KernelError::Truncated(_))));
    }

    #[test]
    fn garbage_is_not_a_kernel() {
        assert_eq!(parse(b"").err(), Some(KernelError::NotAKernel));
        assert_eq!(parse(&[0u8; 8192]).err(), Some(KernelError::NotAKernel));
        assert_eq!(
            parse(b"#!/bin/sh\necho hi\n").err(),
            Some(KernelError::NotAKernel)
        );
    }

    #[test]
    fn elf_with_and_without_pvh_note() {
        let img = fake_elf64(0x100000, b"\xf4\xf4", Some(0x100001));
        match parse(&img).unwrap() {
            KernelImage::Elf {
                segments,
                entry,
                pvh_entry,
            } => {
                assert_eq!(entry, 0x100000);
                assert_eq!(pvh_entry, Some(0x100001));
                assert_eq!(segments.len(), 1);
                assert_eq!(segments[0].data, b"\xf4\xf4");
                assert_eq!(segments[0].mem_size, 0x102);
            }
            k => panic!("{k:?}"),
        }
        let img = fake_elf64(0x200000, b"\xf4", None);
        let k = parse(&img).unwrap();
        assert!(matches!(
            k,
            KernelImage::Elf {
                pvh_entry: None,
                entry: 0x200000,
                ..
            }
        ));
        assert_eq!(k.footprint(), (0x200000, 0x200101));
    }

    #[test]
    fn malformed_elf_is_refused_not_panicked_on() {
        let good = fake_elf64(0x100000, b"\xf4\xf4\xf4\xf4", Some(0x100000));
        // Truncate at every length: never a panic, always an error or a valid parse.
        for n in 0..good.len() {
            let _ = parse(&good[..n]);
        }
        let mut bad = good.clone();
        bad[0x38] = 0xff; // phnum way past the file
        assert!(matches!(parse(&bad), Err(KernelError::Truncated(_))));
        let mut bad = good.clone();
        bad[0x12] = 40; // EM_ARM
        assert!(matches!(parse(&bad), Err(KernelError::BadElf(_))));
        let mut bad = good.clone();
        // filesz > memsz in the PT_LOAD header.
        bad[64 + 32..64 + 40].copy_from_slice(&0x1000u64.to_le_bytes());
        assert!(parse(&bad).is_err());
    }
}
