//! The MC146818 RTC and CMOS RAM at ports 0x70 (index) / 0x71 (data): the host's UTC time,
//! BCD or binary and 12- or 24-hour as the guest selects in status register B, and the
//! memory-size bytes firmware and guests read.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::bus::BusDevice;

/// Base port (index register).
pub const CMOS_BASE: u64 = 0x70;
/// Ports decoded: index and data.
pub const CMOS_PORTS: u64 = 2;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

const B_24H: u8 = 0x02;
const B_BINARY: u8 = 0x04;

/// Broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Full year, e.g. 2026.
    pub year: u32,
    /// 1–12.
    pub month: u32,
    /// 1–31.
    pub day: u32,
    /// 0–23.
    pub hour: u32,
    /// 0–59.
    pub minute: u32,
    /// 0–59.
    pub second: u32,
    /// 1 (Sunday) – 7 (Saturday), as the RTC counts.
    pub weekday: u32,
}

impl DateTime {
    /// The UTC date and time `secs` seconds after the Unix epoch.
    pub fn from_unix(secs: u64) -> Self {
        let days = (secs / 86400) as i64;
        let rem = secs % 86400;
        // Civil-from-days (proleptic Gregorian), counting eras of 400 years from 0000-03-01.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as u32;
        // 1970-01-01 was a Thursday (RTC weekday 5).
        let weekday = ((days + 4).rem_euclid(7) + 1) as u32;
        Self {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem / 60 % 60) as u32,
            second: (rem % 60) as u32,
            weekday,
        }
    }
}

fn bcd(v: u32) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

/// The RTC/CMOS device.
pub struct Cmos {
    index: u8,
    ram: [u8; 128],
    clock: Box<dyn Fn() -> u64 + Send>,
}

