//! `rvmm-img resize`, `snapshot`, `commit` and `rebase`: operations that restructure an image.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use std::path::PathBuf;

use super::{format_of, parse_format};
use qcow::{BlockBackend, Format};

/// Flags of `resize`.
#[derive(Debug, clap::Args)]
pub struct ResizeArgs {
    /// Allow shrinking (drops data past the new end).
    #[arg(long)]
    pub shrink: bool,
    /// Image format (probed when absent).
    #[arg(short = 'f')]
    pub fmt: Option<String>,
    /// Quiet.
    #[arg(short = 'q')]
    pub quiet: bool,
    /// The image.
    pub file: PathBuf,
    /// New size, or +SIZE / -SIZE relative to the current one.
    #[arg(allow_hyphen_values = true)]
    pub size: String,
}

/// Run `resize`.
pub fn resize(a: ResizeArgs) -> Result<i32> {
    let fmt = format_of(&a.file, parse_format(a.fmt.as_deref())?)?;
    let cur = super::open(&a.file, Some(fmt), true)?.size();
    let new = if let Some(d) = a.size.strip_prefix('+') {
        cur.checked_add(super::opts::parse_size(d)?)
            .ok_or_else(|| anyhow!("size overflow"))?
    } else if let Some(d) = a.size.strip_prefix('-') {
        cur.checked_sub(super::opts::parse_size(d)?)
            .ok_or_else(|| anyhow!("New image size must be positive"))?
    } else {
        super::opts::parse_size(&a.size)?
    };
    if new < cur && !a.shrink {
        bail!(
            "Use the --shrink option to perform a shrink operation.\n\
             Warning: shrinking drops the data past the new end of the image"
        );
    }
    match fmt {
        Format::Raw => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&a.file)
                .with_context(|| format!("open {}", a.file.display()))?;
            f.set_len(new)
                .with_context(|| format!("resize {}", a.file.display()))?;
        }
        Format::Qcow2 => {
            let q = super::open_qcow2(&a.file, false)?;
            q.resize(new, a.shrink).context("resize failed")?;
            q.close()?;
        }
    }
    if !a.quiet {
        println!("Image resized.");
    }
    Ok(0)
}

/// Flags of `snapshot`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Create a snapshot.
    #[arg(short = 'c')]
    pub create: Option<String>,
    /// List snapshots.
    #[arg(short = 'l')]
    pub list: bool,
    /// Revert the disk to a snapshot.
    #[arg(short = 'a')]
    pub apply: Option<String>,
    /// Delete a snapshot.
    #[arg(short = 'd')]
    pub delete: Option<String>,
    /// Quiet.
    #[arg(short = 'q')]
    pub quiet: bool,
    /// Accepted for qemu-img compatibility.
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    /// Image format (must be qcow2).
    #[arg(short = 'f')]
    pub fmt: Option<String>,
    /// The image.
    pub file: PathBuf,
}

/// Run `snapshot`.
pub fn run(a: Args) -> Result<i32> {
    if format_of(&a.file, parse_format(a.fmt.as_deref())?)? != Format::Qcow2 {
        bail!("snapshots need a qcow2 image");
    }
    let q = super::open_qcow2(&a.file, a.list)?;
    if a.list {
        let snaps: Vec<serde_json::Value> = q
            .snapshots()?
            .iter()
            .map(|s| {
                json!({"id": s.id, "name": s.name, "vm-state-size": s.vm_state_size,
                       "date-sec": s.date_sec, "vm-clock-sec": s.vm_clock_nsec / 1_000_000_000,
                       "vm-clock-nsec": s.vm_clock_nsec % 1_000_000_000})
            })
            .collect();
        println!("Snapshot list:");
        print!("{}", super::info::snapshot_table(&snaps));
        return Ok(0);
    }
    if let Some(n) = &a.create {
        q.snapshot_create(n)
            .with_context(|| format!("Could not create snapshot '{n}'"))?;
    } else if let Some(n) = &a.apply {
        q.snapshot_apply(n)
            .with_context(|| format!("Could not apply snapshot '{n}'"))?;
    } else if let Some(n) = &a.delete {
        q.snapshot_delete(n)
            .with_context(|| format!("Could not delete snapshot '{n}'"))?;
    } else {
        bail!("snapshot needs one of -c, -l, -a or -d");
    }
    q.close()?;
    Ok(0)
}

