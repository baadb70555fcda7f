//! Test and timing ports: the isa-debug-exit style exit port (0xf4) and the boot-marker port
//! (0x80) that logs time since process start.

use std::time::{Duration, Instant};

use crate::bus::BusDevice;

/// Port of the debug-exit device.
pub const DEBUG_EXIT_PORT: u64 = 0xf4;
/// Port of the boot-marker device.
pub const BOOT_MARKER_PORT: u64 = 0x80;

/// Writing byte `v` asks the VMM to end with exit status `v`.
pub struct DebugExit {
    on_exit: Box<dyn FnMut(u8) + Send>,
}

impl DebugExit {
    /// `on_exit` is called with the byte the guest wrote.
    pub fn new(on_exit: Box<dyn FnMut(u8) + Send>) -> Self {
        Self { on_exit }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Only the first byte counts, whatever the access width.
        if offset == 0 {
            if let Some(v) = data.first() {
                (self.on_exit)(*v);
            }
        }
    }
}

/// Logs, for each value the guest writes, the time since `start` (the process start).
pub struct BootMarker {
    start: Instant,
    seen: [bool; 256],
    marks: Vec<(u8, Duration)>,
}

impl BootMarker {
    /// Marker measuring from `start`.
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            seen: [false; 256],
            marks: Vec::new(),
        }
    }

    /// Every write so far: value and time since start.
    pub fn marks(&self) -> &[(u8, Duration)] {
        &self.marks
    }
}

impl BusDevice for BootMarker {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        let t = self.start.elapsed();
        let ms = t.as_secs_f64() * 1000.0;
        if !self.seen[v as usize] {
            self.seen[v as usize] = true;
            log::info!("boot marker {v:#04x} at {ms:.3} ms since process start");
        } else {
            log::debug!("boot marker {v:#04x} again at {ms:.3} ms");
        }
        // Bounded so that a guest looping on the port cannot grow host memory.
        if self.marks.len() < 4096 {
            self.marks.push((v, t));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn debug_exit_reports_the_written_byte() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let mut d = DebugExit::new(Box::new(move |v| g.lock().unwrap().push(v)));
        d.write(0, &[0x31]);
        d.write(0, &[7, 8, 9, 10]);
        assert_eq!(*got.lock().unwrap(), vec![0x31, 7]);
    }

    #[test]
    fn boot_marker_records_each_write_in_order() {
        let mut m = BootMarker::new(Instant::now());
        m.write(0, &[1]);
        m.write(0, &[2]);
        m.write(0, &[1]);
        let v: Vec<u8> = m.marks().iter().map(|(v, _)| *v).collect();
        assert_eq!(v, vec![1, 2, 1]);
        assert!(m.marks()[0].1 <= m.marks()[2].1);
        for _ in 0..5000 {
            m.write(0, &[3]);
        }
        assert_eq!(m.marks().len(), 4096);
    }
}
