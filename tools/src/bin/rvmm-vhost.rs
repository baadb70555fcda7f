//! `rvmm-vhost`: serve rvmm's virtio devices to any vhost-user frontend (QEMU, Cloud Hypervisor).

use clap::Parser;

/// Command line of `rvmm-vhost`.
#[derive(Debug, Parser)]
#[command(
    name = "rvmm-vhost",
    version,
    about = "vhost-user backends for rvmm's virtio devices"
)]
struct Cli {
    /// Log more (repeat for more detail); logs go to stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: tools::vhost::Command,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    tools::vhost::run(cli.command)
}