/// Flags of `commit`.
#[derive(Debug, clap::Args)]
pub struct CommitArgs {
    /// Image format (must be qcow2).
    #[arg(short = 'f')]
    pub fmt: Option<String>,
    /// Quiet.
    #[arg(short = 'q')]
    pub quiet: bool,
    /// Keep the top image's data instead of emptying it.
    #[arg(short = 'd')]
    pub keep: bool,
    /// Show progress (accepted, ignored).
    #[arg(short = 'p')]
    pub progress: bool,
    /// The image whose data goes into its backing file.
    pub file: PathBuf,
}

/// Run `commit`.
pub fn commit(a: CommitArgs) -> Result<i32> {
    let top = super::open_qcow2(&a.file, false)?;
    let h = top.header()?;
    let name = h
        .backing_file
        .clone()
        .ok_or_else(|| anyhow!("Image does not have a backing file"))?;
    let (bpath, bfmt) = qcow::qcow2::resolve_backing(&a.file, &name, h.backing_format.as_deref())?;
    let base = super::open(&bpath, Some(bfmt), false)?;
    let size = top.size().min(base.size());
    let cs = top.cluster_size();
    let mut buf = vec![0u8; cs as usize];
    let mut off = 0;
    while off < size {
        let st = top.block_status(off, (size - off).min(1 << 30))?;
        let n = st.len;
        if st.depth == 0 && st.present {
            let mut o = off;
            while o < off + n {
                let m = cs.min(off + n - o) as usize;
                top.read_at(o, &mut buf[..m])?;
                base.write_at(o, &buf[..m])?;
                o += m as u64;
            }
        }
        off += n;
    }
    base.flush()?;
    if !a.keep {
        top.make_empty()?;
    }
    top.close()?;
    if !a.quiet {
        println!("Image committed.");
    }
    Ok(0)
}

/// Flags of `rebase`.
#[derive(Debug, clap::Args)]
pub struct RebaseArgs {
    /// New backing file ("" for none).
    #[arg(short = 'b')]
    pub backing: String,
    /// Format of the new backing file.
    #[arg(short = 'F')]
    pub backing_fmt: Option<String>,
    /// Unsafe: only rewrite the header.
    #[arg(short = 'u')]
    pub unsafe_mode: bool,
    /// Image format (must be qcow2).
    #[arg(short = 'f')]
    pub fmt: Option<String>,
    /// Quiet.
    #[arg(short = 'q')]
    pub quiet: bool,
    /// Show progress (accepted, ignored).
    #[arg(short = 'p')]
    pub progress: bool,
    /// The image.
    pub file: PathBuf,
}

/// Run `rebase`.
pub fn rebase(a: RebaseArgs) -> Result<i32> {
    let q = super::open_qcow2(&a.file, false)?;
    let new_fmt = parse_format(a.backing_fmt.as_deref())?;
    let new_name = (!a.backing.is_empty()).then(|| a.backing.clone());
    let new_fmt = match (&new_name, new_fmt) {
        (Some(n), None) => Some(qcow::qcow2::resolve_backing(&a.file, n, None)?.1),
        (_, f) => f,
    };
    if !a.unsafe_mode {
        // Safe mode: wherever the image shows its backing file, keep today's contents.
        let newb: Option<std::sync::Arc<dyn BlockBackend>> = match &new_name {
            Some(n) => {
                let (p, f) = qcow::qcow2::resolve_backing(&a.file, n, new_fmt.map(|f| f.name()))?;
                Some(super::open(&p, Some(f), true)?)
            }
            None => None,
        };
        let size = q.size();
        let cs = q.cluster_size();
        let mut old = vec![0u8; cs as usize];
        let mut new = vec![0u8; cs as usize];
        let mut off = 0;
        while off < size {
            let n = cs.min(size - off) as usize;
            let st = q.block_status(off, n as u64)?;
            if st.depth > 0 || !st.present {
                q.read_at(off, &mut old[..n])?;
                new[..n].fill(0);
                if let Some(b) = &newb {
                    let avail = b.size().saturating_sub(off).min(n as u64) as usize;
                    if avail > 0 {
                        b.read_at(off, &mut new[..avail])?;
                    }
                }
                if old[..n] != new[..n] {
                    q.write_at(off, &old[..n])?;
                }
            }
            off += n as u64;
        }
        q.flush()?;
    }
    q.set_backing(new_name.as_deref(), new_fmt)
        .context("Could not change the backing file")?;
    q.close()?;
    Ok(0)
}
