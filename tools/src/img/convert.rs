//! `rvmm-img convert`: copy an image (any chain) into a new raw or qcow2 image.

use anyhow::{anyhow, bail, Context, Result};
use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
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
    /// Accepted for compatibility: minimum run of zeroes kept sparse.
    #[arg(short = 'S')]
    pub sparse: Option<String>,
    /// Cache mode of the target (default unsafe: no fsync, as qemu-img).
    #[arg(short = 't')]
    pub cache: Option<String>,
    /// Accepted for compatibility (cache mode of the source).
    #[arg(short = 'T')]
    pub src_cache: Option<String>,
    /// Accepted for compatibility: parallel requests.
    #[arg(short = 'm')]
    pub coroutines: Option<u32>,
    /// Accepted for compatibility: out-of-order writes.
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

/// Run `convert`.
pub fn run(a: Args) -> Result<i32> {
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
        Some(q) if a.compress => q.cluster_size(),
        Some(q) => q.cluster_size().max(1 << 20),
        None => 1 << 20,
    };
    // Reader thread: skip holes via block status, hand non-zero chunks to the writer. Buffers
    // circulate through a pool so that no chunk pays for fresh page faults.
    // (offset, length, data): no data means a hole, or a run already copied host-side.
    type Chunk = (u64, u64, Option<Vec<u8>>, bool);
    let (tx, rx) = sync_channel::<Result<Chunk>>(8);
    let (pool_tx, pool_rx) = sync_channel::<Vec<u8>>(16);
    for _ in 0..10 {
        let _ = pool_tx.try_send(vec![0u8; chunk as usize]);
    }
    let reader_src = src.clone();
    let reader_pool = pool_tx.clone();
    let reader = std::thread::spawn(move || {
        let mut off = 0u64;
        while off < size {
            let n = chunk.min(size - off);
            let st = match reader_src.block_status(off, n) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(anyhow!("block status at {off}: {e}")));
                    return;
                }
            };
            // Skip whole chunks only, so offsets stay chunk (cluster) aligned.
            if st.zero && !st.data && st.len >= n {
                let skip = (st.len / chunk * chunk).clamp(n, size - off);
                if tx.send(Ok((off, skip, None, true))).is_err() {
                    return;
                }
                off += skip;
                continue;
            }
            if let (Some((sf, df)), Some(host), 0, false) =
                (&offload, st.offset, st.depth, st.compressed)
            {
                let len = st.len.min(n);
                if copy_range(sf, host, df, off, len) {
                    if tx.send(Ok((off, len, None, false))).is_err() {
                        return;
                    }
                    off += len;
                    continue;
                }
            }
            let Ok(mut buf) = pool_rx.recv() else {
                return;
            };
            buf.resize(n as usize, 0);
            if let Err(e) = reader_src.read_at(off, &mut buf) {
                let _ = tx.send(Err(anyhow!("error while reading at offset {off}: {e}")));
                return;
            }
            let item = if buf.iter().all(|&b| b == 0) {
                let _ = reader_pool.try_send(buf);
                (off, n, None, true)
            } else {
                (off, n, Some(buf), false)
            };
            if tx.send(Ok(item)).is_err() {
                return;
            }
            off += n;
        }
    });
    for item in rx {
        let (off, len, buf, hole) = item?;
        if let Some(buf) = buf {
            match (&dst_q, a.compress) {
                (Some(q), true) => q
                    .write_compressed(off, &buf)
                    .map_err(|e| anyhow!("error while writing at offset {off}: {e}"))?,
                _ => dst
                    .write_at(off, &buf)
                    .map_err(|e| anyhow!("error while writing at offset {off}: {e}"))?,
            }
            let _ = pool_tx.try_send(buf);
        } else if hole && a.no_create {
            dst.write_zeroes(off, len)
                .map_err(|e| anyhow!("error while zeroing at offset {off}: {e}"))?;
        }
        if let Some(b) = &bar {
            b.set_position(off + len);
        }
    }
    reader
        .join()
        .map_err(|_| anyhow!("reader thread panicked"))?;
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
    let _ = parse_size;
    Ok(0)
}

/// Copy `len` bytes between files inside the kernel; false (nothing or part copied) means the
/// caller should fall back to reading and writing.
fn copy_range(
    src: &std::fs::File,
    src_off: u64,
    dst: &std::fs::File,
    dst_off: u64,
    len: u64,
) -> bool {
    use std::os::unix::io::AsRawFd;
    let (mut so, mut d_o) = (src_off as libc::loff_t, dst_off as libc::loff_t);
    let mut left = len as usize;
    while left > 0 {
        // SAFETY: both fds are open files we own; the offsets are plain integers the kernel
        // updates in place; no user memory is involved.
        let r = unsafe {
            libc::copy_file_range(src.as_raw_fd(), &mut so, dst.as_raw_fd(), &mut d_o, left, 0)
        };
        if r <= 0 {
            return false;
        }
        left -= r as usize;
    }
    true
}
