//! ACPI fixed-hardware power management: PM1a event/control blocks, the PM timer and the
//! reset register, in one I/O block (layout in `arch::layout`: base 0x600).

use std::time::Instant;

use crate::bus::BusDevice;

/// Offset of PM1a_STS within the block.
pub const PM1_STS: u64 = 0;
/// Offset of PM1a_EN.
pub const PM1_EN: u64 = 2;
/// Offset of PM1a_CNT.
pub const PM1_CNT: u64 = 4;
/// Offset of the PM timer.
pub const PM_TMR: u64 = 8;
/// Offset of the reset register.
pub const RESET_REG: u64 = 12;
/// Length of the block.
pub const BLOCK_LEN: u64 = 16;

const SCI_EN: u16 = 1;
const SLP_EN: u16 = 1 << 13;
const SLP_TYP_SHIFT: u16 = 10;
const PM_TIMER_HZ: u128 = 3_579_545;

/// What the guest asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerEvent {
    /// Enter S5 (soft off).
    PowerOff,
    /// Reset through the FADT reset register.
    Reset,
}

/// The PM register block.
pub struct AcpiPm {
    sts: u16,
    en: u16,
    cnt: u16,
    s5_slp_typ: u8,
    reset_value: u8,
    start: Instant,
    on_event: Box<dyn FnMut(PowerEvent) + Send>,
}

impl AcpiPm {
    /// `s5_slp_typ` is the `\_S5` sleep type the DSDT advertises, `reset_value` the FADT's
    /// reset value; `on_event` is told about power-off and reset requests.
    pub fn new(
        s5_slp_typ: u8,
        reset_value: u8,
        on_event: Box<dyn FnMut(PowerEvent) + Send>,
    ) -> Self {
        Self {
            sts: 0,
            en: 0,
            cnt: SCI_EN,
            s5_slp_typ,
            reset_value,
            start: Instant::now(),
            on_event,
        }
    }

    fn timer(&self) -> u32 {
        // A free-running 32-bit counter at 3.579545 MHz (FADT TMR_VAL_EXT).
        (self.start.elapsed().as_nanos() * PM_TIMER_HZ / 1_000_000_000) as u32
    }

    fn write_cnt(&mut self, v: u16) {
        // SCI_EN stays set: the machine is always in ACPI mode.
        self.cnt = (v & !SLP_EN) | SCI_EN;
        if v & SLP_EN != 0 {
            let typ = ((v >> SLP_TYP_SHIFT) & 7) as u8;
            if typ == self.s5_slp_typ {
                (self.on_event)(PowerEvent::PowerOff);
            } else {
                log::warn!("acpi: guest asked for sleep type {typ}, which rvmm does not support");
            }
        }
    }
}

fn set_byte(reg: u16, byte: usize, v: u8) -> u16 {
    let mut b = reg.to_le_bytes();
    b[byte] = v;
    u16::from_le_bytes(b)
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let tmr = self.timer().to_le_bytes();
        for (i, d) in data.iter_mut().enumerate() {
            let o = offset + i as u64;
            *d = match o {
                0 | 1 => self.sts.to_le_bytes()[o as usize],
                2 | 3 => self.en.to_le_bytes()[(o - 2) as usize],
                4 | 5 => self.cnt.to_le_bytes()[(o - 4) as usize],
                8..=11 => tmr[(o - 8) as usize],
                _ => 0,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut new_cnt = None;
        for (i, &v) in data.iter().enumerate() {
            let o = offset + i as u64;
            match o {
                // Status bits are write-one-to-clear.
                0 | 1 => self.sts &= !set_byte(0, o as usize, v),
                2 | 3 => self.en = set_byte(self.en, (o - 2) as usize, v),
                4 | 5 => {
                    let cur = new_cnt.unwrap_or(self.cnt);
                    new_cnt = Some(set_byte(cur, (o - 4) as usize, v));
                }
                RESET_REG if v == self.reset_value => (self.on_event)(PowerEvent::Reset),
                _ => {}
            }
        }
        if let Some(c) = new_cnt {
            self.write_cnt(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn pm() -> (AcpiPm, Arc<Mutex<Vec<PowerEvent>>>) {
        let ev = Arc::new(Mutex::new(Vec::new()));
        let e = ev.clone();
        (
            AcpiPm::new(5, 1, Box::new(move |x| e.lock().unwrap().push(x))),
            ev,
        )
    }

    #[test]
    fn s5_with_slp_en_powers_off() {
        let (mut p, ev) = pm();
        // SLP_TYP = 5 without SLP_EN does nothing.
        p.write(PM1_CNT, &(5u16 << 10).to_le_bytes());
        assert!(ev.lock().unwrap().is_empty());
        p.write(PM1_CNT, &((5u16 << 10) | SLP_EN).to_le_bytes());
        assert_eq!(*ev.lock().unwrap(), vec![PowerEvent::PowerOff]);
        // Other sleep types are refused.
        p.write(PM1_CNT, &((3u16 << 10) | SLP_EN).to_le_bytes());
        assert_eq!(ev.lock().unwrap().len(), 1);
        // Byte-wise writes compose into one control value.
        p.write(PM1_CNT, &[0x00]);
        p.write(PM1_CNT + 1, &[((5u16 << 10 | SLP_EN) >> 8) as u8]);
        assert_eq!(ev.lock().unwrap().len(), 2);
    }

    #[test]
    fn sci_en_reads_set_and_reset_register_resets() {
        let (mut p, ev) = pm();
        let mut b = [0u8; 2];
        p.read(PM1_CNT, &mut b);
        assert_eq!(u16::from_le_bytes(b) & SCI_EN, 1);
        p.write(RESET_REG, &[0x2]);
        assert!(ev.lock().unwrap().is_empty());
        p.write(RESET_REG, &[0x1]);
        assert_eq!(*ev.lock().unwrap(), vec![PowerEvent::Reset]);
    }

    #[test]
    fn timer_counts_up_and_enable_register_holds_its_value() {
        let (mut p, _) = pm();
        let mut a = [0u8; 4];
        p.read(PM_TMR, &mut a);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let mut b = [0u8; 4];
        p.read(PM_TMR, &mut b);
        let (a, b) = (u32::from_le_bytes(a), u32::from_le_bytes(b));
        assert!(b.wrapping_sub(a) >= 7000, "{a} -> {b}");
        p.write(PM1_EN, &[0x21, 0x01]);
        let mut e = [0u8; 2];
        p.read(PM1_EN, &mut e);
        assert_eq!(e, [0x21, 0x01]);
    }
}
