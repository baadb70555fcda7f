//! Helpers the qcow engine test files share.
// Each test binary uses only some of these.
#![allow(dead_code)]

use qcow::{BlockBackend, Qcow2};

/// The writes of a fault-injection run: which regions a completed flush made durable, and
/// whether an injected failure stopped the run.
pub struct FaultedWrites {
    /// Regions written before a flush that completed: they must survive.
    pub durable: Vec<u64>,
    /// A write or flush failed (the fault was hit).
    pub failed: bool,
}

/// Write regions `0..n` (`region(i)` gives offset and length, filled with `pattern(i)`) and
/// flush after every `flush_every` of them, until an injected failure stops the run. The
/// caller arms `q.faults()` first and drops `q` afterwards, the fault still armed, as a crash.
pub fn faulted_writes(
    q: &Qcow2,
    n: u64,
    flush_every: u64,
    region: impl Fn(u64) -> (u64, u64),
    pattern: impl Fn(u64) -> u8,
) -> FaultedWrites {
    let mut durable = Vec::new();
    let mut pending = Vec::new();
    for i in 0..n {
        let (off, len) = region(i);
        if q.write_at(off, &vec![pattern(i); len as usize]).is_err() {
            return FaultedWrites {
                durable,
                failed: true,
            };
        }
        pending.push(i);
        if i % flush_every == flush_every - 1 {
            if q.flush().is_err() {
                return FaultedWrites {
                    durable,
                    failed: true,
                };
            }
            durable.append(&mut pending);
        }
    }
    FaultedWrites {
        durable,
        failed: false,
    }
}
