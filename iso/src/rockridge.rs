//! System Use Sharing Protocol (SUSP) entries and the Rock Ridge (RRIP) ones this reader uses:
//! NM (POSIX name, possibly split over several entries), RE (relocated directory: hidden), CL
//! (child link to a relocated directory) and CE (continuation area). Everything else (PX, TF,
//! SL symlinks, …) is skipped.

use crate::error::Result;
use crate::image::Iso;

/// Continuation areas followed per directory record before giving up on a (looping) chain.
const MAX_CONTINUATIONS: usize = 16;
/// System-use bytes read per record, all continuation areas included.
const MAX_SU_BYTES: usize = 64 * 1024;
/// Longest Rock Ridge name accepted (POSIX NAME_MAX is 255; leave room).
const MAX_NAME: usize = 1024;

/// What the system-use area of one directory record says.
#[derive(Debug, Default)]
pub(crate) struct SystemUse {
    /// The Rock Ridge name, when NM entries were present.
    pub name: Option<String>,
    /// RE: this directory was relocated; its real place is given by a CL elsewhere.
    pub relocated: bool,
    /// CL: this (file) record stands for the directory starting at this block.
    pub child_link: Option<u32>,
    /// SP: SUSP in use, skipping this many bytes at the start of every system-use area.
    pub sp_skip: Option<u8>,
}

/// Parse a system-use area, following CE continuation areas on the image.
pub(crate) fn parse(iso: &Iso, area: &[u8]) -> Result<SystemUse> {
    let mut out = SystemUse::default();
    let mut name = Vec::new();
    let mut have_name = false;
    let mut name_done = false;
    let mut current: Vec<u8> = area.to_vec();
    let mut total = current.len();
    let mut hops = 0;
    loop {
        let mut next = None;
        let mut pos = 0;
        while pos + 4 <= current.len() {
            let sig = [current[pos], current[pos + 1]];
            let len = current[pos + 2] as usize;
            if len < 4 || pos + len > current.len() {
                // A malformed entry ends the area: the names already read stay usable.
                log::debug!(
                    "{}: malformed SUSP entry {:?} length {len}",
                    iso.name(),
                    sig
                );
                break;
            }
            let data = &current[pos + 4..pos + len];
            match &sig {
                b"SP" if data.len() >= 3 && data[0] == 0xBE && data[1] == 0xEF => {
                    out.sp_skip = Some(data[2]);
                }
                b"NM" if !data.is_empty() => {
                    let flags = data[0];
                    if flags & 0x06 != 0 {
                        // CURRENT/PARENT names are "." and ".."; those records are skipped anyway.
                    } else if !name_done {
                        have_name = true;
                        name.extend_from_slice(&data[1..]);
                        if name.len() > MAX_NAME {
                            return Err(iso
                                .corrupt(format!("Rock Ridge name longer than {MAX_NAME} bytes")));
                        }
                        name_done = flags & 0x01 == 0;
                    }
                }
                b"RE" => out.relocated = true,
                b"CL" if data.len() >= 4 => {
                    out.child_link = Some(u32::from_le_bytes([data[0], data[1], data[2], data[3]]));
                }
                b"CE" if data.len() >= 24 => {
                    let block = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                    let offset = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
                    let length = u32::from_le_bytes([data[16], data[17], data[18], data[19]]);
                    next = Some((block, offset, length));
                }
                b"ST" => break,
                _ => {}
            }
            pos += len;
        }
        let Some((block, offset, length)) = next else {
            break;
        };
        hops += 1;
        if hops > MAX_CONTINUATIONS {
            return Err(iso.corrupt(format!(
                "more than {MAX_CONTINUATIONS} SUSP continuation areas for one record (loop?)"
            )));
        }
        let length = length as usize;
        total += length;
        if total > MAX_SU_BYTES {
            return Err(iso.corrupt(format!(
                "SUSP continuation areas exceed {MAX_SU_BYTES} bytes for one record"
            )));
        }
        let start = u64::from(block) * crate::image::BLOCK as u64 + u64::from(offset);
        let mut buf = vec![0u8; length];
        iso.read_bytes(start, &mut buf, "SUSP continuation area")?;
        current = buf;
    }
    if have_name {
        out.name = Some(String::from_utf8_lossy(&name).into_owned());
    }
    Ok(out)
}
