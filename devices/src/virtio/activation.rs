//! Pieces every in-VMM virtio device repeats when the driver activates it: the feature check,
//! the config-space read, and the worker thread that serves its queues until told to stop.

use std::io;
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::EventFd;

use super::ActivateError;

/// VIRTIO_F_VERSION_1: the only (non-legacy) interface our devices speak.
const F_VERSION_1: u64 = 1 << 32;

/// Refuse activation unless the driver accepted VIRTIO_F_VERSION_1 (`device` names it in logs).
pub(crate) fn require_version_1(acked: u64, device: &str) -> Result<(), ActivateError> {
    if acked & F_VERSION_1 == 0 {
        return Err(ActivateError::BadConfig(format!(
            "{device}: the driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not \
             supported)"
        )));
    }
    Ok(())
}

/// Fill `data` from `config` at `offset`; bytes past the end of the config space read as 0.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| config.get(o))
            .copied()
            .unwrap_or(0);
    }
}

/// A device's worker thread with the eventfd that asks it to return.
pub(crate) struct WorkerThread {
    stop: EventFd,
    handle: JoinHandle<()>,
}

impl WorkerThread {
    /// Run `body` on a thread called `name`; `body` must return once `stop` becomes readable.
    pub(crate) fn spawn(
        name: impl Into<String>,
        stop: EventFd,
        body: impl FnOnce() + Send + 'static,
    ) -> io::Result<Self> {
        let handle = std::thread::Builder::new().name(name.into()).spawn(body)?;
        Ok(Self { stop, handle })
    }

    /// Signal the thread to stop and wait for it (`device` names it in logs).
    pub(crate) fn stop(self, device: &str) {
        if let Err(e) = self.stop.write(1) {
            log::warn!("{device}: cannot signal the worker to stop: {e}");
        }
        if self.handle.join().is_err() {
            log::warn!("{device}: worker thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn version_1_is_required() {
        assert!(matches!(
            require_version_1(0, "virtio-x"),
            Err(ActivateError::BadConfig(m)) if m.starts_with("virtio-x:")
        ));
        assert!(require_version_1(F_VERSION_1, "virtio-x").is_ok());
    }

    #[test]
    fn config_reads_past_the_end_are_zero() {
        let mut d = [0xffu8; 4];
        read_config_bytes(&[1, 2, 3], 1, &mut d);
        assert_eq!(d, [2, 3, 0, 0]);
        read_config_bytes(&[1, 2, 3], u64::MAX, &mut d);
        assert_eq!(d, [0; 4]);
    }

    #[test]
    fn stop_wakes_and_joins_the_thread() {
        let stop = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let seen = stop.try_clone().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let w = WorkerThread::spawn("test-worker", stop, move || {
            while seen.read().is_err() {
                std::thread::sleep(Duration::from_millis(1));
            }
            tx.send(()).unwrap();
        })
        .unwrap();
        w.stop("virtio-x");
        assert!(
            rx.try_recv().is_ok(),
            "the body ran to its end before stop returned"
        );
    }
}
