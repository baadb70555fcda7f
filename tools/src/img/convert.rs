//! `rvmm-img convert`: copy an image (any chain) into a new raw or qcow2 image.

mod pipeline;

use anyhow::{anyhow, bail, Context, Result};
use std::path::PathBuf;
use std::sync::Arc;

use super::opts::{parse_opts, parse_size};
use super::{format_of, parse_format};
use qcow::{BlockBackend, Format, Preallocation};

/// Flags of `convert`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show a progress bar.
    #[arg(short = 'p')]
    pub progress: bool,
    /// Compress the output (qcow2 only).
    #[arg(short = 'c')]
    pub compress: bool,
    /// Source format (probed when absent).
    #[arg(short = 'f')]
    pub fmt: Option<String>,
    /// Output format.
    #[arg(short = 'O', default_value = "raw")]
    pub out_fmt: String,
    /// Output format options (key=value,…).
    #[arg(short = 'o')]
    pub options: Vec<String>,
    /// Quiet.
    #[arg(short = 'q')]
    pub quiet: bool,
    /// Write into an existing target instead of creating it.
    #[arg(short = 'n')]
    pub no_create: bool,
    /// Zero detection granularity of raw targets (0: write zeroes too; qcow2 targets use
    /// their cluster size).
    #[arg(short = 'S')]
    pub sparse: Option<String>,
    /// Cache mode of the target (default unsafe: no fsync, as qemu-img).
    #[arg(short = 't')]
    pub cache: Option<String>,
    /// Accepted for compatibility (cache mode of the source).
    #[arg(short = 'T')]
    pub src_cache: Option<String>,
    /// Parallel requests (1 to 16, default 8), as qemu-img's coroutines.
    #[arg(short = 'm')]
    pub coroutines: Option<u32>,
    /// Allow out-of-order writes into a qcow2 target (raw targets always allow them).
    #[arg(short = 'W')]
    pub out_of_order: bool,
    /// Accepted for qemu-img compatibility.
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    /// Source image.
    pub src: PathBuf,
    /// Target image.
    pub dst: PathBuf,
}

/// Most parallel requests `-m` accepts (qemu-img's limit).
const MAX_REQUESTS: u32 = 16;

/// Worker threads for `requests` parallel requests: at most one per CPU (at least two, so a
/// read overlaps a write). The copy is CPU-bound on page-cache data (kernel memcpy, or
/// compression), and writes into one file serialise on its inode lock anyway; measured on a
/// 2-CPU host, 4 workers were 5% slower than 2.
fn workers(requests: u32) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (requests as usize).min(cpus.max(2))
}

