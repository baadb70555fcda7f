//! `rvmm-vhost`: vhost-user backends serving the virtio devices of `devices/`.
//!
//! Each backend lives in its own module with the same two items, so their owners can work side
//! by side:
//! - `pub struct Args` (a `clap::Args`): the subcommand's flags;
//! - `pub fn run(args: Args) -> anyhow::Result<()>`: serve until the frontend disconnects.
//!
//! [`Command`] dispatches the `blk`, `net` and `scsi` subcommands into them.

pub mod blk;
pub mod net;
pub mod scsi;

/// The backend to serve, one subcommand each.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve a disk image as a vhost-user-blk device.
    Blk(blk::Args),
    /// Serve a tap or bridge port as a vhost-user-net device.
    Net(net::Args),
    /// Serve disk images as a vhost-user-scsi device.
    Scsi(scsi::Args),
}

/// Run the chosen backend.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Blk(a) => blk::run(a),
        Command::Net(a) => net::run(a),
        Command::Scsi(a) => scsi::run(a),
    }
}
