//! The 8250/16550 UART (COM1) on top of vm-superio, as a bus device.

use std::io::{self, Write};
use std::sync::Arc;

use crate::bus::BusDevice;
use crate::irq::Interrupt;

/// Base port of COM1.
pub const COM1_BASE: u64 = 0x3f8;
/// Number of ports the UART decodes.
pub const UART_PORTS: u64 = 8;
/// ISA IRQ of COM1.
pub const COM1_IRQ: u32 = 4;

/// Adapts an [`Interrupt`] line to vm-superio's trigger interface.
pub struct IrqTrigger(pub Arc<dyn Interrupt>);

impl vm_superio::Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.trigger()
    }
}

/// Where the guest's serial output goes.
pub type SerialOut = Box<dyn Write + Send>;

/// A 16550 UART whose transmit side writes to `out` and whose receive side is fed by
/// [`Serial::enqueue_input`].
pub struct Serial {
    inner: vm_superio::Serial<IrqTrigger, vm_superio::serial::NoEvents, SerialOut>,
}

impl Serial {
    /// A UART raising `irq` and writing guest output to `out`.
    pub fn new(irq: Arc<dyn Interrupt>, out: SerialOut) -> Self {
        Self {
            inner: vm_superio::Serial::new(IrqTrigger(irq), out),
        }
    }

    /// Queue host input bytes for the guest; returns how many fit in the receive FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let room = self.inner.fifo_capacity();
        let n = bytes.len().min(room);
        if n == 0 {
            return 0;
        }
        match self.inner.enqueue_raw_bytes(&bytes[..n]) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("serial: cannot queue input for the guest: {e:?}");
                0
            }
        }
    }

    /// Free space in the receive FIFO.
    pub fn input_room(&self) -> usize {
        self.inner.fifo_capacity()
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() != 1 || offset >= UART_PORTS {
            data.fill(0xff);
            return;
        }
        data[0] = self.inner.read(offset as u8);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() != 1 || offset >= UART_PORTS {
            return;
        }
        if let Err(e) = self.inner.write(offset as u8, data[0]) {
            log::debug!("serial: write to register {offset} failed: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Interrupt for Count {
        fn trigger(&self) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn transmit_reaches_the_writer_and_input_raises_the_irq() {
        let irq = Arc::new(Count::default());
        let sink = Sink::default();
        let mut s = Serial::new(irq.clone(), Box::new(sink.clone()));
        for b in b"hi\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\n");
        // Enable the received-data interrupt (IER bit 0), then feed input.
        s.write(1, &[0x01]);
        let before = irq.0.load(Ordering::SeqCst);
        assert_eq!(s.enqueue_input(b"ok"), 2);
        assert!(irq.0.load(Ordering::SeqCst) > before);
        // LSR bit 0: data ready.
        let mut lsr = [0u8];
        s.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1);
        let mut b = [0u8];
        s.read(0, &mut b);
        assert_eq!(b[0], b'o');
        s.read(0, &mut b);
        assert_eq!(b[0], b'k');
        s.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 0);
    }

    #[test]
    fn fifo_overflow_is_reported_not_lost_silently() {
        let mut s = Serial::new(Arc::new(Count::default()), Box::new(io::sink()));
        let room = s.input_room();
        let big = vec![b'x'; room + 10];
        assert_eq!(s.enqueue_input(&big), room);
        assert_eq!(s.enqueue_input(b"y"), 0);
        // Odd widths and offsets do not panic.
        let mut w = [0u8; 2];
        s.read(0, &mut w);
        assert_eq!(w, [0xff, 0xff]);
        s.write(9, &[1]);
    }
}
