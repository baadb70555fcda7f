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

use std::fmt::Debug;
use std::path::Path;

use anyhow::Context;
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon, VringRwLock};

use devices::{GuestMemoryAtomic, GuestMemoryMmap};

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

/// A vhost-user daemon called `name` for `backend`, with no guest memory until the frontend
/// sends its memory table.
fn new_daemon<B>(name: &str, backend: B) -> anyhow::Result<VhostUserDaemon<B>>
where
    B: VhostUserBackend<Bitmap = (), Vring = VringRwLock<GuestMemoryAtomic>> + Clone + 'static,
{
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    VhostUserDaemon::new(name.into(), backend, mem)
        .map_err(|e| anyhow::anyhow!("creating the vhost-user daemon: {e:?}"))
}

/// The error of a vhost-user connection on `socket` that ended with `e`.
fn connection_failed(socket: &Path, e: impl Debug) -> anyhow::Error {
    anyhow::anyhow!(
        "vhost-user connection on {} failed: {e:?}",
        socket.display()
    )
}

/// Listen on `socket` (a stale socket file from an earlier run is replaced) and serve one
/// frontend with `daemon` until it disconnects; `what` says what is served, for the log.
fn serve<B>(daemon: &mut VhostUserDaemon<B>, socket: &Path, what: &str) -> anyhow::Result<()>
where
    B: VhostUserBackend<Bitmap = (), Vring = VringRwLock<GuestMemoryAtomic>> + Clone + 'static,
{
    if socket.exists() {
        std::fs::remove_file(socket)
            .with_context(|| format!("removing the old socket {}", socket.display()))?;
    }
    log::info!("serving {what} on {}", socket.display());
    daemon
        .serve(socket)
        .map_err(|e| connection_failed(socket, e))
}

/// Bytes `offset..offset + size` of the config space `cfg` for a GET_CONFIG reply, zero past
/// its end (the vhost crate has already checked that `offset + size` is at most 4 KiB).
fn config_slice(cfg: &[u8], offset: u32, size: u32) -> Vec<u8> {
    let size = size as usize;
    let start = (offset as usize).min(cfg.len());
    let end = start.saturating_add(size).min(cfg.len());
    let mut out = cfg[start..end].to_vec();
    out.resize(size, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::config_slice;

    #[test]
    fn config_slice_pads_with_zeroes() {
        assert_eq!(config_slice(&[1, 2, 3], 1, 4), vec![2, 3, 0, 0]);
        assert_eq!(config_slice(&[1, 2, 3], u32::MAX, 2), vec![0, 0]);
        assert_eq!(config_slice(&[1, 2, 3], 0, 0), Vec::<u8>::new());
    }
}
