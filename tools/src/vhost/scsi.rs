//! `rvmm-vhost scsi`: not yet implemented; its owner replaces this module.

/// Flags of `rvmm-vhost scsi`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path of the vhost-user UNIX socket to listen on.
    #[arg(long)]
    pub socket: std::path::PathBuf,
}

/// Serve the backend (not yet implemented).
pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::bail!(
        "rvmm-vhost scsi is not implemented yet (socket {})",
        args.socket.display()
    )
}
