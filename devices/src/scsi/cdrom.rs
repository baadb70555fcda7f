//! A read-only MMC CD/DVD-ROM drive over a block backend (an ISO file): a tray that can be
//! locked and ejected, media events for GET EVENT STATUS NOTIFICATION, and 2048-byte reads.

use std::sync::Arc;

use qcow::BlockBackend;

use super::mmc::{self, MediaEvent};
use super::sense::Sense;
use super::{be16, be32, be64, ScsiResult};

/// Block size of CD/DVD data.
pub const BLOCK_SIZE: u64 = 2048;
/// Largest single transfer served (the virtio-scsi config advertises less).
pub const MAX_TRANSFER: u64 = 64 * 1024 * 1024;

/// SCSI operation codes handled here.
mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0A;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SELECT_6: u8 = 0x15;
    pub const MODE_SENSE_6: u8 = 0x1A;
    pub const START_STOP_UNIT: u8 = 0x1B;
    pub const PREVENT_ALLOW: u8 = 0x1E;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2A;
    pub const SEEK_10: u8 = 0x2B;
    pub const VERIFY_10: u8 = 0x2F;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const READ_TOC: u8 = 0x43;
    pub const GET_CONFIGURATION: u8 = 0x46;
    pub const GET_EVENT_STATUS: u8 = 0x4A;
    pub const READ_DISC_INFORMATION: u8 = 0x51;
    pub const READ_TRACK_INFORMATION: u8 = 0x52;
    pub const MODE_SELECT_10: u8 = 0x55;
    pub const MODE_SENSE_10: u8 = 0x5A;
    pub const READ_16: u8 = 0x88;
    pub const WRITE_16: u8 = 0x8A;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9E;
    pub const REPORT_LUNS: u8 = 0xA0;
    pub const READ_12: u8 = 0xA8;
    pub const WRITE_12: u8 = 0xAA;
    pub const SET_CD_SPEED: u8 = 0xBB;
    pub const MECHANISM_STATUS: u8 = 0xBD;
}

/// The drive: its medium (an ISO), tray and lock state, and pending events.
pub struct CdRom {
    backend: Arc<dyn BlockBackend>,
    serial: String,
    medium: bool,
    locked: bool,
    event: MediaEvent,
    unit_attention: Option<Sense>,
}

impl CdRom {
    /// A drive with `backend` loaded; `serial` is reported in VPD page 0x80.
    pub fn new(backend: Arc<dyn BlockBackend>, serial: impl Into<String>) -> Self {
        let mut serial: String = serial.into();
        serial.retain(|c| c.is_ascii_graphic());
        serial.truncate(20);
        Self {
            backend,
            serial,
            medium: true,
            locked: false,
            event: MediaEvent::None,
            unit_attention: None,
        }
    }

    /// Number of 2048-byte blocks (a partial last block counts; it reads zero-padded).
    pub fn blocks(&self) -> u64 {
        self.backend.size().div_ceil(BLOCK_SIZE)
    }

    /// Whether a medium is loaded (false after the guest ejected it).
    pub fn has_medium(&self) -> bool {
        self.medium
    }

