//! Why a VM stops, and how that becomes rvmm's exit status.

use std::sync::mpsc;

/// Something that ends (or restarts) the VM, sent by devices, vCPU threads and signal
/// handling to the thread that runs the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEvent {
    /// The guest wrote `v` to the debug-exit port.
    DebugExit(u8),
    /// ACPI S5 or a KVM system-event shutdown.
    PowerOff,
    /// i8042 reset, ACPI reset register, triple fault or a KVM system-event reset.
    Reset,
    /// SIGINT or SIGTERM (the signal number).
    Signal(i32),
    /// The user typed the quit escape (Ctrl-A x) on the console.
    Quit,
    /// A vCPU hit something rvmm cannot handle; the message says what (and the registers).
    Fatal(String),
}

/// Where events are sent.
pub type EventSender = mpsc::Sender<VmEvent>;

/// What to do once a VM has stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Build a fresh VM and boot again.
    Restart,
    /// End rvmm with this status.
    Exit(u8),
}

/// Exit status for fatal errors.
pub const EXIT_ERROR: u8 = 1;

/// Decide the outcome of `event` given `--no-reboot`.
pub fn outcome(event: &VmEvent, no_reboot: bool) -> Outcome {
    match event {
        VmEvent::DebugExit(v) => Outcome::Exit(*v),
        VmEvent::PowerOff | VmEvent::Quit => Outcome::Exit(0),
        VmEvent::Reset if no_reboot => Outcome::Exit(0),
        VmEvent::Reset => Outcome::Restart,
        VmEvent::Signal(s) => Outcome::Exit((128 + *s).clamp(1, 255) as u8),
        VmEvent::Fatal(_) => Outcome::Exit(EXIT_ERROR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_map_to_exit_statuses() {
        assert_eq!(
            outcome(&VmEvent::DebugExit(0x31), false),
            Outcome::Exit(0x31)
        );
        assert_eq!(outcome(&VmEvent::DebugExit(0), true), Outcome::Exit(0));
        assert_eq!(outcome(&VmEvent::PowerOff, false), Outcome::Exit(0));
        assert_eq!(outcome(&VmEvent::Reset, false), Outcome::Restart);
        assert_eq!(outcome(&VmEvent::Reset, true), Outcome::Exit(0));
        assert_eq!(
            outcome(&VmEvent::Signal(libc::SIGTERM), false),
            Outcome::Exit(143)
        );
        assert_eq!(
            outcome(&VmEvent::Signal(libc::SIGINT), false),
            Outcome::Exit(130)
        );
        assert_eq!(
            outcome(&VmEvent::Fatal("x".into()), false),
            Outcome::Exit(1)
        );
    }
}
