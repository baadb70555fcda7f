//! SCSI targets behind the virtio-scsi host: a read-only MMC CD-ROM (2048-byte blocks) that
//! installers find as `/dev/sr0`. Commands arrive as CDB bytes plus the size of the initiator's
//! data-in buffer; each produces a status byte, sense data on CHECK CONDITION, and data-in bytes.

pub mod cdrom;
mod mmc;
pub mod sense;

pub use cdrom::CdRom;
pub use sense::Sense;

/// SCSI status GOOD.
pub const STATUS_GOOD: u8 = 0x00;
/// SCSI status CHECK CONDITION: sense data describes the error.
pub const STATUS_CHECK_CONDITION: u8 = 0x02;

/// The outcome of one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScsiResult {
    /// SCSI status byte.
    pub status: u8,
    /// Sense data when `status` is CHECK CONDITION.
    pub sense: Option<Sense>,
    /// Data for the initiator (already cut to the allocation length and the buffer size).
    pub data: Vec<u8>,
    /// The command would transfer more than the initiator's data-in buffer holds.
    pub overrun: bool,
}

impl ScsiResult {
    /// GOOD with `data`.
    pub fn good(data: Vec<u8>) -> Self {
        Self {
            status: STATUS_GOOD,
            sense: None,
            data,
            overrun: false,
        }
    }

    /// CHECK CONDITION with `sense`.
    pub fn check(sense: Sense) -> Self {
        Self {
            status: STATUS_CHECK_CONDITION,
            sense: Some(sense),
            data: Vec::new(),
            overrun: false,
        }
    }
}

/// Big-endian u16 at `at` of a CDB (zero when the CDB is too short).
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(s) => u16::from_be_bytes([s[0], s[1]]),
        None => 0,
    }
}

/// Big-endian u32 at `at` of a CDB (zero when the CDB is too short).
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

/// Big-endian u64 at `at` of a CDB (zero when the CDB is too short).
pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    match b.get(at..at + 8) {
        Some(s) => u64::from_be_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]),
        None => 0,
    }
}