    /// Whether the guest locked the tray (PREVENT ALLOW MEDIUM REMOVAL).
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Bus/device reset: the tray lock and pending unit attention are cleared (the medium
    /// stays as it is).
    pub fn reset(&mut self) {
        self.locked = false;
        self.unit_attention = None;
    }

    /// Run one command: `cdb` as sent, `data_in_len` the room in the initiator's buffer.
    pub fn execute(&mut self, cdb: &[u8], data_in_len: usize) -> ScsiResult {
        let Some(&opcode) = cdb.first() else {
            return ScsiResult::check(Sense::INVALID_OPCODE);
        };
        // Commands that report (rather than clear or are blocked by) a unit attention.
        let ua_exempt = matches!(
            opcode,
            op::INQUIRY
                | op::REPORT_LUNS
                | op::REQUEST_SENSE
                | op::GET_CONFIGURATION
                | op::GET_EVENT_STATUS
        );
        if !ua_exempt {
            if let Some(ua) = self.unit_attention.take() {
                return ScsiResult::check(ua);
            }
        }
        let mut r = self.dispatch(opcode, cdb, data_in_len);
        if r.data.len() > data_in_len {
            r.data.truncate(data_in_len);
        }
        r
    }

    fn dispatch(&mut self, opcode: u8, cdb: &[u8], data_in_len: usize) -> ScsiResult {
        let cut = |mut d: Vec<u8>, alloc: usize| {
            d.truncate(alloc);
            ScsiResult::good(d)
        };
        match opcode {
            op::TEST_UNIT_READY => self.ready(|| ScsiResult::good(Vec::new())),
            op::REQUEST_SENSE => {
                let sense = match self.unit_attention.take() {
                    Some(ua) => ua,
                    None if !self.medium => Sense::NO_MEDIUM,
                    None => Sense::NO_SENSE,
                };
                cut(sense.to_fixed().to_vec(), usize::from(byte(cdb, 4)))
            }
            op::INQUIRY => {
                let alloc = usize::from(be16(cdb, 3));
                let evpd = byte(cdb, 1) & 1 != 0;
                let page = byte(cdb, 2);
                match (evpd, page) {
                    (false, 0) => cut(mmc::inquiry_standard(), alloc),
                    (false, _) => ScsiResult::check(Sense::INVALID_FIELD),
                    (true, p) => match mmc::inquiry_vpd(p, &self.serial) {
                        Some(d) => cut(d, alloc),
                        None => ScsiResult::check(Sense::INVALID_FIELD),
                    },
                }
            }
            op::MODE_SENSE_6 | op::MODE_SENSE_10 => {
                let ten = opcode == op::MODE_SENSE_10;
                let alloc = if ten {
                    usize::from(be16(cdb, 7))
                } else {
                    usize::from(byte(cdb, 4))
                };
                let pc = byte(cdb, 2) >> 6;
                let page = byte(cdb, 2) & 0x3F;
                if pc == 3 {
                    return ScsiResult::check(Sense::SAVING_NOT_SUPPORTED);
                }
                if byte(cdb, 3) != 0 {
                    return ScsiResult::check(Sense::INVALID_FIELD); // no subpages
                }
                match mmc::mode_sense(page, pc == 1, self.locked, ten) {
                    Some(d) => cut(d, alloc),
                    None => ScsiResult::check(Sense::INVALID_FIELD),
                }
            }
            op::MODE_SELECT_6 | op::MODE_SELECT_10 => ScsiResult::good(Vec::new()),
            op::START_STOP_UNIT => self.start_stop(byte(cdb, 4)),
            op::PREVENT_ALLOW => {
                self.locked = byte(cdb, 4) & 0x03 != 0;
                ScsiResult::good(Vec::new())
            }
            op::READ_CAPACITY_10 => self.ready(|| {
                let last = self.blocks().saturating_sub(1).min(u64::from(u32::MAX)) as u32;
                let mut d = last.to_be_bytes().to_vec();
                d.extend_from_slice(&(BLOCK_SIZE as u32).to_be_bytes());
                ScsiResult::good(d)
            }),
            op::SERVICE_ACTION_IN_16 if byte(cdb, 1) & 0x1F == 0x10 => self.ready(|| {
                let mut d = vec![0u8; 32];
                d[0..8].copy_from_slice(&self.blocks().saturating_sub(1).to_be_bytes());
                d[8..12].copy_from_slice(&(BLOCK_SIZE as u32).to_be_bytes());
                let alloc = be32(cdb, 10) as usize;
                d.truncate(alloc);
                ScsiResult::good(d)
            }),
            op::READ_6 => {
                let lba = u64::from(be32(cdb, 0) & 0x001F_FFFF);
                let count = match byte(cdb, 4) {
                    0 => 256,
                    n => u64::from(n),
                };
                self.read(lba, count, data_in_len)
            }
            op::READ_10 => self.read(
                u64::from(be32(cdb, 2)),
                u64::from(be16(cdb, 7)),
                data_in_len,
            ),
            op::READ_12 => self.read(
                u64::from(be32(cdb, 2)),
                u64::from(be32(cdb, 6)),
                data_in_len,
            ),
            op::READ_16 => self.read(be64(cdb, 2), u64::from(be32(cdb, 10)), data_in_len),
            op::SEEK_10 | op::VERIFY_10 => self.ready(|| {
                if u64::from(be32(cdb, 2)) >= self.blocks() {
                    ScsiResult::check(Sense::LBA_OUT_OF_RANGE)
                } else {
                    ScsiResult::good(Vec::new())
                }
            }),
            op::WRITE_6 | op::WRITE_10 | op::WRITE_12 | op::WRITE_16 => {
                ScsiResult::check(Sense::WRITE_PROTECTED)
            }
            op::SYNCHRONIZE_CACHE_10 | op::SET_CD_SPEED => ScsiResult::good(Vec::new()),
            op::READ_TOC => self.ready(|| {
                let use_msf = byte(cdb, 1) & 0x02 != 0;
                // MMC puts the format in byte 2; older (SFF-8020) drivers in byte 9's top bits.
                let format = match byte(cdb, 2) & 0x0F {
                    0 => byte(cdb, 9) >> 6,
                    f => f,
                };
                match mmc::read_toc(format, byte(cdb, 6), use_msf, self.blocks()) {
                    Some(d) => cut(d, usize::from(be16(cdb, 7))),
                    None => ScsiResult::check(Sense::INVALID_FIELD),
                }
            }),
            op::GET_CONFIGURATION => {
                let blocks = self.medium.then(|| self.blocks());
                match mmc::get_configuration(byte(cdb, 1) & 0x03, be16(cdb, 2), blocks) {
                    Some(d) => cut(d, usize::from(be16(cdb, 7))),
                    None => ScsiResult::check(Sense::INVALID_FIELD),
                }
            }
            op::GET_EVENT_STATUS => {
                if byte(cdb, 1) & 0x01 == 0 {
                    // Asynchronous notification is not offered: only polled requests.
                    return ScsiResult::check(Sense::INVALID_FIELD);
                }
                let request = byte(cdb, 4);
                let d = mmc::event_status(request, self.event, self.medium);
                if request & 0x10 != 0 {
                    self.event = MediaEvent::None;
                }
                cut(d, usize::from(be16(cdb, 7)))
            }
            op::READ_DISC_INFORMATION => self.ready(|| {
                if byte(cdb, 1) & 0x07 != 0 {
                    return ScsiResult::check(Sense::INVALID_FIELD);
                }
                cut(mmc::disc_information(), usize::from(be16(cdb, 7)))
            }),
            op::READ_TRACK_INFORMATION => self.ready(|| {
                let number = u64::from(be32(cdb, 2));
                let ok = match byte(cdb, 1) & 0x03 {
                    0 => number < self.blocks(),
                    1 | 2 => number == 1,
                    _ => false,
                };
                if !ok {
                    return ScsiResult::check(Sense::INVALID_FIELD);
                }
                cut(
                    mmc::track_information(self.blocks()),
                    usize::from(be16(cdb, 7)),
                )
            }),
            op::MECHANISM_STATUS => {
                let mut d = vec![0u8; 8];
                if !self.medium {
                    d[1] = 0x10; // door open
                }
                cut(d, usize::from(be16(cdb, 8)))
            }
            op::REPORT_LUNS => {
                let alloc = be32(cdb, 6) as usize;
                if alloc < 16 {
                    return ScsiResult::check(Sense::INVALID_FIELD);
                }
                let mut d = vec![0u8; 16];
                d[0..4].copy_from_slice(&8u32.to_be_bytes());
                cut(d, alloc)
            }
            other => {
                log::debug!("cdrom: unsupported SCSI opcode {other:#04x}");
                ScsiResult::check(Sense::INVALID_OPCODE)
            }
        }
    }

    /// Run `f` when a medium is loaded, else NOT READY.
    fn ready(&self, f: impl FnOnce() -> ScsiResult) -> ScsiResult {
        if self.medium {
            f()
        } else {
            ScsiResult::check(Sense::NO_MEDIUM)
        }
    }

    fn start_stop(&mut self, b4: u8) -> ScsiResult {
        let start = b4 & 0x01 != 0;
        let load_eject = b4 & 0x02 != 0;
        if b4 >> 4 != 0 || !load_eject {
            return ScsiResult::good(Vec::new()); // power conditions / spin up-down: nothing to do
        }
        if start {
            if !self.medium {
                self.medium = true;
                self.event = MediaEvent::NewMedia;
                self.unit_attention = Some(Sense::MEDIUM_CHANGED);
            }
        } else {
            if self.locked {
                return ScsiResult::check(Sense::REMOVAL_PREVENTED);
            }
            if self.medium {
                self.medium = false;
                self.event = MediaEvent::Removal;
            }
        }
        ScsiResult::good(Vec::new())
    }

    fn read(&self, lba: u64, count: u64, data_in_len: usize) -> ScsiResult {
        if !self.medium {
            return ScsiResult::check(Sense::NO_MEDIUM);
        }
        let blocks = self.blocks();
        if lba.checked_add(count).is_none_or(|end| end > blocks) {
            return ScsiResult::check(Sense::LBA_OUT_OF_RANGE);
        }
        let bytes = count * BLOCK_SIZE;
        if bytes > MAX_TRANSFER {
            return ScsiResult::check(Sense::INVALID_FIELD);
        }
        if bytes > data_in_len as u64 {
            return ScsiResult {
                overrun: true,
                ..ScsiResult::good(Vec::new())
            };
        }
        let offset = lba * BLOCK_SIZE;
        let mut data = vec![0u8; bytes as usize];
        // The last block of an image whose size is not a multiple of 2048 reads zero-padded.
        let avail = self.backend.size().saturating_sub(offset).min(bytes) as usize;
        if let Err(e) = self.backend.read_at(offset, &mut data[..avail]) {
            log::warn!("cdrom: reading {bytes} bytes at block {lba} failed: {e}");
            return ScsiResult::check(Sense::READ_ERROR);
        }
        ScsiResult::good(data)
    }
}

fn byte(cdb: &[u8], at: usize) -> u8 {
    cdb.get(at).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::{STATUS_CHECK_CONDITION, STATUS_GOOD};
    use qcow::{BlockError, BlockResult};

    /// An in-memory "ISO" whose block n is filled with byte n.
    struct Mem(Vec<u8>);

    impl BlockBackend for Mem {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn is_read_only(&self) -> bool {
            true
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> BlockResult<()> {
            qcow::backend::check_range(offset, buf.len() as u64, self.size())?;
            buf.copy_from_slice(&self.0[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }
        fn write_at(&self, _: u64, _: &[u8]) -> BlockResult<()> {
            Err(BlockError::ReadOnly)
        }
        fn flush(&self) -> BlockResult<()> {
            Ok(())
        }
        fn discard(&self, _: u64, _: u64) -> BlockResult<()> {
            Err(BlockError::ReadOnly)
        }
        fn write_zeroes(&self, _: u64, _: u64) -> BlockResult<()> {
            Err(BlockError::ReadOnly)
        }
    }

    fn drive(blocks: usize, extra: usize) -> CdRom {
        let mut v: Vec<u8> = (0..blocks).flat_map(|b| vec![b as u8; 2048]).collect();
        v.extend(std::iter::repeat_n(0xEE, extra));
        CdRom::new(Arc::new(Mem(v)), "SERIAL 1")
    }

    fn sense_of(r: &ScsiResult) -> Sense {
        assert_eq!(r.status, STATUS_CHECK_CONDITION, "{r:?}");
        r.sense.unwrap()
    }

    #[test]
    fn inquiry_reports_a_removable_cdrom() {
        let mut d = drive(4, 0);
        let r = d.execute(&[0x12, 0, 0, 0, 96, 0], 96);
        assert_eq!(r.status, STATUS_GOOD);
        assert_eq!(r.data.len(), 36);
        assert_eq!(r.data[0], 0x05, "peripheral device type 5");
        assert_eq!(r.data[1], 0x80, "removable");
        assert_eq!(&r.data[8..16], b"RVMM    ");
        // Allocation length cuts the data.
        assert_eq!(d.execute(&[0x12, 0, 0, 0, 5, 0], 96).data.len(), 5);
        let vpd = d.execute(&[0x12, 1, 0x80, 0, 255, 0], 255);
        assert_eq!(&vpd.data[4..], b"SERIAL1");
        let pages = d.execute(&[0x12, 1, 0, 0, 255, 0], 255);
        assert_eq!(&pages.data[4..], &[0x00, 0x80, 0x83]);
        assert_eq!(
            sense_of(&d.execute(&[0x12, 1, 0x99, 0, 255, 0], 255)),
            Sense::INVALID_FIELD
        );
        assert_eq!(
            sense_of(&d.execute(&[0x12, 0, 0x80, 0, 255, 0], 255)),
            Sense::INVALID_FIELD
        );
    }

    #[test]
    fn read_capacity_counts_2048_byte_blocks_rounding_up() {
        let mut d = drive(10, 100);
        let r = d.execute(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
        assert_eq!(r.data, [0, 0, 0, 10, 0, 0, 8, 0]);
        let r16 = d.execute(&[0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0], 32);
        assert_eq!(&r16.data[0..12], &[0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 8, 0]);
    }

    #[test]
    fn reads_return_the_blocks_asked_for() {
        let mut d = drive(8, 0);
        let r = d.execute(&[0x28, 0, 0, 0, 0, 3, 0, 0, 2, 0], 4096);
        assert_eq!(r.status, STATUS_GOOD);
        assert_eq!(r.data.len(), 4096);
        assert!(r.data[..2048].iter().all(|&b| b == 3));
        assert!(r.data[2048..].iter().all(|&b| b == 4));
        let r12 = d.execute(&[0xA8, 0, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0], 2048);
        assert!(r12.data.iter().all(|&b| b == 7));
        let r6 = d.execute(&[0x08, 0, 0, 5, 1, 0], 2048);
        assert!(r6.data.iter().all(|&b| b == 5));
        let r16 = d.execute(&[0x88, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 1, 0, 0], 2048);
        assert!(r16.data.iter().all(|&b| b == 6));
        // Zero blocks: good, nothing moved.
        assert_eq!(
            d.execute(&[0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0).data.len(),
            0
        );
    }

    #[test]
    fn reads_past_the_end_or_bigger_than_the_buffer_fail() {
        let mut d = drive(8, 0);
        let past = d.execute(&[0x28, 0, 0, 0, 0, 7, 0, 0, 2, 0], 4096);
        assert_eq!(sense_of(&past), Sense::LBA_OUT_OF_RANGE);
        let huge = d.execute(
            &[
                0xA8, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0,
            ],
            1,
        );
        assert_eq!(sense_of(&huge), Sense::LBA_OUT_OF_RANGE);
        let over = d.execute(&[0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0], 2048);
        assert!(over.overrun);
        assert!(over.data.is_empty());
        let w = d.execute(&[0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0], 0);
        assert_eq!(sense_of(&w), Sense::WRITE_PROTECTED);
    }

    #[test]
    fn partial_last_block_reads_zero_padded() {
        let mut d = drive(2, 100);
        let r = d.execute(&[0x28, 0, 0, 0, 0, 2, 0, 0, 1, 0], 2048);
        assert_eq!(r.status, STATUS_GOOD);
        assert!(r.data[..100].iter().all(|&b| b == 0xEE));
        assert!(r.data[100..].iter().all(|&b| b == 0));
    }

    #[test]
    fn eject_lock_and_reload() {
        let mut d = drive(4, 0);
        assert_eq!(d.execute(&[0x00, 0, 0, 0, 0, 0], 0).status, STATUS_GOOD);
        d.execute(&[0x1E, 0, 0, 0, 1, 0], 0);
        assert!(d.is_locked());
        let refused = d.execute(&[0x1B, 0, 0, 0, 0x02, 0], 0);
        assert_eq!(sense_of(&refused), Sense::REMOVAL_PREVENTED);
        assert!(d.has_medium());
        d.execute(&[0x1E, 0, 0, 0, 0, 0], 0);
        assert_eq!(d.execute(&[0x1B, 0, 0, 0, 0x02, 0], 0).status, STATUS_GOOD);
        assert!(!d.has_medium());
        assert_eq!(
            sense_of(&d.execute(&[0x00, 0, 0, 0, 0, 0], 0)),
            Sense::NO_MEDIUM
        );
        assert_eq!(
            sense_of(&d.execute(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], 2048)),
            Sense::NO_MEDIUM
        );
        let rs = d.execute(&[0x03, 0, 0, 0, 18, 0], 18);
        assert_eq!((rs.data[2], rs.data[12]), (0x02, 0x3A));
        // Media removal event, reported once.
        let ev = d.execute(&[0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8, 0], 8);
        assert_eq!(ev.data, [0, 6, 4, 0x10, 3, 0, 0, 0]);
        let ev = d.execute(&[0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8, 0], 8);
        assert_eq!(ev.data[4], 0);
        // Load: new-media event and a unit attention on the next ordinary command.
        assert_eq!(d.execute(&[0x1B, 0, 0, 0, 0x03, 0], 0).status, STATUS_GOOD);
        assert_eq!(
            sense_of(&d.execute(&[0x00, 0, 0, 0, 0, 0], 0)),
            Sense::MEDIUM_CHANGED
        );
        assert_eq!(d.execute(&[0x00, 0, 0, 0, 0, 0], 0).status, STATUS_GOOD);
        let ev = d.execute(&[0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8, 0], 8);
        assert_eq!(ev.data, [0, 6, 4, 0x10, 2, 2, 0, 0]);
    }

    #[test]
    fn event_status_needs_polling_and_a_supported_class() {
        let mut d = drive(4, 0);
        let async_req = d.execute(&[0x4A, 0, 0, 0, 0x10, 0, 0, 0, 8, 0], 8);
        assert_eq!(sense_of(&async_req), Sense::INVALID_FIELD);
        let other = d.execute(&[0x4A, 1, 0, 0, 0x02, 0, 0, 0, 8, 0], 8);
        assert_eq!(other.data, [0, 2, 0x80, 0x10]);
        let media = d.execute(&[0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8, 0], 8);
        assert_eq!(media.data, [0, 6, 4, 0x10, 0, 2, 0, 0]);
    }

    #[test]
    fn mode_sense_capabilities_page() {
        let mut d = drive(4, 0);
        let r = d.execute(&[0x5A, 0, 0x2A, 0, 0, 0, 0, 0, 255, 0], 255);
        assert_eq!(r.status, STATUS_GOOD);
        assert_eq!(
            u16::from_be_bytes([r.data[0], r.data[1]]) as usize,
            r.data.len() - 2
        );
        let page = &r.data[8..];
        assert_eq!((page[0], page[1]), (0x2A, 20));
        assert_ne!(page[2] & 0x08, 0, "reads DVD-ROM");
        assert_ne!(page[6] & 0x08, 0, "can eject");
        let six = d.execute(&[0x1A, 0, 0x3F, 0, 255, 0], 255);
        assert_eq!(six.data[0] as usize, six.data.len() - 1);
        assert_eq!(six.data.len(), 4 + 12 + 22);
        assert_eq!(six.data[4], 0x01);
        let changeable = d.execute(&[0x1A, 0, 0x40 | 0x2A, 0, 255, 0], 255);
        assert!(changeable.data[6..].iter().all(|&b| b == 0));
        assert_eq!(
            sense_of(&d.execute(&[0x1A, 0, 0x05, 0, 255, 0], 255)),
            Sense::INVALID_FIELD
        );
        let saved = d.execute(&[0x1A, 0, 0xC0 | 0x2A, 0, 255, 0], 255);
        assert_eq!(sense_of(&saved), Sense::SAVING_NOT_SUPPORTED);
    }

    #[test]
    fn read_toc_formats() {
        let mut d = drive(1000, 0);
        let toc = d.execute(&[0x43, 0, 0, 0, 0, 0, 0, 0, 100, 0], 100);
        assert_eq!(toc.data.len(), 4 + 16);
        assert_eq!(&toc.data[0..4], &[0, 18, 1, 1]);
        assert_eq!(&toc.data[4..12], &[0, 0x14, 1, 0, 0, 0, 0, 0]);
        assert_eq!(&toc.data[12..20], &[0, 0x14, 0xAA, 0, 0, 0, 0x03, 0xE8]);
        // MSF: lead-out at 1000 + 150 frames = 00:15:25.
        let msf = d.execute(&[0x43, 2, 0, 0, 0, 0, 0, 0, 100, 0], 100);
        assert_eq!(&msf.data[16..20], &[0, 0, 15, 25]);
        let leadout_only = d.execute(&[0x43, 0, 0, 0, 0, 0, 0xAA, 0, 100, 0], 100);
        assert_eq!(leadout_only.data.len(), 12);
        let session = d.execute(&[0x43, 0, 1, 0, 0, 0, 0, 0, 100, 0], 100);
        assert_eq!(session.data, [0, 10, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0]);
        let full = d.execute(&[0x43, 2, 2, 0, 0, 0, 0, 0, 200, 0], 200);
        assert_eq!(full.data.len(), 4 + 4 * 11);
        assert_eq!(full.data[7], 0xA0);
        assert_eq!(
            sense_of(&d.execute(&[0x43, 0, 0, 0, 0, 0, 5, 0, 100, 0], 100)),
            Sense::INVALID_FIELD
        );
        assert_eq!(
            sense_of(&d.execute(&[0x43, 0, 7, 0, 0, 0, 0, 0, 100, 0], 100)),
            Sense::INVALID_FIELD
        );
    }

    fn features(data: &[u8]) -> Vec<(u16, bool)> {
        let mut out = Vec::new();
        let mut pos = 8;
        while pos + 4 <= data.len() {
            let code = u16::from_be_bytes([data[pos], data[pos + 1]]);
            out.push((code, data[pos + 2] & 1 != 0));
            pos += 4 + data[pos + 3] as usize;
        }
        out
    }

    #[test]
    fn get_configuration_profiles_and_features() {
        let mut d = drive(100, 0);
        let all = d.execute(&[0x46, 0, 0, 0, 0, 0, 0, 1, 0, 0], 256);
        assert_eq!(
            u32::from_be_bytes([all.data[0], all.data[1], all.data[2], all.data[3]]) as usize,
            all.data.len() - 4
        );
        assert_eq!(
            &all.data[6..8],
            &[0x00, 0x08],
            "small image: CD-ROM profile"
        );
        let f = features(&all.data);
        assert_eq!(
            f.iter().map(|x| x.0).collect::<Vec<_>>(),
            [0, 1, 3, 0x10, 0x1E, 0x1F]
        );
        let current = d.execute(&[0x46, 1, 0, 0, 0, 0, 0, 1, 0, 0], 256);
        assert!(features(&current.data).iter().all(|x| x.1));
        assert!(!features(&current.data).iter().any(|x| x.0 == 0x1F));
        let one = d.execute(&[0x46, 2, 0, 0x10, 0, 0, 0, 1, 0, 0], 256);
        assert_eq!(features(&one.data), [(0x10, true)]);
        // A header-only request still reports the full length.
        let head = d.execute(&[0x46, 0, 0, 0, 0, 0, 0, 0, 8, 0], 8);
        assert_eq!(head.data.len(), 8);
        assert_eq!(head.data[0..4], all.data[0..4]);
        // Without a medium there is no current profile.
        d.execute(&[0x1B, 0, 0, 0, 0x02, 0], 0);
        let none = d.execute(&[0x46, 0, 0, 0, 0, 0, 0, 1, 0, 0], 256);
        assert_eq!(&none.data[6..8], &[0, 0]);
    }

    #[test]
    fn big_images_are_dvds() {
        struct Big;
        impl BlockBackend for Big {
            fn size(&self) -> u64 {
                4 << 30
            }
            fn is_read_only(&self) -> bool {
                true
            }
            fn read_at(&self, _: u64, buf: &mut [u8]) -> BlockResult<()> {
                buf.fill(0x5A);
                Ok(())
            }
            fn write_at(&self, _: u64, _: &[u8]) -> BlockResult<()> {
                Err(BlockError::ReadOnly)
            }
            fn flush(&self) -> BlockResult<()> {
                Ok(())
            }
            fn discard(&self, _: u64, _: u64) -> BlockResult<()> {
                Err(BlockError::ReadOnly)
            }
            fn write_zeroes(&self, _: u64, _: u64) -> BlockResult<()> {
                Err(BlockError::ReadOnly)
            }
        }
        let mut d = CdRom::new(Arc::new(Big), "x");
        let cfg = d.execute(&[0x46, 0, 0, 0, 0, 0, 0, 1, 0, 0], 256);
        assert_eq!(&cfg.data[6..8], &[0x00, 0x10]);
        let cap = d.execute(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
        assert_eq!(&cap.data[0..4], &((2u32 << 20) - 1).to_be_bytes());
    }

    #[test]
    fn disc_track_report_luns_and_unknown_opcodes() {
        let mut d = drive(50, 0);
        let di = d.execute(&[0x51, 0, 0, 0, 0, 0, 0, 0, 34, 0], 34);
        assert_eq!((di.data[2], di.data[3], di.data[4]), (0x0E, 1, 1));
        let ti = d.execute(&[0x52, 1, 0, 0, 0, 1, 0, 0, 36, 0], 36);
        assert_eq!(&ti.data[24..28], &50u32.to_be_bytes());
        assert_eq!(
            sense_of(&d.execute(&[0x52, 1, 0, 0, 0, 2, 0, 0, 36, 0], 36)),
            Sense::INVALID_FIELD
        );
        let luns = d.execute(&[0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0], 16);
        assert_eq!(luns.data, [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(sense_of(&d.execute(&[0xC7], 0)), Sense::INVALID_OPCODE);
        assert_eq!(sense_of(&d.execute(&[], 0)), Sense::INVALID_OPCODE);
        // Truncated CDBs read missing bytes as zero rather than panicking.
        assert_eq!(d.execute(&[0x28], 0).status, STATUS_GOOD);
        assert_eq!(d.execute(&[0x12], 0).data.len(), 0);
    }

    #[test]
    fn random_cdbs_keep_the_invariants() {
        let mut d = drive(64, 300);
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000 {
            let len = (next() % 17) as usize;
            let mut cdb: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Hit the implemented opcodes most of the time.
            const OPS: &[u8] = &[
                0x00, 0x03, 0x08, 0x12, 0x1A, 0x1B, 0x1E, 0x25, 0x28, 0x2B, 0x43, 0x46, 0x4A, 0x51,
                0x52, 0x5A, 0x88, 0x9E, 0xA0, 0xA8, 0xBD,
            ];
            if let Some(op) = cdb.first_mut() {
                if i % 4 != 0 {
                    *op = OPS[(next() % OPS.len() as u64) as usize];
                }
            }
            let room = (next() % 70_000) as usize;
            let r = d.execute(&cdb, room);
            assert!(
                r.data.len() <= room,
                "{cdb:02x?}: {} > {room}",
                r.data.len()
            );
            match r.status {
                STATUS_GOOD => assert!(r.sense.is_none()),
                STATUS_CHECK_CONDITION => assert!(r.sense.is_some() && r.data.is_empty()),
                other => panic!("status {other:#x} for {cdb:02x?}"),
            }
        }
    }
}