/// Run `convert`.
pub fn run(a: Args) -> Result<i32> {
    let requests = a.coroutines.unwrap_or(8);
    if !(1..=MAX_REQUESTS).contains(&requests) {
        bail!(
            "Invalid number of coroutines. Allowed number of coroutines is between 1 and \
             {MAX_REQUESTS}"
        );
    }
    if a.out_of_order && a.compress {
        bail!("Out of order write and compress are mutually exclusive");
    }
    let src_fmt = format_of(&a.src, parse_format(a.fmt.as_deref())?)?;
    // Keep the source's own file at hand: plainly stored runs are copied host-side.
    let (src, src_file): (Arc<dyn BlockBackend>, Option<std::fs::File>) = match src_fmt {
        Format::Qcow2 => {
            let q = super::open_qcow2(&a.src, true)?;
            let f = q.host_file().try_clone().ok();
            (Arc::new(q), f)
        }
        Format::Raw => {
            let r = qcow::RawFile::open(&a.src, true)
                .with_context(|| format!("Could not open '{}'", a.src.display()))?;
            let f = r.file().try_clone().ok();
            (Arc::new(r), f)
        }
    };
    let size = src.size();
    let out_fmt = Format::from_name(&a.out_fmt)?;
    let opts = parse_opts(&a.options)?;
    if a.compress && out_fmt != Format::Qcow2 {
        bail!("Compression not supported for output format {out_fmt}");
    }
    if !a.no_create {
        match out_fmt {
            Format::Raw => {
                let mut pre = Preallocation::Off;
                for (k, v) in &opts {
                    match k.as_str() {
                        "preallocation" => pre = Preallocation::from_name(v)?,
                        _ => bail!("Invalid parameter '{k}' for format raw"),
                    }
                }
                super::create::create_raw(&a.dst, size, pre)?;
            }
            Format::Qcow2 => {
                let c = super::create::qcow2_options(&opts, Some(size), None, None)?;
                qcow::create(&a.dst, &c)
                    .with_context(|| format!("{}: image creation failed", a.dst.display()))?;
            }
        }
    }
    // As qemu-img convert, the target is written with cache=unsafe unless -t says otherwise:
    // the data reaches the file, but nothing is fsynced.
    let durable = match a.cache.as_deref() {
        None | Some("unsafe") => false,
        Some("writeback" | "writethrough" | "none" | "directsync") => true,
        Some(c) => bail!("invalid cache mode '{c}'"),
    };
    let mut dst_file: Option<std::fs::File> = None;
    let (dst, dst_q): (Arc<dyn BlockBackend>, Option<Arc<qcow::Qcow2>>) = match out_fmt {
        Format::Qcow2 => {
            let q = Arc::new(
                qcow::Qcow2::open(
                    &a.dst,
                    &qcow::OpenOptions {
                        read_only: false,
                        format: Some(Format::Qcow2),
                        cache: if durable {
                            qcow::CacheMode::Writeback
                        } else {
                            qcow::CacheMode::Unsafe
                        },
                        ..Default::default()
                    },
                )
                .with_context(|| format!("Could not open '{}'", a.dst.display()))?,
            );
            (q.clone(), Some(q))
        }
        Format::Raw => {
            let r = qcow::RawFile::open(&a.dst, false)
                .with_context(|| format!("Could not open '{}'", a.dst.display()))?;
            dst_file = r.file().try_clone().ok();
            (Arc::new(r), None)
        }
    };
    // Host-side copies (copy_file_range) when both ends are plain files at the same offsets.
    let offload = match (src_file, dst_file) {
        (Some(s), Some(d)) if !a.compress => Some((s, d)),
        _ => None,
    };
    if dst.size() < size {
        bail!(
            "target {} ({} bytes) is smaller than the source ({size} bytes)",
            a.dst.display(),
            dst.size()
        );
    }
    let bar = if a.progress && !a.quiet {
        let b = indicatif::ProgressBar::new(size);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "    ({percent:>3}/100%) [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .map_err(|e| anyhow!("progress bar template: {e}"))?,
        );
        Some(b)
    } else {
        None
    };
    let chunk: u64 = match &dst_q {
        Some(q) => q.cluster_size().max(1 << 20),
        None => 1 << 20,
    };
    let zero_granule = match (a.sparse.as_deref(), &dst_q) {
        // -S 0: write everything read, zeroes included (a fully allocated target).
        (Some(s), _) if parse_size(s)? == 0 => 0,
        (_, Some(q)) => q.cluster_size(),
        (Some(s), None) => parse_size(s)?,
        (None, None) => 4096,
    };
    let in_order = dst_q.is_some() && !a.out_of_order;
    let plan = pipeline::Plan {
        size,
        chunk,
        workers: workers(requests),
        in_order,
        zero_granule,
        no_create: a.no_create,
        offload: offload.as_ref().map(|(s, d)| (s, d)),
        progress: bar.as_ref(),
    };
    let sink = match (&dst_q, a.compress) {
        (Some(q), true) => pipeline::Sink::Compressed(q),
        _ => pipeline::Sink::Plain(&*dst),
    };
    pipeline::copy(&*src, sink, &plan)?;
    if let Some(b) = &bar {
        b.finish();
    }
    if durable || dst_q.is_some() {
        // For qcow2 under cache=unsafe this writes the metadata back without fsync.
        dst.flush().context("flush target")?;
    }
    if let Some(q) = dst_q {
        q.close()?;
    }
    Ok(0)
}
