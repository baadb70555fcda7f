//! Response data of the MMC/SPC commands a CD-ROM answers: INQUIRY, MODE SENSE pages, READ TOC,
//! GET CONFIGURATION, GET EVENT STATUS NOTIFICATION, disc and track information. Pure
//! formatting from the drive's state; the caller cuts the result to the allocation length.

/// Largest data a CD can hold (~800 MB); bigger images are presented as DVD-ROM.
const CD_MAX_BLOCKS: u64 = 404_849;
/// MMC profile numbers.
pub(super) const PROFILE_CDROM: u16 = 0x0008;
/// MMC profile number of DVD-ROM.
pub(super) const PROFILE_DVDROM: u16 = 0x0010;

/// The current profile for a medium of `blocks` 2048-byte blocks (0 = no medium).
pub(super) fn profile(blocks: Option<u64>) -> u16 {
    match blocks {
        None => 0,
        Some(b) if b > CD_MAX_BLOCKS => PROFILE_DVDROM,
        Some(_) => PROFILE_CDROM,
    }
}

/// Standard INQUIRY data: peripheral type 5 (CD/DVD), removable, SPC-3.
pub(super) fn inquiry_standard() -> Vec<u8> {
    let mut d = vec![0u8; 36];
    d[0] = 0x05;
    d[1] = 0x80;
    d[2] = 0x05;
    d[3] = 0x02;
    d[4] = 31;
    d[8..16].copy_from_slice(b"RVMM    ");
    d[16..32].copy_from_slice(b"CD-ROM          ");
    d[32..36].copy_from_slice(b"0.1 ");
    d
}

/// Vital product data pages 0x00, 0x80 and 0x83; `None` for others.
pub(super) fn inquiry_vpd(page: u8, serial: &str) -> Option<Vec<u8>> {
    let body: Vec<u8> = match page {
        0x00 => vec![0x00, 0x80, 0x83],
        0x80 => serial.as_bytes().to_vec(),
        0x83 => {
            // One T10 vendor ID designator, ASCII.
            let id = format!("RVMM    {serial}");
            let mut v = vec![0x02, 0x01, 0x00, id.len() as u8];
            v.extend_from_slice(id.as_bytes());
            v
        }
        _ => return None,
    };
    let mut d = vec![0x05, page];
    d.extend_from_slice(&(body.len() as u16).to_be_bytes());
    d.extend(body);
    Some(d)
}

/// Mode page 0x01 (read error recovery) and 0x2A (capabilities); `changeable` gives the mask
/// of changeable fields (none).
fn mode_page(page: u8, changeable: bool, locked: bool) -> Option<Vec<u8>> {
    let mut p = match page {
        0x01 => {
            let mut p = vec![0u8; 12];
            p[1] = 10;
            p
        }
        0x2A => {
            let mut p = vec![0u8; 22];
            p[1] = 20;
            p[2] = 0x3B; // reads CD-R, CD-RW, DVD-ROM, DVD-R, DVD-RAM
            p[4] = 0x71; // multi-session, mode 2 form 1/2, audio play
            p[5] = 0x60; // ISRC, UPC
            p[6] = 0x29 | if locked { 0x02 } else { 0 }; // tray, eject, lock
            p[8..10].copy_from_slice(&(176u16 * 24).to_be_bytes()); // max speed 24x
            p[12..14].copy_from_slice(&512u16.to_be_bytes()); // buffer KiB
            p[14..16].copy_from_slice(&(176u16 * 24).to_be_bytes()); // current speed
            p
        }
        _ => return None,
    };
    p[0] = page;
    if changeable {
        p[2..].fill(0);
    }
    Some(p)
}

/// MODE SENSE data (6- or 10-byte header, no block descriptors) for `page` (0x3F = all).
pub(super) fn mode_sense(page: u8, changeable: bool, locked: bool, ten: bool) -> Option<Vec<u8>> {
    let pages: Vec<u8> = if page == 0x3F {
        [0x01, 0x2A]
            .iter()
            .filter_map(|&p| mode_page(p, changeable, locked))
            .flatten()
            .collect()
    } else {
        mode_page(page, changeable, locked)?
    };
    let mut d = if ten { vec![0u8; 8] } else { vec![0u8; 4] };
    d.extend(pages);
    if ten {
        let len = (d.len() - 2) as u16;
        d[0..2].copy_from_slice(&len.to_be_bytes());
    } else {
        d[0] = (d.len() - 1) as u8;
    }
    Some(d)
}

/// LBA to MSF (minutes, seconds, frames) including the 2-second pregap.
fn msf(lba: u64) -> [u8; 3] {
    let f = lba + 150;
    [
        ((f / (60 * 75)).min(255)) as u8,
        ((f / 75) % 60) as u8,
        (f % 75) as u8,
    ]
}

fn toc_address(lba: u64, use_msf: bool) -> [u8; 4] {
    if use_msf {
        let m = msf(lba);
        [0, m[0], m[1], m[2]]
    } else {
        (lba.min(u64::from(u32::MAX)) as u32).to_be_bytes()
    }
}

