//! The qcow2 file header and its extensions (QEMU docs/interop/qcow2.rst), parsed and written.

use crate::backend::{BlockError, BlockResult};

/// "QFI\xfb": the first four bytes of every qcow2 file.
pub const QCOW2_MAGIC: u32 = 0x5146_49fb;
/// Length of a version 2 header; version 3 extends it.
pub const V2_HEADER_LEN: u32 = 72;
/// Length of the version 3 header this engine writes (with the compression type, padded to 8).
pub const V3_HEADER_LEN: u32 = 112;

/// Incompatible feature: the refcounts may be inconsistent (lazy refcounts, not closed cleanly).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature: metadata corruption was detected; the image must only be read.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature: guest data lives in an external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature: the compression type field is not zlib.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature: L2 entries are 128 bits with subcluster bitmaps.
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
/// Compatible feature: refcount updates may be deferred (needs the dirty bit while open).
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;

/// Header extension: end of the extension area.
pub const EXT_END: u32 = 0;
/// Header extension: the backing file's format name.
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension: human-readable feature names.
pub const EXT_FEATURE_NAMES: u32 = 0x6803_f857;
/// Header extension: full-disk encryption parameters.
pub const EXT_CRYPTO: u32 = 0x0537_be77;
/// Header extension: external data file name.
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Largest L1 table accepted (as QEMU: 32 MiB).
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// Largest refcount table accepted (as QEMU: 8 MiB).
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Most snapshots accepted (as QEMU).
pub const MAX_SNAPSHOTS: u32 = 65536;

/// Data compression algorithm of compressed clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompressionType {
    /// Raw deflate with a 4 KiB window.
    #[default]
    Zlib,
    /// Zstandard frames.
    Zstd,
}

impl CompressionType {
    /// The name qemu-img uses.
    pub fn name(self) -> &'static str {
        match self {
            CompressionType::Zlib => "zlib",
            CompressionType::Zstd => "zstd",
        }
    }
}

/// One entry of the feature name table extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureName {
    /// 0 incompatible, 1 compatible, 2 autoclear.
    pub kind: u8,
    /// Bit number in that feature field.
    pub bit: u8,
    /// Name, at most 46 bytes.
    pub name: String,
}

/// The parsed header of a qcow2 image, including its extensions and backing file name.
#[derive(Debug, Clone)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// Where the backing file name is stored (0: none).
    pub backing_file_offset: u64,
    /// Length of the backing file name.
    pub backing_file_size: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// 0 none, 1 AES, 2 LUKS.
    pub crypt_method: u32,
    /// Entries of the active L1 table.
    pub l1_size: u32,
    /// Host offset of the active L1 table.
    pub l1_table_offset: u64,
    /// Host offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Clusters of the refcount table.
    pub refcount_table_clusters: u32,
    /// Number of internal snapshots.
    pub nb_snapshots: u32,
    /// Host offset of the snapshot table.
    pub snapshots_offset: u64,
    /// Incompatible feature bits.
    pub incompatible: u64,
    /// Compatible feature bits.
    pub compatible: u64,
    /// Autoclear feature bits.
    pub autoclear: u64,
    /// log2 of the refcount width in bits.
    pub refcount_order: u32,
    /// Length of the fixed header in bytes.
    pub header_length: u32,
    /// Compression algorithm of compressed clusters.
    pub compression_type: CompressionType,
    /// Header bytes beyond the fields this engine knows (kept as read).
    pub extra_header: Vec<u8>,
    /// Backing file name.
    pub backing_file: Option<String>,
    /// Backing file format from the backing format extension.
    pub backing_format: Option<String>,
    /// Feature name table.
    pub feature_names: Vec<FeatureName>,
    /// Extensions this engine does not interpret, kept verbatim (type, data).
    pub other_extensions: Vec<(u32, Vec<u8>)>,
}

fn be32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_be_bytes(a)
}

fn be64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(a)
}

fn corrupt(msg: impl Into<String>) -> BlockError {
    BlockError::Corrupt(msg.into())
}

