//! MSI-X: the capability, the vector table and the pending-bit array of one function.

use std::sync::Arc;

use super::{MsiController, MsiMessage};

/// PCI capability ID of MSI-X.
pub const CAP_ID_MSIX: u8 = 0x11;
/// Size of the MSI-X capability in configuration space.
pub const CAP_LEN: usize = 12;
const ENTRY_SIZE: u64 = 16;
const CTRL_ENABLE: u16 = 1 << 15;
const CTRL_FUNCTION_MASK: u16 = 1 << 14;
const VECTOR_MASKED: u32 = 1;

#[derive(Clone, Copy, Default)]
struct Entry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    ctrl: u32,
}

impl Entry {
    fn msg(&self) -> MsiMessage {
        MsiMessage {
            address: u64::from(self.addr_hi) << 32 | u64::from(self.addr_lo),
            data: self.data,
        }
    }
}

/// The MSI-X state of one function; table and PBA live in a BAR at offsets chosen by the owner.
pub struct Msix {
    entries: Vec<Entry>,
    pending: Vec<u64>,
    enabled: bool,
    function_masked: bool,
    controller: Arc<dyn MsiController>,
}

impl Msix {
    /// `vectors` table entries (1–2048), all masked, delivering through `controller`.
    pub fn new(vectors: u16, controller: Arc<dyn MsiController>) -> Self {
        let n = vectors.clamp(1, 2048) as usize;
        Self {
            entries: vec![
                Entry {
                    ctrl: VECTOR_MASKED,
                    ..Entry::default()
                };
                n
            ],
            pending: vec![0; n.div_ceil(64)],
            enabled: false,
            function_masked: false,
            controller,
        }
    }

    /// Number of vectors.
    pub fn vectors(&self) -> u16 {
        self.entries.len() as u16
    }

    /// Capability bytes (ID, next, control, table and PBA offset/BIR) and their write mask.
    pub fn capability(&self, bar: u8, table_off: u32, pba_off: u32) -> (Vec<u8>, Vec<u8>) {
        let mut body = vec![CAP_ID_MSIX, 0];
        body.extend_from_slice(&(self.vectors() - 1).to_le_bytes());
        body.extend_from_slice(&(table_off | u32::from(bar)).to_le_bytes());
        body.extend_from_slice(&(pba_off | u32::from(bar)).to_le_bytes());
        let mut mask = vec![0u8; CAP_LEN];
        mask[2..4].copy_from_slice(&(CTRL_ENABLE | CTRL_FUNCTION_MASK).to_le_bytes());
        (body, mask)
    }

    /// Bytes of the table occupied in the BAR.
    pub fn table_size(&self) -> u64 {
        self.entries.len() as u64 * ENTRY_SIZE
    }

    /// Bytes of the PBA occupied in the BAR.
    pub fn pba_size(&self) -> u64 {
        self.pending.len() as u64 * 8
    }

    /// Whether the guest enabled MSI-X (so INTx must stay quiet).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The guest wrote the capability's message control register.
    pub fn set_control(&mut self, ctrl: u16) {
        let was = (self.enabled, self.function_masked);
        self.enabled = ctrl & CTRL_ENABLE != 0;
        self.function_masked = ctrl & CTRL_FUNCTION_MASK != 0;
        if was != (self.enabled, self.function_masked) {
            for v in 0..self.vectors() {
                self.push_route(v);
                self.deliver_pending(v);
            }
        }
    }

