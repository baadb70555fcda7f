//! `rvmm-img create`: new raw or qcow2 images.

use anyhow::{bail, Context, Result};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::opts::{parse_bool, parse_opts, parse_size};
use qcow::{CompressionType, CreateOptions, Format, Preallocation};

/// Flags of `create`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image format (raw or qcow2).
    #[arg(short = 'f', default_value = "raw")]
    pub fmt: String,
    /// Format options (key=value,…).
    #[arg(short = 'o')]
    pub options: Vec<String>,
    /// Backing file.
    #[arg(short = 'b')]
    pub backing: Option<String>,
    /// Backing file format.
    #[arg(short = 'F')]
    pub backing_fmt: Option<String>,
    /// Quiet: print nothing on success.
    #[arg(short = 'q')]
    pub quiet: bool,
    /// Do not open the backing file (size must be given).
    #[arg(short = 'u')]
    pub unsafe_backing: bool,
    /// Image file to create.
    pub file: PathBuf,
    /// Virtual size (k, M, G, T suffixes).
    pub size: Option<String>,
}

/// Build engine create options from qemu-img's `-o` list and flags.
pub fn qcow2_options(
    opts: &[(String, String)],
    size: Option<u64>,
    backing: Option<String>,
    backing_fmt: Option<String>,
) -> Result<CreateOptions> {
    let mut c = CreateOptions {
        size,
        backing_file: backing,
        backing_format: backing_fmt
            .as_deref()
            .map(Format::from_name)
            .transpose()
            .context("invalid backing format")?,
        ..Default::default()
    };
    for (k, v) in opts {
        match k.as_str() {
            "cluster_size" => c.cluster_size = parse_size(v)?,
            "compat" => {
                c.v3 = match v.as_str() {
                    "0.10" | "v2" => false,
                    "1.1" | "v3" => true,
                    _ => bail!("Invalid compatibility level: '{v}' (use 0.10 or 1.1)"),
                }
            }
            "lazy_refcounts" => c.lazy_refcounts = parse_bool(k, v)?,
            "refcount_bits" => {
                c.refcount_bits = v
                    .parse()
                    .with_context(|| format!("invalid refcount_bits '{v}'"))?
            }
            "preallocation" => c.preallocation = Preallocation::from_name(v)?,
            "compression_type" => {
                c.compression_type = match v.as_str() {
                    "zlib" => CompressionType::Zlib,
                    "zstd" => CompressionType::Zstd,
                    _ => bail!("Invalid compression_type '{v}' (use zlib or zstd)"),
                }
            }
            "backing_file" => c.backing_file = Some(v.clone()),
            "backing_fmt" => {
                c.backing_format = Some(Format::from_name(v).context("invalid backing_fmt")?)
            }
            "size" => c.size = Some(parse_size(v)?),
            "extended_l2" => c.extended_l2 = parse_bool(k, v)?,
            "encryption" | "encrypt.format" | "data_file" => {
                bail!("option '{k}' is not supported by rvmm-img")
            }
            _ => bail!("Invalid parameter '{k}'"),
        }
    }
    Ok(c)
}

/// Create a raw image of `size` bytes.
pub fn create_raw(path: &std::path::Path, size: u64, prealloc: Preallocation) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.set_len(size)
        .with_context(|| format!("set size of {}", path.display()))?;
    match prealloc {
        Preallocation::Off => {}
        Preallocation::Metadata => bail!("preallocation=metadata is only for qcow2"),
        Preallocation::Falloc | Preallocation::Full => {
            let z = vec![0u8; 1 << 20];
            let mut off = 0;
            while off < size {
                let n = (size - off).min(z.len() as u64) as usize;
                f.write_all_at(&z[..n], off)
                    .with_context(|| format!("preallocate {}", path.display()))?;
                off += n as u64;
            }
        }
    }
    Ok(())
}

/// Run `create`.
pub fn run(a: Args) -> Result<i32> {
    let fmt = Format::from_name(&a.fmt)?;
    let size = a.size.as_deref().map(parse_size).transpose()?;
    let opts = parse_opts(&a.options)?;
    match fmt {
        Format::Raw => {
            let mut prealloc = Preallocation::Off;
            let mut size = size;
            for (k, v) in &opts {
                match k.as_str() {
                    "preallocation" => prealloc = Preallocation::from_name(v)?,
                    "size" => size = Some(parse_size(v)?),
                    _ => bail!("Invalid parameter '{k}' for format raw"),
                }
            }
            let size = size.context("Image creation needs a size parameter")?;
            let size = size.div_ceil(512) * 512;
            if !a.quiet {
                println!("Formatting '{}', fmt=raw size={size}", a.file.display());
            }
            create_raw(&a.file, size, prealloc)?;
        }
        Format::Qcow2 => {
            let c = qcow2_options(&opts, size, a.backing.clone(), a.backing_fmt.clone())?;
            if c.size.is_none() && a.unsafe_backing {
                bail!("-u needs an explicit size");
            }
            if !a.quiet {
                let mut line = format!(
                    "Formatting '{}', fmt=qcow2 cluster_size={} extended_l2={} compression_type={}",
                    a.file.display(),
                    c.cluster_size,
                    if c.extended_l2 { "on" } else { "off" },
                    c.compression_type.name()
                );
                if let Some(s) = c.size {
                    line += &format!(" size={}", s.div_ceil(512) * 512);
                }
                if let Some(b) = &c.backing_file {
                    line += &format!(" backing_file={b}");
                }
                if let Some(f) = c.backing_format {
                    line += &format!(" backing_fmt={f}");
                }
                line += &format!(
                    " lazy_refcounts={} refcount_bits={}",
                    if c.lazy_refcounts { "on" } else { "off" },
                    c.refcount_bits
                );
                println!("{line}");
            }
            qcow::create(&a.file, &c)
                .with_context(|| format!("{}: image creation failed", a.file.display()))?;
        }
    }
    Ok(0)
}
