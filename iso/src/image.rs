//! An ISO 9660 image: volume descriptors, directory records and file extents, with the names
//! taken from Rock Ridge when present, else from Joliet, else from the primary volume.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

use crate::error::{IsoError, Result};
use crate::rockridge;
use crate::source::{FileSource, ReadAt};

/// Logical block size; ISO 9660 allows smaller ones but no real image uses them.
pub const BLOCK: usize = 2048;
/// First block of the volume descriptor set.
const FIRST_DESCRIPTOR: u64 = 16;
/// Volume descriptors read before giving up on finding the set terminator.
const MAX_DESCRIPTORS: u64 = 64;
/// Largest directory extent read (a directory with ~300k entries).
const MAX_DIR_BYTES: u32 = 16 * 1024 * 1024;
/// Entries accepted in one directory.
const MAX_DIR_ENTRIES: usize = 100_000;
/// Path components followed by [`Iso::lookup`].
const MAX_DEPTH: usize = 64;
/// Extents one (multi-extent) file may have.
const MAX_EXTENTS: usize = 1024;
/// Entries visited by [`Iso::walk`].
const MAX_WALK_ENTRIES: usize = 1_000_000;
/// Directory bytes read by one [`Iso::walk`] (hostile trees of many huge directories).
const MAX_WALK_BYTES: u64 = 512 * 1024 * 1024;

/// One contiguous run of a file's data on the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// First logical block.
    pub lba: u32,
    /// Length in bytes.
    pub len: u32,
}

impl Extent {
    /// Byte offset of the extent in the image.
    pub fn offset(&self) -> u64 {
        u64::from(self.lba) * BLOCK as u64
    }
}

/// A file or directory found in a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Name as presented (Rock Ridge / Joliet / primary without `;1`).
    pub name: String,
    /// Whether this is a directory.
    pub is_dir: bool,
    /// Data extents in file order (more than one only for multi-extent files).
    pub extents: Vec<Extent>,
}

impl DirEntry {
    /// File size in bytes (sum of its extents).
    pub fn size(&self) -> u64 {
        self.extents.iter().map(|e| u64::from(e.len)).sum()
    }
}

/// Which directory tree names come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameSource {
    /// Rock Ridge NM entries in the primary tree.
    RockRidge,
    /// The Joliet supplementary tree (UCS-2).
    Joliet,
    /// Plain ISO 9660 names of the primary tree.
    Iso9660,
}

/// An open ISO 9660 image.
pub struct Iso {
    src: Box<dyn ReadAt>,
    name: String,
    volume_id: String,
    volume_blocks: u32,
    root: DirEntry,
    names: NameSource,
    /// SUSP skip length of the primary tree, when Rock Ridge is used.
    sp_skip: usize,
    boot_catalog: Option<u32>,
}

impl std::fmt::Debug for Iso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iso")
            .field("name", &self.name)
            .field("volume_id", &self.volume_id)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// What one [`Iso::walk`] has used of its limits.
struct WalkBudget {
    seen: HashSet<u32>,
    entries: usize,
    bytes: u64,
}

/// A directory record as stored, before name selection.
struct RawRecord {
    name: Vec<u8>,
    flags: u8,
    extent: Extent,
    system_use: Vec<u8>,
}

