//! `rvmm-img`: a qemu-img compatible image tool on the `qcow` engine.
//!
//! Each subcommand lives in its own module; [`Cli`] mirrors qemu-img's flags and [`run`]
//! returns the process exit code qemu-img would use.

pub mod bench;
pub mod check;
pub mod compare;
pub mod convert;
pub mod create;
pub mod info;
pub mod io;
pub mod map;
pub mod opts;
pub mod snapshot;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use qcow::{BlockBackend, Format, OpenOptions};

/// Command line of rvmm-img.
#[derive(Debug, Parser)]
#[command(
    name = "rvmm-img",
    about = "qemu-img compatible disk image tool for rvmm"
)]
pub struct Cli {
    /// The operation.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// rvmm-img subcommands (qemu-img's names and flags).
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create a new image.
    Create(create::Args),
    /// Show information about an image.
    Info(info::Args),
    /// Check an image's metadata, optionally repairing it.
    Check(check::Args),
    /// Copy an image, possibly to another format.
    Convert(convert::Args),
    /// Compare two images' contents.
    Compare(compare::Args),
    /// Print the allocation map.
    Map(map::Args),
    /// Change the virtual size.
    Resize(snapshot::ResizeArgs),
    /// Create, list, apply or delete internal snapshots.
    Snapshot(snapshot::Args),
    /// Write an image's contents into its backing file.
    Commit(snapshot::CommitArgs),
    /// Change the backing file.
    Rebase(snapshot::RebaseArgs),
    /// Run qemu-io style commands on an image.
    Io(io::Args),
    /// Measure I/O performance.
    Bench(bench::Args),
}

/// Run a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Create(a) => create::run(a),
        Cmd::Info(a) => info::run(a),
        Cmd::Check(a) => check::run(a),
        Cmd::Convert(a) => convert::run(a),
        Cmd::Compare(a) => compare::run(a),
        Cmd::Map(a) => map::run(a),
        Cmd::Resize(a) => snapshot::resize(a),
        Cmd::Snapshot(a) => snapshot::run(a),
        Cmd::Commit(a) => snapshot::commit(a),
        Cmd::Rebase(a) => snapshot::rebase(a),
        Cmd::Io(a) => io::run(a),
        Cmd::Bench(a) => bench::run(a),
    }
}

/// Parse a `-f`/`-O` format name.
pub fn parse_format(s: Option<&str>) -> Result<Option<Format>> {
    s.map(|f| Format::from_name(f).with_context(|| format!("invalid format '{f}'")))
        .transpose()
}

/// Format of `path`: the given one, or detected (qcow2 magic, raw otherwise).
pub fn format_of(path: &Path, given: Option<Format>) -> Result<Format> {
    match given {
        Some(f) => Ok(f),
        None => qcow::detect_format(path).with_context(|| format!("probe {}", path.display())),
    }
}

/// Open an image for the tool.
pub fn open(path: &Path, fmt: Option<Format>, read_only: bool) -> Result<Arc<dyn BlockBackend>> {
    let format = Some(format_of(path, fmt)?);
    qcow::open_image(
        path,
        &OpenOptions {
            read_only,
            format,
            ..Default::default()
        },
    )
    .with_context(|| format!("Could not open '{}'", path.display()))
}

/// Open a qcow2 image as the concrete engine type (for qcow2-only operations).
pub fn open_qcow2(path: &Path, read_only: bool) -> Result<qcow::Qcow2> {
    qcow::Qcow2::open(
        path,
        &OpenOptions {
            read_only,
            format: Some(Format::Qcow2),
            ..Default::default()
        },
    )
    .with_context(|| format!("Could not open '{}'", path.display()))
}

/// Path helper for clap positional arguments.
pub type FilePath = PathBuf;
