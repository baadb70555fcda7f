//! Signals: SIGINT/SIGTERM end the VM; a real-time signal kicks vCPU threads out of KVM_RUN.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Once};

use anyhow::{Context, Result};

/// The signal used to interrupt KVM_RUN in a vCPU thread.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: delivery alone makes KVM_RUN return EINTR.
}

/// Install the (empty) handler for [`kick_signal`], once per process.
pub fn install_kick_handler() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut res = Ok(());
    ONCE.call_once(|| {
        res = vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
            .context("cannot install the vCPU kick signal handler");
    });
    res
}

/// Record SIGINT/SIGTERM/SIGHUP in `flag` (as the signal number) instead of dying, so the VM
/// is stopped, threads are joined and the terminal restored before rvmm exits.
pub fn register_termination(flag: &Arc<AtomicUsize>) -> Result<()> {
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register_usize(sig, flag.clone(), sig as usize)
            .with_context(|| format!("cannot handle signal {sig}"))?;
    }
    Ok(())
}