/// The feature names QEMU writes into new images.
pub fn default_feature_names() -> Vec<FeatureName> {
    let f = |kind, bit, name: &str| FeatureName {
        kind,
        bit,
        name: name.to_string(),
    };
    vec![
        f(0, 0, "dirty bit"),
        f(0, 1, "corrupt bit"),
        f(0, 2, "external data file"),
        f(0, 3, "compression type"),
        f(0, 4, "extended L2 entries"),
        f(1, 0, "lazy refcounts"),
        f(2, 0, "bitmaps"),
        f(2, 1, "raw external data"),
    ]
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Refcount width in bits.
    pub fn refcount_bits(&self) -> u32 {
        1 << self.refcount_order
    }

    /// Parse and validate the header from the start of the file (`buf` holds at least the
    /// first cluster, or the whole file when it is shorter).
    pub fn parse(buf: &[u8]) -> BlockResult<Header> {
        if buf.len() < V2_HEADER_LEN as usize {
            return Err(corrupt("file too short for a qcow2 header"));
        }
        if be32(buf, 0) != QCOW2_MAGIC {
            return Err(corrupt("no qcow2 magic"));
        }
        let version = be32(buf, 4);
        if version != 2 && version != 3 {
            return Err(BlockError::Unsupported(format!(
                "qcow2 version {version} (only versions 2 and 3 are supported)"
            )));
        }
        let cluster_bits = be32(buf, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(corrupt(format!(
                "cluster_bits {cluster_bits} outside 9..21 (512 B to 2 MiB clusters)"
            )));
        }
        let cluster_size = 1u64 << cluster_bits;
        let mut h = Header {
            version,
            backing_file_offset: be64(buf, 8),
            backing_file_size: be32(buf, 16),
            cluster_bits,
            size: be64(buf, 24),
            crypt_method: be32(buf, 32),
            l1_size: be32(buf, 36),
            l1_table_offset: be64(buf, 40),
            refcount_table_offset: be64(buf, 48),
            refcount_table_clusters: be32(buf, 56),
            nb_snapshots: be32(buf, 60),
            snapshots_offset: be64(buf, 64),
            incompatible: 0,
            compatible: 0,
            autoclear: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN,
            compression_type: CompressionType::Zlib,
            extra_header: Vec::new(),
            backing_file: None,
            backing_format: None,
            feature_names: Vec::new(),
            other_extensions: Vec::new(),
        };
        if version == 3 {
            if buf.len() < 104 {
                return Err(corrupt("file too short for a qcow2 v3 header"));
            }
            h.incompatible = be64(buf, 72);
            h.compatible = be64(buf, 80);
            h.autoclear = be64(buf, 88);
            h.refcount_order = be32(buf, 96);
            h.header_length = be32(buf, 100);
            if h.header_length < 104 || u64::from(h.header_length) > cluster_size {
                return Err(corrupt(format!(
                    "header_length {} outside 104..cluster size",
                    h.header_length
                )));
            }
            if buf.len() < h.header_length as usize {
                return Err(corrupt("file shorter than its header_length"));
            }
            if h.header_length > 104 {
                h.compression_type = match buf[104] {
                    0 => CompressionType::Zlib,
                    1 => CompressionType::Zstd,
                    t => {
                        return Err(BlockError::Unsupported(format!(
                            "compression type {t} (only zlib=0 and zstd=1 are known)"
                        )))
                    }
                };
            }
            if h.header_length > V3_HEADER_LEN {
                h.extra_header = buf[V3_HEADER_LEN as usize..h.header_length as usize].to_vec();
            }
            if h.refcount_order > 6 {
                return Err(corrupt(format!(
                    "refcount_order {} (refcounts wider than 64 bits)",
                    h.refcount_order
                )));
            }
        }
        h.parse_extensions(buf)?;
        h.validate(buf.len() as u64)?;
        Ok(h)
    }

    fn parse_extensions(&mut self, buf: &[u8]) -> BlockResult<()> {
        let cluster_size = self.cluster_size() as usize;
        let mut end = buf.len().min(cluster_size);
        if self.backing_file_offset != 0 && (self.backing_file_offset as usize) < end {
            end = self.backing_file_offset as usize;
        }
        let mut off = self.header_length as usize;
        while off + 8 <= end {
            let ty = be32(buf, off);
            let len = be32(buf, off + 4) as usize;
            off += 8;
            if ty == EXT_END {
                break;
            }
            if len > end - off {
                return Err(corrupt(format!(
                    "header extension 0x{ty:08x} of {len} bytes runs past the header cluster"
                )));
            }
            let data = &buf[off..off + len];
            match ty {
                EXT_BACKING_FORMAT => {
                    self.backing_format = Some(String::from_utf8_lossy(data).into_owned());
                }
                EXT_FEATURE_NAMES => {
                    for e in data.chunks_exact(48) {
                        let name_end = e[2..].iter().position(|&c| c == 0).unwrap_or(46);
                        self.feature_names.push(FeatureName {
                            kind: e[0],
                            bit: e[1],
                            name: String::from_utf8_lossy(&e[2..2 + name_end]).into_owned(),
                        });
                    }
                }
                _ => self.other_extensions.push((ty, data.to_vec())),
            }
            off += len.div_ceil(8) * 8;
        }
        if self.backing_file_offset != 0 {
            let bo = self.backing_file_offset;
            let bl = u64::from(self.backing_file_size);
            if bl > 1023 || bo.checked_add(bl).is_none_or(|e| e > cluster_size as u64) {
                return Err(corrupt(format!(
                    "backing file name at {bo} length {bl} is not inside the header cluster \
                     or longer than 1023 bytes"
                )));
            }
            if bo + bl > buf.len() as u64 {
                return Err(corrupt("backing file name beyond the end of the file"));
            }
            let name = &buf[bo as usize..(bo + bl) as usize];
            let name =
                std::str::from_utf8(name).map_err(|_| corrupt("backing file name is not UTF-8"))?;
            if !name.is_empty() {
                self.backing_file = Some(name.to_string());
            }
        }
        Ok(())
    }

    /// Name of an incompatible feature bit from the image's own feature name table.
    fn incompat_name(&self, bit: u8) -> String {
        self.feature_names
            .iter()
            .find(|f| f.kind == 0 && f.bit == bit)
            .map(|f| f.name.clone())
            .unwrap_or_else(|| format!("unknown incompatible feature bit {bit}"))
    }

    fn validate(&self, _file_len: u64) -> BlockResult<()> {
        let cs = self.cluster_size();
        let known = INCOMPAT_DIRTY
            | INCOMPAT_CORRUPT
            | INCOMPAT_DATA_FILE
            | INCOMPAT_COMPRESSION
            | INCOMPAT_EXTL2;
        let unknown = self.incompatible & !known;
        if unknown != 0 {
            let names: Vec<String> = (0..64u8)
                .filter(|b| unknown & (1 << b) != 0)
                .map(|b| self.incompat_name(b))
                .collect();
            return Err(BlockError::Unsupported(format!(
                "incompatible feature(s) {}; use a newer tool or convert the image with qemu-img",
                names.join(", ")
            )));
        }
        if self.incompatible & INCOMPAT_DATA_FILE != 0 {
            return Err(BlockError::Unsupported(
                "external data files; convert the image to a self-contained qcow2 with qemu-img"
                    .into(),
            ));
        }
        if self.crypt_method != 0 || self.other_extensions.iter().any(|(t, _)| *t == EXT_CRYPTO) {
            return Err(BlockError::Unsupported(
                "encrypted images; decrypt with qemu-img convert first".into(),
            ));
        }
        if (self.incompatible & INCOMPAT_COMPRESSION != 0)
            != (self.compression_type != CompressionType::Zlib)
        {
            return Err(corrupt(
                "compression type field and the compression type feature bit disagree",
            ));
        }
        if self.incompatible & INCOMPAT_EXTL2 != 0 && cs < 16384 {
            return Err(corrupt(format!(
                "extended L2 entries need clusters of at least 16 KiB (cluster size {cs})"
            )));
        }
        let l2_entries = if self.incompatible & INCOMPAT_EXTL2 != 0 {
            cs / 16
        } else {
            cs / 8
        };
        let per_l1 = cs * l2_entries;
        let needed_l1 = self.size.div_ceil(per_l1);
        if needed_l1 > u64::from(self.l1_size) {
            return Err(corrupt(format!(
                "L1 table of {} entries is too small for a {} byte disk",
                self.l1_size, self.size
            )));
        }
        if u64::from(self.l1_size) * 8 > MAX_L1_BYTES {
            return Err(BlockError::Unsupported(format!(
                "L1 table of {} entries (larger than 32 MiB)",
                self.l1_size
            )));
        }
        if self.l1_size > 0
            && (!self.l1_table_offset.is_multiple_of(cs) || self.l1_table_offset == 0)
        {
            return Err(corrupt(format!(
                "L1 table offset {:#x} is not cluster aligned",
                self.l1_table_offset
            )));
        }
        if !self.refcount_table_offset.is_multiple_of(cs) || self.refcount_table_offset == 0 {
            return Err(corrupt(format!(
                "refcount table offset {:#x} is not cluster aligned",
                self.refcount_table_offset
            )));
        }
        if self.refcount_table_clusters == 0
            || u64::from(self.refcount_table_clusters) * cs > MAX_REFTABLE_BYTES
        {
            return Err(corrupt(format!(
                "refcount table of {} clusters (must be 1 cluster to 8 MiB)",
                self.refcount_table_clusters
            )));
        }
        if self.nb_snapshots > MAX_SNAPSHOTS {
            return Err(corrupt(format!(
                "{} snapshots (at most 65536)",
                self.nb_snapshots
            )));
        }
        if self.nb_snapshots > 0 && !self.snapshots_offset.is_multiple_of(cs) {
            return Err(corrupt("snapshot table offset is not cluster aligned"));
        }
        // Offsets must fit in the 56 bits an L1/L2 entry can address.
        for (what, off) in [
            ("L1 table", self.l1_table_offset),
            ("refcount table", self.refcount_table_offset),
            ("snapshot table", self.snapshots_offset),
        ] {
            if off >= 1 << 56 {
                return Err(corrupt(format!("{what} offset {off:#x} beyond 2^56")));
            }
        }
        if self.size > 1 << 62 {
            return Err(corrupt(format!("virtual size {} is absurd", self.size)));
        }
        Ok(())
    }

    /// Serialize the header, extensions and backing file name into one cluster-sized buffer.
    pub fn serialize(&mut self) -> BlockResult<Vec<u8>> {
        let cs = self.cluster_size() as usize;
        let mut b = vec![0u8; cs];
        let header_length = if self.version == 3 {
            V3_HEADER_LEN + self.extra_header.len() as u32
        } else {
            V2_HEADER_LEN
        };
        self.header_length = header_length;
        let mut ext = Vec::new();
        let push = |ext: &mut Vec<u8>, ty: u32, data: &[u8]| {
            ext.extend_from_slice(&ty.to_be_bytes());
            ext.extend_from_slice(&(data.len() as u32).to_be_bytes());
            ext.extend_from_slice(data);
            while !ext.len().is_multiple_of(8) {
                ext.push(0);
            }
        };
        if let Some(f) = &self.backing_format {
            push(&mut ext, EXT_BACKING_FORMAT, f.as_bytes());
        }
        if !self.feature_names.is_empty() {
            let mut t = Vec::new();
            for f in &self.feature_names {
                let mut e = [0u8; 48];
                e[0] = f.kind;
                e[1] = f.bit;
                let n = f.name.as_bytes();
                let l = n.len().min(46);
                e[2..2 + l].copy_from_slice(&n[..l]);
                t.extend_from_slice(&e);
            }
            push(&mut ext, EXT_FEATURE_NAMES, &t);
        }
        for (ty, data) in &self.other_extensions {
            push(&mut ext, *ty, data);
        }
        push(&mut ext, EXT_END, &[]);
        let name = self.backing_file.clone().unwrap_or_default();
        let ext_start = header_length as usize;
        let name_off = ext_start + ext.len();
        if name_off + name.len() > cs && !self.feature_names.is_empty() {
            // The feature name table is optional: small clusters may not have room for it.
            self.feature_names.clear();
            return self.serialize();
        }
        if name_off + name.len() > cs || name.len() > 1023 {
            return Err(BlockError::Invalid(format!(
                "header, extensions and backing file name ({} bytes) do not fit in one \
                 {cs} byte cluster; use a shorter backing file name or larger clusters",
                name_off + name.len()
            )));
        }
        if name.is_empty() {
            self.backing_file_offset = 0;
            self.backing_file_size = 0;
        } else {
            self.backing_file_offset = name_off as u64;
            self.backing_file_size = name.len() as u32;
        }
        b[0..4].copy_from_slice(&QCOW2_MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&self.version.to_be_bytes());
        b[8..16].copy_from_slice(&self.backing_file_offset.to_be_bytes());
        b[16..20].copy_from_slice(&self.backing_file_size.to_be_bytes());
        b[20..24].copy_from_slice(&self.cluster_bits.to_be_bytes());
        b[24..32].copy_from_slice(&self.size.to_be_bytes());
        b[32..36].copy_from_slice(&self.crypt_method.to_be_bytes());
        b[36..40].copy_from_slice(&self.l1_size.to_be_bytes());
        b[40..48].copy_from_slice(&self.l1_table_offset.to_be_bytes());
        b[48..56].copy_from_slice(&self.refcount_table_offset.to_be_bytes());
        b[56..60].copy_from_slice(&self.refcount_table_clusters.to_be_bytes());
        b[60..64].copy_from_slice(&self.nb_snapshots.to_be_bytes());
        b[64..72].copy_from_slice(&self.snapshots_offset.to_be_bytes());
        if self.version == 3 {
            b[72..80].copy_from_slice(&self.incompatible.to_be_bytes());
            b[80..88].copy_from_slice(&self.compatible.to_be_bytes());
            b[88..96].copy_from_slice(&self.autoclear.to_be_bytes());
            b[96..100].copy_from_slice(&self.refcount_order.to_be_bytes());
            b[100..104].copy_from_slice(&header_length.to_be_bytes());
            b[104] = match self.compression_type {
                CompressionType::Zlib => 0,
                CompressionType::Zstd => 1,
            };
            b[V3_HEADER_LEN as usize..header_length as usize].copy_from_slice(&self.extra_header);
        }
        b[ext_start..name_off].copy_from_slice(&ext);
        b[name_off..name_off + name.len()].copy_from_slice(name.as_bytes());
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        let mut buf = vec![0u8; 65536];
        buf[0..4].copy_from_slice(&QCOW2_MAGIC.to_be_bytes());
        buf[4..8].copy_from_slice(&3u32.to_be_bytes());
        buf[20..24].copy_from_slice(&16u32.to_be_bytes());
        buf[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        buf[36..40].copy_from_slice(&2u32.to_be_bytes());
        buf[40..48].copy_from_slice(&(3u64 << 16).to_be_bytes());
        buf[48..56].copy_from_slice(&(1u64 << 16).to_be_bytes());
        buf[56..60].copy_from_slice(&1u32.to_be_bytes());
        buf[96..100].copy_from_slice(&4u32.to_be_bytes());
        buf[100..104].copy_from_slice(&112u32.to_be_bytes());
        Header::parse(&buf).unwrap()
    }

    #[test]
    fn roundtrip_with_extensions_and_backing() {
        let mut h = sample();
        h.backing_file = Some("base.img".into());
        h.backing_format = Some("raw".into());
        h.feature_names = default_feature_names();
        h.other_extensions.push((0x1234_5678, vec![1, 2, 3]));
        let buf = h.serialize().unwrap();
        let p = Header::parse(&buf).unwrap();
        assert_eq!(p.backing_file.as_deref(), Some("base.img"));
        assert_eq!(p.backing_format.as_deref(), Some("raw"));
        assert_eq!(p.feature_names, default_feature_names());
        assert_eq!(p.other_extensions, vec![(0x1234_5678, vec![1, 2, 3])]);
        assert_eq!(p.size, 1 << 30);
        assert_eq!(p.l1_table_offset, 3 << 16);
    }

    #[test]
    fn refuses_unknown_incompatible_bits_and_encryption() {
        let mut h = sample();
        h.incompatible = 1 << 9;
        let buf = h.serialize().unwrap();
        let e = Header::parse(&buf).unwrap_err().to_string();
        assert!(e.contains("unknown incompatible feature bit 9"), "{e}");
        let mut h = sample();
        h.crypt_method = 2;
        let e = Header::parse(&h.serialize().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("encrypted"), "{e}");
        // Extended L2 entries are supported, but not below 16 KiB clusters.
        let mut h = sample();
        h.incompatible = INCOMPAT_EXTL2;
        // 128-bit entries halve what one L2 table maps: 2 L1 entries now cover 512 MiB.
        assert!(Header::parse(&h.serialize().unwrap()).is_err());
        h.size = 1 << 29;
        assert!(Header::parse(&h.serialize().unwrap()).is_ok());
        h.cluster_bits = 13;
        h.size = 1 << 20;
        let e = Header::parse(&h.serialize().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("extended L2"), "{e}");
    }

    #[test]
    fn hostile_lengths_fail_cleanly() {
        let h = sample();
        let mut buf = h.clone().serialize().unwrap();
        // An extension claiming 4 GiB.
        buf[112..116].copy_from_slice(&0x1111u32.to_be_bytes());
        buf[116..120].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Header::parse(&buf).is_err());
        // Truncated file.
        assert!(Header::parse(&buf[..50]).is_err());
        // Huge L1.
        let mut h2 = h.clone();
        h2.l1_size = u32::MAX;
        assert!(Header::parse(&h2.serialize().unwrap()).is_err());
    }
}