    /// Guest read inside the table.
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if !matches!(data.len(), 4 | 8) || offset & (data.len() as u64 - 1) != 0 {
            log::warn!(
                "msix: ignored {}-byte table read at {offset:#x}",
                data.len()
            );
            return;
        }
        for (i, chunk) in data.chunks_mut(4).enumerate() {
            let off = offset + 4 * i as u64;
            if let Some(e) = self.entries.get((off / ENTRY_SIZE) as usize) {
                let v = match off % ENTRY_SIZE {
                    0 => e.addr_lo,
                    4 => e.addr_hi,
                    8 => e.data,
                    _ => e.ctrl,
                };
                chunk.copy_from_slice(&v.to_le_bytes());
            }
        }
    }

    /// Guest write inside the table.
    pub fn table_write(&mut self, offset: u64, data: &[u8]) {
        if !matches!(data.len(), 4 | 8) || offset & (data.len() as u64 - 1) != 0 {
            log::warn!(
                "msix: ignored {}-byte table write at {offset:#x}",
                data.len()
            );
            return;
        }
        for (i, chunk) in data.chunks(4).enumerate() {
            let off = offset + 4 * i as u64;
            let idx = (off / ENTRY_SIZE) as usize;
            let v = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let Some(e) = self.entries.get_mut(idx) else {
                continue;
            };
            match off % ENTRY_SIZE {
                0 => e.addr_lo = v,
                4 => e.addr_hi = v,
                8 => e.data = v,
                _ => e.ctrl = v & VECTOR_MASKED,
            }
            self.push_route(idx as u16);
            self.deliver_pending(idx as u16);
        }
    }

    /// Guest read inside the PBA (writes to it are ignored).
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let o = offset as usize + i;
            *b = self
                .pending
                .get(o / 8)
                .map(|w| (w >> (8 * (o % 8))) as u8)
                .unwrap_or(0);
        }
    }

    fn masked(&self, v: u16) -> bool {
        self.function_masked
            || self
                .entries
                .get(v as usize)
                .is_none_or(|e| e.ctrl & VECTOR_MASKED != 0)
    }

    fn push_route(&self, v: u16) {
        if let Some(e) = self.entries.get(v as usize) {
            if let Err(err) = self.controller.configure(v, e.msg(), self.masked(v)) {
                log::error!("msix: routing vector {v} failed: {err}");
            }
        }
    }

    fn deliver_pending(&mut self, v: u16) {
        let (w, bit) = (v as usize / 64, 1u64 << (v % 64));
        if self.enabled && !self.masked(v) && self.pending.get(w).is_some_and(|p| p & bit != 0) {
            self.pending[w] &= !bit;
            self.send(v);
        }
    }

    fn send(&self, v: u16) {
        if let Err(err) = self.controller.trigger(v) {
            log::error!("msix: sending vector {v} failed: {err}");
        }
    }

    /// Raise vector `v`: sent now, or marked pending while masked. Returns false when MSI-X is
    /// disabled or `v` does not exist (the caller falls back to INTx or drops it).
    pub fn notify(&mut self, v: u16) -> bool {
        if !self.enabled || v as usize >= self.entries.len() {
            return false;
        }
        if self.masked(v) {
            self.pending[v as usize / 64] |= 1 << (v % 64);
        } else {
            self.send(v);
        }
        true
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records routes and sends, for tests of MSI-X users.
    #[derive(Default)]
    pub struct RecordingMsi {
        pub routes: Mutex<Vec<(u16, MsiMessage, bool)>>,
        pub sent: Mutex<Vec<u16>>,
    }

    impl MsiController for RecordingMsi {
        fn configure(&self, vector: u16, msg: MsiMessage, masked: bool) -> std::io::Result<()> {
            self.routes.lock().unwrap().push((vector, msg, masked));
            Ok(())
        }
        fn trigger(&self, vector: u16) -> std::io::Result<()> {
            self.sent.lock().unwrap().push(vector);
            Ok(())
        }
    }

    #[test]
    fn mask_pending_and_unmask_delivers() {
        let rec = Arc::new(RecordingMsi::default());
        let mut m = Msix::new(3, rec.clone());
        assert!(!m.notify(1), "disabled MSI-X must not deliver");
        m.set_control(CTRL_ENABLE);
        m.table_write(16, &0xfee0_0000u32.to_le_bytes());
        m.table_write(24, &0x41u32.to_le_bytes());
        assert!(m.notify(1));
        assert!(rec.sent.lock().unwrap().is_empty(), "vector is masked");
        let mut pba = [0u8; 8];
        m.pba_read(0, &mut pba);
        assert_eq!(pba[0], 0b10);
        m.table_write(28, &0u32.to_le_bytes()); // unmask
        assert_eq!(*rec.sent.lock().unwrap(), vec![1]);
        m.pba_read(0, &mut pba);
        assert_eq!(pba[0], 0);
        let last = *rec.routes.lock().unwrap().last().unwrap();
        assert_eq!(
            last,
            (
                1,
                MsiMessage {
                    address: 0xfee0_0000,
                    data: 0x41
                },
                false
            )
        );
        let mut d = [0u8; 4];
        m.table_read(24, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x41);
        // Function mask holds everything pending.
        m.set_control(CTRL_ENABLE | CTRL_FUNCTION_MASK);
        m.notify(1);
        assert_eq!(rec.sent.lock().unwrap().len(), 1);
        m.set_control(CTRL_ENABLE);
        assert_eq!(*rec.sent.lock().unwrap(), vec![1, 1]);
        // Out-of-range and odd-sized accesses are ignored.
        assert!(!m.notify(7));
        m.table_write(3, &[1, 2]);
        m.table_read(1000, &mut d);
        assert_eq!(d, [0xff; 4]);
    }
}
