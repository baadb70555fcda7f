//! The rvmm VMM: command line → validated `VmConfig` → VM build-up (memory, vCPUs, buses,
//! devices) → run loop. It owns the threads, signals and (later) the control socket; devices and
//! boot layout live in the `devices` and `arch` crates.

pub mod boot;
pub mod cli;
pub mod config;
pub mod devices;
pub mod display;
pub mod exit;
pub mod irq;
pub mod memory;
pub mod pci;
pub mod signals;
pub mod terminal;
pub mod vcpu;
pub mod vm;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use crate::config::{SerialMode, VmConfig};
use crate::exit::{Outcome, VmEvent};

/// Run the VM `cli` describes until it ends; returns rvmm's exit status. `start` is the
/// process start, for boot-marker timing.
pub fn run(cli: &cli::Cli, start: Instant) -> Result<u8> {
    let mut cfg = VmConfig::from_cli(cli)?;
    // NIC taps live as long as rvmm; dropping them on return deletes --bridge taps. First, so
    // that --net-fd numbers cannot name files rvmm opened itself.
    let nics = crate::devices::net::Nics::open(cli, &cfg)?;
    // Disks and the CD are opened (and locked) once, for every reboot of this VM.
    let storage = crate::devices::prepare(cli, &mut cfg)?;
    let display = crate::display::Display::start(cli)?;
    let sink = vm::SerialSink::open(&cfg.serial)?;
    let signal = Arc::new(AtomicUsize::new(0));
    signals::register_termination(&signal)?;
    let mut raw = None;
    loop {
        let machine = vm::Vm::build(&cfg, start, &sink)?;
        storage.attach(&machine)?;
        nics.attach(&machine)?;
        let _screen = display.attach(&machine)?;
        if raw.is_none() && cfg.serial == SerialMode::Stdio {
            raw = Some(terminal::RawTerminal::enter());
        }
        let event = machine.run(&signal, start)?;
        match &event {
            VmEvent::Fatal(msg) => log::error!("{msg}"),
            VmEvent::Signal(s) => log::warn!("stopping the VM on signal {s}"),
            e => log::info!("VM stopped: {e:?}"),
        }
        match exit::outcome(&event, cfg.no_reboot) {
            Outcome::Restart => log::info!("guest reset: restarting the VM"),
            Outcome::Exit(code) => {
                display.on_exit()?;
                return Ok(code);
            }
        }
    }
}
