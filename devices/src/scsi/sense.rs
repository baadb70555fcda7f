//! Sense data (SPC fixed format) and the sense codes the CD-ROM reports.

/// Sense key with additional sense code and qualifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sense {
    /// Sense key (2 NOT READY, 3 MEDIUM ERROR, 5 ILLEGAL REQUEST, 6 UNIT ATTENTION, 7 DATA PROTECT).
    pub key: u8,
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
}

impl Sense {
    /// No error.
    pub const NO_SENSE: Sense = Sense::new(0x00, 0x00, 0x00);
    /// NOT READY, MEDIUM NOT PRESENT.
    pub const NO_MEDIUM: Sense = Sense::new(0x02, 0x3A, 0x00);
    /// MEDIUM ERROR, UNRECOVERED READ ERROR (the backing file failed).
    pub const READ_ERROR: Sense = Sense::new(0x03, 0x11, 0x00);
    /// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE.
    pub const INVALID_OPCODE: Sense = Sense::new(0x05, 0x20, 0x00);
    /// ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub const LBA_OUT_OF_RANGE: Sense = Sense::new(0x05, 0x21, 0x00);
    /// ILLEGAL REQUEST, INVALID FIELD IN CDB.
    pub const INVALID_FIELD: Sense = Sense::new(0x05, 0x24, 0x00);
    /// ILLEGAL REQUEST, SAVING PARAMETERS NOT SUPPORTED.
    pub const SAVING_NOT_SUPPORTED: Sense = Sense::new(0x05, 0x39, 0x00);
    /// ILLEGAL REQUEST, MEDIUM REMOVAL PREVENTED.
    pub const REMOVAL_PREVENTED: Sense = Sense::new(0x05, 0x53, 0x02);
    /// UNIT ATTENTION, NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED.
    pub const MEDIUM_CHANGED: Sense = Sense::new(0x06, 0x28, 0x00);
    /// DATA PROTECT, WRITE PROTECTED.
    pub const WRITE_PROTECTED: Sense = Sense::new(0x07, 0x27, 0x00);

    /// A sense triple.
    pub const fn new(key: u8, asc: u8, ascq: u8) -> Sense {
        Sense { key, asc, ascq }
    }

    /// The 18-byte fixed-format sense data (response code 0x70, current error).
    pub fn to_fixed(self) -> [u8; 18] {
        let mut s = [0u8; 18];
        s[0] = 0x70;
        s[2] = self.key & 0x0F;
        s[7] = 10; // additional sense length
        s[12] = self.asc;
        s[13] = self.ascq;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_format_layout() {
        let s = Sense::LBA_OUT_OF_RANGE.to_fixed();
        assert_eq!(s[0], 0x70);
        assert_eq!(s[2], 0x05);
        assert_eq!(s[7], 10);
        assert_eq!((s[12], s[13]), (0x21, 0x00));
    }
}
