//! The internal snapshot table: parsing and writing its entries.

use crate::backend::{BlockError, BlockResult};

/// One internal snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Host offset of the snapshot's L1 table.
    pub l1_table_offset: u64,
    /// Entries of that L1 table.
    pub l1_size: u32,
    /// Unique id string ("1", "2", …).
    pub id: String,
    /// User-given name.
    pub name: String,
    /// Creation time, seconds since the epoch.
    pub date_sec: u32,
    /// Creation time, nanoseconds part.
    pub date_nsec: u32,
    /// Guest clock at creation in nanoseconds.
    pub vm_clock_nsec: u64,
    /// Size of saved VM state (0: disk-only snapshot).
    pub vm_state_size: u64,
    /// Virtual disk size when the snapshot was taken.
    pub disk_size: Option<u64>,
    /// Extra data beyond the fields above, kept verbatim.
    pub extra_tail: Vec<u8>,
}

fn rd<const N: usize>(b: &[u8], o: usize) -> BlockResult<[u8; N]> {
    b.get(o..o + N)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| BlockError::Corrupt("snapshot table truncated".into()))
}

/// Parse `count` snapshot entries from `buf`, returning them and the table's byte length.
pub fn parse_table(
    buf: &[u8],
    count: u32,
    cluster_size: u64,
) -> BlockResult<(Vec<Snapshot>, usize)> {
    let mut off = 0usize;
    let mut v = Vec::new();
    for i in 0..count {
        let l1_table_offset = u64::from_be_bytes(rd(buf, off)?);
        let l1_size = u32::from_be_bytes(rd(buf, off + 8)?);
        let id_len = u16::from_be_bytes(rd(buf, off + 12)?) as usize;
        let name_len = u16::from_be_bytes(rd(buf, off + 14)?) as usize;
        let date_sec = u32::from_be_bytes(rd(buf, off + 16)?);
        let date_nsec = u32::from_be_bytes(rd(buf, off + 20)?);
        let vm_clock_nsec = u64::from_be_bytes(rd(buf, off + 24)?);
        let vm_state_small = u32::from_be_bytes(rd(buf, off + 32)?);
        let extra_len = u32::from_be_bytes(rd(buf, off + 36)?) as usize;
        if extra_len > 1024 {
            return Err(BlockError::Corrupt(format!(
                "snapshot {i}: extra data of {extra_len} bytes (at most 1024)"
            )));
        }
        if l1_table_offset >= 1 << 56
            || l1_table_offset % cluster_size != 0
            || u64::from(l1_size) * 8 > super::header::MAX_L1_BYTES
        {
            return Err(BlockError::Corrupt(format!(
                "snapshot {i}: L1 table at {l1_table_offset:#x} with {l1_size} entries is invalid"
            )));
        }
        let e = off + 40;
        let extra = buf
            .get(e..e + extra_len)
            .ok_or_else(|| BlockError::Corrupt("snapshot table truncated".into()))?;
        let mut vm_state_size = u64::from(vm_state_small);
        let mut disk_size = None;
        let mut extra_tail = Vec::new();
        if extra_len >= 8 {
            vm_state_size = u64::from_be_bytes(rd(extra, 0)?);
        }
        if extra_len >= 16 {
            disk_size = Some(u64::from_be_bytes(rd(extra, 8)?));
            extra_tail = extra[16..].to_vec();
        }
        let s = e + extra_len;
        let id = buf
            .get(s..s + id_len)
            .ok_or_else(|| BlockError::Corrupt("snapshot table truncated".into()))?;
        let n = buf
            .get(s + id_len..s + id_len + name_len)
            .ok_or_else(|| BlockError::Corrupt("snapshot table truncated".into()))?;
        v.push(Snapshot {
            l1_table_offset,
            l1_size,
            id: String::from_utf8_lossy(id).into_owned(),
            name: String::from_utf8_lossy(n).into_owned(),
            date_sec,
            date_nsec,
            vm_clock_nsec,
            vm_state_size,
            disk_size,
            extra_tail,
        });
        off = (s + id_len + name_len).div_ceil(8) * 8;
    }
    Ok((v, off))
}

/// Serialize a snapshot table (version 3 layout with 16 bytes of extra data at least).
pub fn serialize_table(snaps: &[Snapshot]) -> Vec<u8> {
    let mut b = Vec::new();
    for s in snaps {
        b.extend_from_slice(&s.l1_table_offset.to_be_bytes());
        b.extend_from_slice(&s.l1_size.to_be_bytes());
        b.extend_from_slice(&(s.id.len() as u16).to_be_bytes());
        b.extend_from_slice(&(s.name.len() as u16).to_be_bytes());
        b.extend_from_slice(&s.date_sec.to_be_bytes());
        b.extend_from_slice(&s.date_nsec.to_be_bytes());
        b.extend_from_slice(&s.vm_clock_nsec.to_be_bytes());
        b.extend_from_slice(&(s.vm_state_size.min(u64::from(u32::MAX)) as u32).to_be_bytes());
        b.extend_from_slice(&(16 + s.extra_tail.len() as u32).to_be_bytes());
        b.extend_from_slice(&s.vm_state_size.to_be_bytes());
        b.extend_from_slice(&s.disk_size.unwrap_or(0).to_be_bytes());
        b.extend_from_slice(&s.extra_tail);
        b.extend_from_slice(s.id.as_bytes());
        b.extend_from_slice(s.name.as_bytes());
        while b.len() % 8 != 0 {
            b.push(0);
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_roundtrip_and_truncation() {
        let s = Snapshot {
            l1_table_offset: 0x30000,
            l1_size: 2,
            id: "1".into(),
            name: "before-upgrade".into(),
            date_sec: 5,
            date_nsec: 6,
            vm_clock_nsec: 7,
            vm_state_size: 0,
            disk_size: Some(1 << 20),
            extra_tail: vec![],
        };
        let t = serialize_table(&[s.clone(), s.clone()]);
        let (v, len) = parse_table(&t, 2, 65536).unwrap();
        assert_eq!(v, vec![s.clone(), s]);
        assert_eq!(len, t.len());
        assert!(parse_table(&t[..t.len() - 9], 2, 65536).is_err());
    }
}