/// READ TOC/PMA/ATIP for a single-session disc with one data track; `None` on a bad field.
pub(super) fn read_toc(format: u8, start_track: u8, use_msf: bool, blocks: u64) -> Option<Vec<u8>> {
    let mut d = vec![0u8; 4];
    match format {
        0 => {
            if start_track > 1 && start_track != 0xAA {
                return None;
            }
            d[2] = 1;
            d[3] = 1;
            let mut desc = |track: u8, lba: u64| {
                d.extend_from_slice(&[0, 0x14, track, 0]);
                d.extend_from_slice(&toc_address(lba, use_msf));
            };
            if start_track <= 1 {
                desc(1, 0);
            }
            desc(0xAA, blocks);
        }
        1 => {
            // Session info: the first track of the last (only) session starts at 0.
            d[2] = 1;
            d[3] = 1;
            d.extend_from_slice(&[0, 0x14, 1, 0]);
            d.extend_from_slice(&toc_address(0, use_msf));
        }
        2 => {
            // Full TOC (raw Q sub-channel): points A0, A1, A2 and track 1, always MSF.
            d[2] = 1;
            d[3] = 1;
            let lead_out = msf(blocks);
            let start = msf(0);
            for (point, p) in [
                (0xA0, [1, 0x00, 0]),
                (0xA1, [1, 0, 0]),
                (0xA2, lead_out),
                (0x01, start),
            ] {
                d.extend_from_slice(&[1, 0x14, 0, point, 0, 0, 0, 0, p[0], p[1], p[2]]);
            }
        }
        _ => return None,
    }
    let len = (d.len() - 2) as u16;
    d[0..2].copy_from_slice(&len.to_be_bytes());
    Some(d)
}

fn feature(code: u16, current: bool, version: u8, body: &[u8]) -> Vec<u8> {
    let mut f = code.to_be_bytes().to_vec();
    // Persistent for the always-there features, current when usable now.
    let persistent = matches!(code, 0x0000 | 0x0001 | 0x0003);
    f.push(version << 2 | u8::from(persistent) << 1 | u8::from(current));
    f.push(body.len() as u8);
    f.extend_from_slice(body);
    f
}

/// GET CONFIGURATION for request type `rt` starting at feature `start`.
pub(super) fn get_configuration(rt: u8, start: u16, blocks: Option<u64>) -> Option<Vec<u8>> {
    if rt == 3 {
        return None;
    }
    let current = profile(blocks);
    let present = blocks.is_some();
    let mut profiles = Vec::new();
    for p in [PROFILE_DVDROM, PROFILE_CDROM] {
        profiles.extend_from_slice(&p.to_be_bytes());
        profiles.extend_from_slice(&[u8::from(p == current), 0]);
    }
    let dvd = current == PROFILE_DVDROM;
    let mut random = 2048u32.to_be_bytes().to_vec();
    random.extend_from_slice(&(if dvd { 16u16 } else { 1 }).to_be_bytes());
    random.extend_from_slice(&[0, 0]);
    let features: Vec<(u16, bool, Vec<u8>)> = vec![
        (0x0000, true, profiles),
        (0x0001, true, vec![0, 0, 0, 1, 0, 0, 0, 0]), // core: SCSI family interface
        (0x0003, true, vec![0x29, 0, 0, 0]),          // removable: tray, eject, lock
        (0x0010, present, random),                    // random readable
        (0x001E, present && !dvd, vec![0, 0, 0, 0]),  // CD read
        (0x001F, present && dvd, Vec::new()),         // DVD read
    ];
    let mut d = vec![0u8; 8];
    d[6..8].copy_from_slice(&current.to_be_bytes());
    for (code, cur, body) in features {
        let wanted = match rt {
            0 => code >= start,
            1 => code >= start && cur,
            _ => code == start,
        };
        if wanted {
            let version = if code == 0x0001 { 1 } else { 0 };
            d.extend(feature(code, cur, version, &body));
        }
    }
    let len = (d.len() - 4) as u32;
    d[0..4].copy_from_slice(&len.to_be_bytes());
    Some(d)
}

/// Media event codes of GET EVENT STATUS NOTIFICATION.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MediaEvent {
    /// Nothing changed.
    None = 0,
    /// A medium was inserted.
    NewMedia = 2,
    /// The medium was removed.
    Removal = 3,
}

/// GET EVENT STATUS NOTIFICATION (polled) for the classes in `request`.
pub(super) fn event_status(request: u8, event: MediaEvent, present: bool) -> Vec<u8> {
    const MEDIA_CLASS: u8 = 0x10;
    if request & MEDIA_CLASS == 0 {
        // No supported class asked for: "no event available" and the supported classes.
        return vec![0, 2, 0x80, MEDIA_CLASS];
    }
    vec![
        0,
        6,
        4,
        MEDIA_CLASS,
        event as u8,
        u8::from(present) << 1,
        0,
        0,
    ]
}

/// READ DISC INFORMATION (standard disc information) for a finalized single-session disc.
pub(super) fn disc_information() -> Vec<u8> {
    let mut d = vec![0u8; 34];
    d[0..2].copy_from_slice(&32u16.to_be_bytes());
    d[2] = 0x0E; // last session complete, disc finalized
    d[3] = 1; // first track
    d[4] = 1; // sessions
    d[5] = 1; // first track in last session
    d[6] = 1; // last track in last session
    d[7] = 0x20; // unrestricted use
    d[16..24].fill(0xFF); // no lead-in / lead-out times (not recordable)
    d
}

/// READ TRACK INFORMATION for track 1 (the whole disc).
pub(super) fn track_information(blocks: u64) -> Vec<u8> {
    let mut d = vec![0u8; 36];
    d[0..2].copy_from_slice(&34u16.to_be_bytes());
    d[2] = 1; // track
    d[3] = 1; // session
    d[5] = 0x04; // data track, uninterrupted
    d[6] = 0x01; // data mode 1
    let size = blocks.min(u64::from(u32::MAX)) as u32;
    d[24..28].copy_from_slice(&size.to_be_bytes());
    d
}
