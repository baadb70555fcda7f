//! `rvmm-img bench`: qemu-img bench's request generator on our engine, plus `--random` offsets
//! and a `--pread` reference mode that issues the same requests straight to the file.

use anyhow::{anyhow, bail, Context, Result};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::opts::parse_size;
use super::parse_format;
use qcow::{BlockBackend, CacheMode, OpenOptions};

/// Flags of `bench` (qemu-img's, plus `--random` and `--pread`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of requests.
    #[arg(short = 'c', default_value_t = 75000)]
    pub count: u64,
    /// Requests in flight.
    #[arg(short = 'd', default_value_t = 64)]
    pub depth: u64,
    /// Request size.
    #[arg(short = 's', default_value = "4096")]
    pub size: String,
    /// Distance between consecutive request offsets (default: the request size).
    #[arg(short = 'S')]
    pub step: Option<String>,
    /// First offset.
    #[arg(short = 'o', default_value = "0")]
    pub offset: String,
    /// Write instead of read.
    #[arg(short = 'w')]
    pub write: bool,
    /// Cache mode: writeback, writethrough, unsafe (none/directsync run as writeback).
    #[arg(short = 't', default_value = "writeback")]
    pub cache: String,
    /// Image format (probed when absent).
    #[arg(short = 'f')]
    pub fmt: Option<String>,
    /// Byte pattern to write.
    #[arg(long, default_value_t = 0xa5)]
    pub pattern: u8,
    /// Flush after this many requests (0: never).
    #[arg(long = "flush-interval", default_value_t = 0)]
    pub flush_interval: u64,
    /// Random (request-aligned) offsets instead of sequential ones.
    #[arg(long)]
    pub random: bool,
    /// Reference mode: pread/pwrite the file itself at the same offsets (raw ceiling).
    #[arg(long)]
    pub pread: bool,
    /// Quiet: print only the result line.
    #[arg(short = 'q')]
    pub quiet: bool,
    /// The image.
    pub file: PathBuf,
}

/// Result of a run.
pub struct BenchResult {
    /// Seconds taken.
    pub secs: f64,
    /// Requests completed.
    pub requests: u64,
}

/// Run the benchmark and return its timing.
pub fn bench(a: &Args) -> Result<BenchResult> {
    let bufsize = parse_size(&a.size)?;
    let step = a
        .step
        .as_deref()
        .map(parse_size)
        .transpose()?
        .unwrap_or(bufsize);
    let start = parse_size(&a.offset)?;
    if bufsize == 0 || a.depth == 0 {
        bail!("request size and depth must be positive");
    }
    let cache = match a.cache.as_str() {
        "writeback" | "none" | "directsync" => CacheMode::Writeback,
        "writethrough" => CacheMode::Writethrough,
        "unsafe" => CacheMode::Unsafe,
        c => bail!("invalid cache mode '{c}'"),
    };
    enum Target {
        Dev(Arc<dyn BlockBackend>),
        File(std::fs::File, u64),
    }
    let target = if a.pread {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(a.write)
            .open(&a.file)
            .with_context(|| format!("open {}", a.file.display()))?;
        let len = f.metadata()?.len();
        Target::File(f, len)
    } else {
        let fmt = super::format_of(&a.file, parse_format(a.fmt.as_deref())?)?;
        Target::Dev(
            qcow::open_image(
                &a.file,
                &OpenOptions {
                    read_only: !a.write,
                    format: Some(fmt),
                    cache,
                    ..Default::default()
                },
            )
            .with_context(|| format!("Could not open '{}'", a.file.display()))?,
        )
    };
    let image_size = match &target {
        Target::Dev(d) => d.size(),
        Target::File(_, l) => *l,
    };
    if image_size < bufsize + start {
        bail!("image is smaller than one request");
    }
    if !a.quiet {
        println!(
            "Sending {} {} requests, {} bytes each, {} in parallel (starting at offset {}, step \
             size {})",
            a.count,
            if a.write { "write" } else { "read" },
            bufsize,
            a.depth,
            start,
            step
        );
    }
    let target = Arc::new(target);
    let next = Arc::new(AtomicU64::new(0));
    let slots = (image_size - start - bufsize) / bufsize + 1;
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for tid in 0..a.depth.min(a.count.max(1)) {
        let target = target.clone();
        let next = next.clone();
        let (count, random, write, pattern, fi) =
            (a.count, a.random, a.write, a.pattern, a.flush_interval);
        handles.push(std::thread::spawn(move || -> Result<()> {
            let mut buf = vec![pattern; bufsize as usize];
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (tid + 1);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok(());
                }
                let off = if random {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    start + (x % slots) * bufsize
                } else {
                    // As qemu-img bench: advance by the step, wrap at the image size.
                    let o = (start + i.wrapping_mul(step)) % image_size;
                    if o + bufsize > image_size {
                        0
                    } else {
                        o
                    }
                };
                match &*target {
                    Target::Dev(d) => {
                        if write {
                            d.write_at(off, &buf)
                        } else {
                            d.read_at(off, &mut buf)
                        }
                        .map_err(|e| anyhow!("request at {off}: {e}"))?;
                        if fi > 0 && write && (i + 1).is_multiple_of(fi) {
                            d.flush().map_err(|e| anyhow!("flush: {e}"))?;
                        }
                    }
                    Target::File(f, _) => {
                        if write {
                            f.write_all_at(&buf, off)
                        } else {
                            f.read_exact_at(&mut buf, off)
                        }
                        .with_context(|| format!("request at {off}"))?;
                    }
                }
            }
        }));
    }
    for h in handles {
        h.join().map_err(|_| anyhow!("bench worker panicked"))??;
    }
    if let Target::Dev(d) = &*target {
        if a.write {
            d.flush().map_err(|e| anyhow!("flush: {e}"))?;
        }
    }
    Ok(BenchResult {
        secs: t0.elapsed().as_secs_f64(),
        requests: a.count,
    })
}

/// Run `bench`.
pub fn run(a: Args) -> Result<i32> {
    let r = bench(&a)?;
    println!("Run completed in {:.3} seconds.", r.secs);
    if !a.quiet {
        println!("{:.0} requests/s", r.requests as f64 / r.secs.max(1e-9));
    }
    Ok(0)
}