const FLAG_DIR: u8 = 0x02;
/// An associated file (e.g. a Macintosh resource fork) of the record that follows.
const FLAG_ASSOCIATED: u8 = 0x04;
const FLAG_MULTI_EXTENT: u8 = 0x80;

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Decode a Joliet (UCS-2 big-endian) string, replacing unpaired surrogates.
fn ucs2(bytes: &[u8]) -> String {
    let units = bytes
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// Strip the `;version` suffix and the empty-extension dot of an ISO 9660 file identifier.
fn strip_version(name: &str) -> &str {
    let name = name.split_once(';').map_or(name, |(n, _)| n);
    name.strip_suffix('.').unwrap_or(name)
}

impl Iso {
    /// Open an image file read-only and read its volume descriptors.
    pub fn open(path: impl AsRef<Path>) -> Result<Iso> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let io_err = |source| IsoError::Io {
            image: name.clone(),
            what: "the file".into(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let src = FileSource::new(file).map_err(io_err)?;
        Iso::from_source(Box::new(src), name)
    }

    /// Read an image from any byte source; `name` is used in messages.
    pub fn from_source(src: Box<dyn ReadAt>, name: impl Into<String>) -> Result<Iso> {
        let mut iso = Iso {
            src,
            name: name.into(),
            volume_id: String::new(),
            volume_blocks: 0,
            root: DirEntry {
                name: String::new(),
                is_dir: true,
                extents: Vec::new(),
            },
            names: NameSource::Iso9660,
            sp_skip: 0,
            boot_catalog: None,
        };
        iso.read_descriptors()?;
        Ok(iso)
    }

    fn read_descriptors(&mut self) -> Result<()> {
        let mut primary: Option<(String, DirEntry)> = None;
        let mut joliet: Option<(String, DirEntry)> = None;
        let mut terminated = false;
        for i in 0..MAX_DESCRIPTORS {
            let mut d = [0u8; BLOCK];
            let offset = (FIRST_DESCRIPTOR + i) * BLOCK as u64;
            if offset + BLOCK as u64 > self.src.size() {
                break;
            }
            self.read_bytes(offset, &mut d, "volume descriptor")?;
            if &d[1..6] != b"CD001" {
                return Err(self.corrupt(format!(
                    "volume descriptor {} has no CD001 signature (not an ISO 9660 image?)",
                    FIRST_DESCRIPTOR + i
                )));
            }
            match d[0] {
                0 if &d[7..30] == b"EL TORITO SPECIFICATION" => {
                    self.boot_catalog = Some(le32(&d, 71));
                }
                1 if primary.is_none() => {
                    let block_size = le16(&d, 128);
                    if block_size as usize != BLOCK {
                        return Err(IsoError::Unsupported {
                            image: self.name.clone(),
                            reason: format!("logical block size {block_size} (only 2048)"),
                        });
                    }
                    self.volume_blocks = le32(&d, 80);
                    let id = String::from_utf8_lossy(&d[40..72]).trim_end().to_string();
                    let root = self.root_record(&d, "primary")?;
                    primary = Some((id, root));
                }
                2 if joliet.is_none() && d[88] == b'%' && d[89] == b'/' => {
                    if matches!(d[90], b'@' | b'C' | b'E') {
                        // A broken Joliet tree is not fatal: the primary tree still works.
                        match self.root_record(&d, "Joliet") {
                            Ok(root) => {
                                joliet = Some((ucs2(&d[40..72]).trim_end().to_string(), root))
                            }
                            Err(e) => log::warn!("{}: ignoring the Joliet tree: {e}", self.name),
                        }
                    }
                }
                255 => {
                    terminated = true;
                    break;
                }
                _ => {}
            }
        }
        let Some((volume_id, root)) = primary else {
            return Err(self.corrupt("no primary volume descriptor (truncated or not ISO 9660)"));
        };
        if !terminated {
            log::warn!("{}: volume descriptor set has no terminator", self.name);
        }
        let needed = u64::from(self.volume_blocks) * BLOCK as u64;
        if needed > self.src.size() {
            log::warn!(
                "{}: image is {} bytes but its volume is {} blocks: truncated?",
                self.name,
                self.src.size(),
                self.volume_blocks
            );
        }
        self.volume_id = volume_id;
        self.root = root;
        // Rock Ridge announces itself with an SP entry in the root's "." record.
        let dot = self.read_raw_dir(&self.root.extents[0], 1)?;
        let sp = match dot.first() {
            Some(rec) => rockridge::parse(self, &rec.system_use)?.sp_skip,
            None => None,
        };
        if let Some(skip) = sp {
            self.names = NameSource::RockRidge;
            self.sp_skip = skip as usize;
        } else if let Some((_, jroot)) = joliet {
            self.names = NameSource::Joliet;
            self.root = jroot;
        }
        Ok(())
    }

    fn root_record(&self, d: &[u8; BLOCK], which: &str) -> Result<DirEntry> {
        let rec = &d[156..190];
        if rec[0] < 34 || rec[25] & FLAG_DIR == 0 {
            return Err(self.corrupt(format!("bad root directory record in the {which} volume")));
        }
        let extent = Extent {
            lba: le32(rec, 2),
            len: le32(rec, 10),
        };
        self.check_dir_extent(&extent)?;
        Ok(DirEntry {
            name: String::new(),
            is_dir: true,
            extents: vec![extent],
        })
    }

    /// Image name (its path) as used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Volume identifier (the label installers search for, e.g. `CentOS 7 x86_64`).
    pub fn volume_id(&self) -> &str {
        &self.volume_id
    }

    /// Size of the image in bytes.
    pub fn size(&self) -> u64 {
        self.src.size()
    }

    /// Volume size in 2048-byte blocks as recorded in the primary volume descriptor.
    pub fn volume_blocks(&self) -> u32 {
        self.volume_blocks
    }

    /// Where file names come from.
    pub fn name_source(&self) -> NameSource {
        self.names
    }

    /// The root directory.
    pub fn root(&self) -> &DirEntry {
        &self.root
    }

    /// Block of the El Torito boot catalog, when the image has a boot record.
    pub fn boot_catalog_lba(&self) -> Option<u32> {
        self.boot_catalog
    }

    pub(crate) fn corrupt(&self, reason: impl Into<String>) -> IsoError {
        IsoError::Corrupt {
            image: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// Read raw bytes of the image; a range past its end is a corruption (truncated image).
    pub fn read_bytes(&self, offset: u64, buf: &mut [u8], what: &str) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.src.size()) {
            return Err(self.corrupt(format!(
                "{what} at byte {offset} length {} lies beyond the end of the {}-byte image \
                 (truncated download?)",
                buf.len(),
                self.src.size()
            )));
        }
        self.src
            .read_exact_at(offset, buf)
            .map_err(|source| IsoError::Io {
                image: self.name.clone(),
                what: format!("{what} at byte {offset}"),
                source,
            })
    }

    fn check_dir_extent(&self, e: &Extent) -> Result<()> {
        if e.len > MAX_DIR_BYTES {
            return Err(self.corrupt(format!(
                "directory at block {} claims {} bytes (limit {MAX_DIR_BYTES})",
                e.lba, e.len
            )));
        }
        if e.offset() + u64::from(e.len) > self.src.size() {
            return Err(self.corrupt(format!(
                "directory at block {} length {} lies beyond the end of the image",
                e.lba, e.len
            )));
        }
        Ok(())
    }

    /// Parse up to `limit` raw records of a directory extent.
    fn read_raw_dir(&self, e: &Extent, limit: usize) -> Result<Vec<RawRecord>> {
        self.check_dir_extent(e)?;
        let mut data = vec![0u8; e.len as usize];
        self.read_bytes(e.offset(), &mut data, "directory")?;
        let mut out = Vec::new();
        let mut pos = 0usize;
        while pos < data.len() && out.len() < limit {
            let len = data[pos] as usize;
            if len == 0 {
                // Records never cross a block boundary: the rest of this block is padding.
                pos = (pos / BLOCK + 1) * BLOCK;
                continue;
            }
            let block_end = ((pos / BLOCK + 1) * BLOCK).min(data.len());
            if len < 34 || pos + len > block_end {
                return Err(self.corrupt(format!(
                    "directory at block {}: record at byte {pos} has bad length {len}",
                    e.lba
                )));
            }
            let r = &data[pos..pos + len];
            let name_len = r[32] as usize;
            if 33 + name_len > len {
                return Err(self.corrupt(format!(
                    "directory at block {}: record at byte {pos} has name length {name_len} \
                     past its end",
                    e.lba
                )));
            }
            let su_start = 33 + name_len + (1 - name_len % 2);
            out.push(RawRecord {
                name: r[33..33 + name_len].to_vec(),
                flags: r[25],
                extent: Extent {
                    lba: le32(r, 2),
                    len: le32(r, 10),
                },
                system_use: r.get(su_start..).unwrap_or(&[]).to_vec(),
            });
            if out.len() > MAX_DIR_ENTRIES {
                return Err(self.corrupt(format!(
                    "directory at block {} has more than {MAX_DIR_ENTRIES} entries",
                    e.lba
                )));
            }
            pos += len;
        }
        Ok(out)
    }

    /// List a directory (without `.` and `..`).
    pub fn read_dir(&self, dir: &DirEntry) -> Result<Vec<DirEntry>> {
        if !dir.is_dir {
            return Err(self.corrupt(format!("{} is not a directory", dir.name)));
        }
        let Some(extent) = dir.extents.first() else {
            return Ok(Vec::new());
        };
        let raw = self.read_raw_dir(extent, usize::MAX)?;
        let mut out: Vec<DirEntry> = Vec::new();
        let mut continuing = false;
        for rec in raw {
            if rec.name == [0] || rec.name == [1] || rec.flags & FLAG_ASSOCIATED != 0 {
                continue;
            }
            let more = rec.flags & FLAG_MULTI_EXTENT != 0;
            if continuing {
                // The next record of a multi-extent file carries its next extent.
                if let Some(last) = out.last_mut() {
                    if last.extents.len() >= MAX_EXTENTS {
                        return Err(self.corrupt(format!(
                            "{} has more than {MAX_EXTENTS} extents",
                            last.name
                        )));
                    }
                    last.extents.push(rec.extent);
                }
                continuing = more;
                continue;
            }
            continuing = more;
            let mut is_dir = rec.flags & FLAG_DIR != 0;
            let mut extent = rec.extent;
            let name = match self.names {
                NameSource::Joliet => strip_version(&ucs2(&rec.name)).to_string(),
                NameSource::Iso9660 => {
                    strip_version(&String::from_utf8_lossy(&rec.name)).to_string()
                }
                NameSource::RockRidge => {
                    let area = rec.system_use.get(self.sp_skip..).unwrap_or(&[]);
                    let su = rockridge::parse(self, area)?;
                    if su.relocated {
                        continue;
                    }
                    if let Some(lba) = su.child_link {
                        // A relocated deep directory: its own "." record gives its size.
                        let probe = Extent {
                            lba,
                            len: BLOCK as u32,
                        };
                        let dot = self.read_raw_dir(&probe, 1)?;
                        let Some(d) = dot.first() else {
                            return Err(self.corrupt(format!("CL to block {lba}: no directory")));
                        };
                        is_dir = true;
                        extent = Extent {
                            lba,
                            len: d.extent.len,
                        };
                    }
                    match su.name {
                        Some(n) => n,
                        None => strip_version(&String::from_utf8_lossy(&rec.name)).to_string(),
                    }
                }
            };
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                log::warn!("{}: skipping entry with unusable name {name:?}", self.name);
                continue;
            }
            out.push(DirEntry {
                name,
                is_dir,
                extents: vec![extent],
            });
        }
        Ok(out)
    }

    /// Find a file or directory by `/`-separated path. Names match exactly first, then
    /// ignoring ASCII case (as ISOLINUX and GRUB do on ISO 9660).
    pub fn lookup(&self, path: &str) -> Result<DirEntry> {
        let parts: Vec<&str> = path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.len() > MAX_DEPTH {
            return Err(self.corrupt(format!("path {path} deeper than {MAX_DEPTH} levels")));
        }
        let not_found = || IsoError::NotFound {
            image: self.name.clone(),
            path: path.to_string(),
        };
        let mut cur = self.root.clone();
        for part in parts {
            if !cur.is_dir {
                return Err(not_found());
            }
            let entries = self.read_dir(&cur)?;
            let found = entries.iter().position(|e| e.name == part).or_else(|| {
                entries
                    .iter()
                    .position(|e| e.name.eq_ignore_ascii_case(part))
            });
            match found {
                Some(i) => cur = entries[i].clone(),
                None => return Err(not_found()),
            }
        }
        Ok(cur)
    }

    /// Whether a path exists (errors reading the tree count as "no").
    pub fn exists(&self, path: &str) -> bool {
        self.lookup(path).is_ok()
    }

    /// Read part of a file: `buf.len()` bytes from `offset` within the file.
    pub fn read_file_at(&self, file: &DirEntry, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > file.size()) {
            return Err(self.corrupt(format!(
                "read of {} bytes at {offset} beyond the end of {} ({} bytes)",
                buf.len(),
                file.name,
                file.size()
            )));
        }
        let mut file_pos = 0u64;
        let mut done = 0usize;
        for e in &file.extents {
            let e_len = u64::from(e.len);
            let want_start = offset + done as u64;
            if done == buf.len() {
                break;
            }
            if want_start < file_pos + e_len {
                let within = want_start - file_pos;
                let n = ((e_len - within) as usize).min(buf.len() - done);
                self.read_bytes(e.offset() + within, &mut buf[done..done + n], &file.name)?;
                done += n;
            }
            file_pos += e_len;
        }
        Ok(())
    }

    /// Read a whole file, refusing files larger than `limit` bytes.
    pub fn read_file(&self, file: &DirEntry, limit: u64) -> Result<Vec<u8>> {
        let size = file.size();
        if file.is_dir {
            return Err(self.corrupt(format!("{} is a directory, not a file", file.name)));
        }
        if size > limit {
            return Err(IsoError::TooLarge {
                image: self.name.clone(),
                path: file.name.clone(),
                size,
                limit,
            });
        }
        for e in &file.extents {
            if e.offset() + u64::from(e.len) > self.src.size() {
                return Err(self.corrupt(format!(
                    "{} extent at block {} length {} lies beyond the end of the image (truncated?)",
                    file.name, e.lba, e.len
                )));
            }
        }
        // Check against the image before allocating what a hostile size asks for: the extents
        // of one file never overlap, so together they cannot exceed the image.
        if size > self.src.size() {
            return Err(self.corrupt(format!(
                "{} claims {size} bytes, more than the whole {}-byte image",
                file.name,
                self.src.size()
            )));
        }
        let mut buf = vec![0u8; size as usize];
        self.read_file_at(file, 0, &mut buf)?;
        Ok(buf)
    }

    /// Look a file up by path and read it whole (at most `limit` bytes).
    pub fn read_path(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let e = self.lookup(path)?;
        self.read_file(&e, limit).map_err(|err| match err {
            IsoError::TooLarge {
                image, size, limit, ..
            } => IsoError::TooLarge {
                image,
                path: path.to_string(),
                size,
                limit,
            },
            other => other,
        })
    }

    /// Visit every entry of the tree depth-first with its full path. A directory reached twice
    /// (a loop, or hard-linked directories) is an error, as are trees deeper than 64 levels.
    pub fn walk(&self, mut visit: impl FnMut(&str, &DirEntry)) -> Result<()> {
        let mut budget = WalkBudget {
            seen: HashSet::new(),
            entries: 0,
            bytes: 0,
        };
        if let Some(e) = self.root.extents.first() {
            budget.seen.insert(e.lba);
        }
        self.walk_dir(&self.root, "", 0, &mut budget, &mut visit)
    }

    fn walk_dir(
        &self,
        dir: &DirEntry,
        prefix: &str,
        depth: usize,
        budget: &mut WalkBudget,
        visit: &mut impl FnMut(&str, &DirEntry),
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(self.corrupt(format!(
                "directory tree deeper than {MAX_DEPTH} at {prefix}"
            )));
        }
        budget.bytes += dir.size();
        if budget.bytes > MAX_WALK_BYTES {
            return Err(self.corrupt(format!(
                "directories total more than {MAX_WALK_BYTES} bytes (at {prefix})"
            )));
        }
        for e in self.read_dir(dir)? {
            budget.entries += 1;
            if budget.entries > MAX_WALK_ENTRIES {
                return Err(self.corrupt(format!("more than {MAX_WALK_ENTRIES} entries")));
            }
            let path = format!("{prefix}/{}", e.name);
            visit(&path, &e);
            if e.is_dir {
                let lba = e.extents.first().map_or(0, |x| x.lba);
                if !budget.seen.insert(lba) {
                    return Err(self.corrupt(format!(
                        "directory loop: {path} points at block {lba}, already visited"
                    )));
                }
                self.walk_dir(&e, &path, depth + 1, budget, visit)?;
            }
        }
        Ok(())
    }
}