impl Cmos {
    /// A CMOS for a guest with `low_mem` bytes of RAM below 4 GiB and `high_mem` above.
    pub fn new(low_mem: u64, high_mem: u64) -> Self {
        Self::with_clock(
            low_mem,
            high_mem,
            Box::new(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            }),
        )
    }

    /// As [`Cmos::new`] with a clock returning Unix seconds (for tests).
    pub fn with_clock(low_mem: u64, high_mem: u64, clock: Box<dyn Fn() -> u64 + Send>) -> Self {
        let mut ram = [0u8; 128];
        ram[REG_A as usize] = 0x26; // 32.768 kHz time base, 1024 Hz periodic rate
        ram[REG_B as usize] = B_24H;
        ram[REG_D as usize] = 0x80; // valid RAM and time
                                    // Base memory in KiB (640) and extended memory 1–64 MiB in KiB.
        ram[0x15] = (640u16 & 0xff) as u8;
        ram[0x16] = (640u16 >> 8) as u8;
        let ext_kib = (low_mem.saturating_sub(1 << 20) / 1024).min(0xfc00) as u16;
        for r in [0x17, 0x30] {
            ram[r] = ext_kib as u8;
            ram[r + 1] = (ext_kib >> 8) as u8;
        }
        // RAM above 16 MiB (below 4 GiB) in 64 KiB units.
        let above16 = (low_mem.saturating_sub(16 << 20) >> 16).min(0xffff) as u16;
        ram[0x34] = above16 as u8;
        ram[0x35] = (above16 >> 8) as u8;
        // RAM above 4 GiB in 64 KiB units, 24 bits.
        let high = (high_mem >> 16).min(0xff_ffff) as u32;
        ram[0x5b] = high as u8;
        ram[0x5c] = (high >> 8) as u8;
        ram[0x5d] = (high >> 16) as u8;
        Self {
            index: 0,
            ram,
            clock,
        }
    }

    fn encode(&self, v: u32) -> u8 {
        if self.ram[REG_B as usize] & B_BINARY != 0 {
            v as u8
        } else {
            bcd(v)
        }
    }

    fn read_reg(&self, reg: u8) -> u8 {
        let is_time = matches!(
            reg,
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_WEEKDAY | REG_DAY | REG_MONTH | REG_YEAR
        ) || reg == REG_CENTURY;
        if !is_time {
            return match reg {
                REG_C => 0,
                _ => self.ram[reg as usize],
            };
        }
        let t = DateTime::from_unix((self.clock)());
        match reg {
            REG_SECONDS => self.encode(t.second),
            REG_MINUTES => self.encode(t.minute),
            REG_HOURS => {
                if self.ram[REG_B as usize] & B_24H != 0 {
                    self.encode(t.hour)
                } else {
                    let h12 = match t.hour % 12 {
                        0 => 12,
                        h => h,
                    };
                    let pm = if t.hour >= 12 { 0x80 } else { 0 };
                    self.encode(h12) | pm
                }
            }
            REG_WEEKDAY => self.encode(t.weekday),
            REG_DAY => self.encode(t.day),
            REG_MONTH => self.encode(t.month),
            REG_YEAR => self.encode(t.year % 100),
            _ => self.encode(t.year / 100),
        }
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            0 => self.index,
            1 => self.read_reg(self.index),
            _ => 0xff,
        };
        data.fill(0);
        if let Some(d) = data.first_mut() {
            *d = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            // Bit 7 of the index port is the NMI mask, which rvmm does not model.
            0 => self.index = v & 0x7f,
            1 => match self.index {
                REG_SECONDS..=REG_YEAR | REG_CENTURY => {
                    log::debug!(
                        "cmos: ignoring write to RTC time register {:#x}",
                        self.index
                    )
                }
                REG_C | REG_D => {}
                // Keep the UIP bit clear: the clock never reports an update in progress.
                REG_A => self.ram[REG_A as usize] = v & 0x7f,
                r => self.ram[r as usize] = v,
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-01 07:42:52 UTC, a Tuesday.
    const T: u64 = 1_796_110_972;

    fn rd(c: &mut Cmos, reg: u8) -> u8 {
        c.write(0, &[reg]);
        let mut b = [0u8];
        c.read(1, &mut b);
        b[0]
    }

    #[test]
    fn unix_time_converts_to_the_calendar() {
        assert_eq!(
            DateTime::from_unix(0),
            DateTime {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0,
                weekday: 5
            }
        );
        let t = DateTime::from_unix(T);
        assert_eq!((t.year, t.month, t.day), (2026, 12, 1));
        assert_eq!((t.hour, t.minute, t.second, t.weekday), (7, 42, 52, 3));
        // Leap day.
        let l = DateTime::from_unix(951_782_400);
        assert_eq!((l.year, l.month, l.day), (2000, 2, 29));
    }

    #[test]
    fn time_reads_in_bcd_then_binary_and_12_hour() {
        let mut c = Cmos::with_clock(512 << 20, 0, Box::new(|| T + 6 * 3600));
        assert_eq!(rd(&mut c, REG_SECONDS), 0x52);
        assert_eq!(rd(&mut c, REG_MINUTES), 0x42);
        assert_eq!(rd(&mut c, REG_HOURS), 0x13);
        assert_eq!(rd(&mut c, REG_DAY), 0x01);
        assert_eq!(rd(&mut c, REG_MONTH), 0x12);
        assert_eq!(rd(&mut c, REG_YEAR), 0x26);
        assert_eq!(rd(&mut c, REG_CENTURY), 0x20);
        assert_eq!(rd(&mut c, REG_D), 0x80);
        assert_eq!(rd(&mut c, REG_A) & 0x80, 0, "no update in progress");
        c.write(0, &[REG_B]);
        c.write(1, &[B_BINARY]);
        assert_eq!(rd(&mut c, REG_HOURS), 0x80 | 1, "1 PM, 12-hour binary");
        assert_eq!(rd(&mut c, REG_YEAR), 26);
        assert_eq!(rd(&mut c, REG_B), B_BINARY);
    }

    #[test]
    fn memory_size_bytes_describe_ram() {
        let mut c = Cmos::with_clock(3 << 30, 2 << 30, Box::new(|| 0));
        let w = |c: &mut Cmos, r: u8| u32::from(rd(c, r)) | (u32::from(rd(c, r + 1)) << 8);
        assert_eq!(w(&mut c, 0x15), 640);
        assert_eq!(w(&mut c, 0x17), 0xfc00);
        assert_eq!(w(&mut c, 0x34), (((3u64 << 30) - (16 << 20)) >> 16) as u32);
        let high = u32::from(rd(&mut c, 0x5b))
            | (u32::from(rd(&mut c, 0x5c)) << 8)
            | (u32::from(rd(&mut c, 0x5d)) << 16);
        assert_eq!(high, (2u32 << 30) >> 16);
        let mut small = Cmos::with_clock(8 << 20, 0, Box::new(|| 0));
        assert_eq!(w(&mut small, 0x17), 7 * 1024);
        assert_eq!(w(&mut small, 0x34), 0);
        // Plain CMOS RAM is writable; the index masks off the NMI bit.
        small.write(0, &[0x80 | 0x40]);
        small.write(1, &[0x5a]);
        assert_eq!(rd(&mut small, 0x40), 0x5a);
    }
}
