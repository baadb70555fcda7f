//! `rvmm-img compare`: exit 0 when two images read the same, 1 when they differ, 2 on error.

use anyhow::Result;
use std::path::PathBuf;

use super::parse_format;
use qcow::BlockBackend;

/// Flags of `compare`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Format of the first image.
    #[arg(short = 'f')]
    pub fmt_a: Option<String>,
    /// Format of the second image.
    #[arg(short = 'F')]
    pub fmt_b: Option<String>,
    /// Strict: images of different size differ.
    #[arg(short = 's')]
    pub strict: bool,
    /// Quiet.
    #[arg(short = 'q')]
    pub quiet: bool,
    /// Show a progress bar (accepted, ignored).
    #[arg(short = 'p')]
    pub progress: bool,
    /// Accepted for qemu-img compatibility.
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    /// First image.
    pub a: PathBuf,
    /// Second image.
    pub b: PathBuf,
}

fn first_diff(x: &[u8], y: &[u8]) -> Option<usize> {
    x.iter().zip(y).position(|(a, b)| a != b)
}

/// Offset of the first difference, or `None` when equal.
pub fn compare(a: &dyn BlockBackend, b: &dyn BlockBackend, strict: bool) -> Result<Option<u64>> {
    let (sa, sb) = (a.size(), b.size());
    if strict && sa != sb {
        return Ok(Some(sa.min(sb)));
    }
    let common = sa.min(sb);
    let chunk = 1u64 << 20;
    let mut ba = vec![0u8; chunk as usize];
    let mut bb = vec![0u8; chunk as usize];
    let mut off = 0;
    while off < common {
        let n = chunk.min(common - off) as usize;
        let (xa, xb) = (
            a.block_status(off, n as u64)?,
            b.block_status(off, n as u64)?,
        );
        let len = xa.len.min(xb.len) as usize;
        if xa.zero && !xa.data && xb.zero && !xb.data {
            off += len.max(1) as u64;
            continue;
        }
        a.read_at(off, &mut ba[..n])?;
        b.read_at(off, &mut bb[..n])?;
        if let Some(d) = first_diff(&ba[..n], &bb[..n]) {
            return Ok(Some(off + d as u64));
        }
        off += n as u64;
    }
    let longer: &dyn BlockBackend = if sa > sb { a } else { b };
    while off < sa.max(sb) {
        let n = chunk.min(sa.max(sb) - off) as usize;
        longer.read_at(off, &mut ba[..n])?;
        if let Some(d) = ba[..n].iter().position(|&x| x != 0) {
            return Ok(Some(off + d as u64));
        }
        off += n as u64;
    }
    Ok(None)
}

/// Run `compare`.
pub fn run(a: Args) -> Result<i32> {
    let go = || -> Result<i32> {
        let x = super::open(&a.a, parse_format(a.fmt_a.as_deref())?, true)?;
        let y = super::open(&a.b, parse_format(a.fmt_b.as_deref())?, true)?;
        if a.strict && x.size() != y.size() {
            if !a.quiet {
                println!("Strict mode: Image size mismatch!");
            }
            return Ok(1);
        }
        match compare(x.as_ref(), y.as_ref(), a.strict)? {
            None => {
                if !a.quiet {
                    println!("Images are identical.");
                }
                Ok(0)
            }
            Some(off) => {
                if !a.quiet {
                    println!("Content mismatch at offset {off}!");
                }
                Ok(1)
            }
        }
    };
    match go() {
        Ok(c) => Ok(c),
        Err(e) => {
            eprintln!("rvmm-img: {e:#}");
            Ok(2)
        }
    }
}
