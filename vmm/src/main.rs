//! `rvmm`: boot a kernel in a KVM virtual machine.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

fn main() -> ExitCode {
    let start = Instant::now();
    let cli = vmm::cli::Cli::parse();
    let level = match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .parse_env("RVMM_LOG")
        .format_timestamp_millis()
        .init();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        vmm::terminal::restore();
        default_hook(info);
    }));
    match vmm::run(&cli, start) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            vmm::terminal::restore();
            eprintln!("rvmm: error: {e:#}");
            ExitCode::from(vmm::exit::EXIT_ERROR)
        }
    }
}
