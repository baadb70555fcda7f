//! `rvmm-img io`: a qemu-io subset (read/write/discard/flush) for scripts and tests.

use anyhow::{anyhow, bail, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::opts::human_size;
use super::{format_of, parse_format};
use qcow::{BlockBackend, Format};

/// Flags of `io`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A command to run (repeatable), e.g. `write -P 0xab 0 64k`.
    #[arg(short = 'c')]
    pub cmds: Vec<String>,
    /// Image format (probed when absent).
    #[arg(short = 'f')]
    pub fmt: Option<String>,
    /// Open read-only.
    #[arg(short = 'r')]
    pub read_only: bool,
    /// The image.
    pub file: PathBuf,
}

/// An opened image, with the qcow2 engine at hand for compressed writes.
pub struct Image {
    /// Generic backend.
    pub dev: Arc<dyn BlockBackend>,
    /// The same image as qcow2, when it is one.
    pub qcow2: Option<Arc<qcow::Qcow2>>,
}

/// Parse a number with qemu's size suffixes (also hex with 0x).
pub fn cvtnum(s: &str) -> Result<u64> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16).map_err(|_| anyhow!("invalid number '{s}'"));
    }
    super::opts::parse_size(s)
}

fn parse_pattern(s: &str) -> Result<u8> {
    let v = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        i64::from_str_radix(h, 16)
    } else {
        s.parse::<i64>()
    }
    .map_err(|_| anyhow!("invalid pattern '{s}'"))?;
    Ok(v as u8)
}

fn dump(buf: &[u8], offset: u64) {
    for (i, chunk) in buf.chunks(16).enumerate() {
        let mut line = format!("{:08x}:  ", offset + i as u64 * 16);
        for b in chunk {
            line += &format!("{b:02x} ");
        }
        line.push(' ');
        for &b in chunk {
            line.push(if b.is_ascii_alphanumeric() {
                b as char
            } else {
                '.'
            });
        }
        println!("{line}");
    }
}

fn stats(op: &str, len: u64, off: u64, t: Instant, quiet: bool) {
    if quiet {
        return;
    }
    let secs = t.elapsed().as_secs_f64();
    println!("{op} {len}/{len} bytes at offset {off}");
    let rate = if secs > 0.0 { len as f64 / secs } else { 0.0 };
    let ops = if secs > 0.0 { 1.0 / secs } else { 0.0 };
    println!(
        "{}, 1 ops; {:05.2} sec ({}/sec and {ops:.4} ops/sec)",
        human_size(len),
        secs,
        human_size(rate as u64)
    );
}

/// Run one qemu-io command; `Err` is a failed command (exit code 1).
pub fn command(img: &Image, line: &str) -> Result<()> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((&cmd, rest)) = words.split_first() else {
        return Ok(());
    };
    let mut pattern: Option<u8> = None;
    let (mut verbose, mut zero, mut compressed, mut quiet) = (false, false, false, false);
    let mut pos = Vec::new();
    let mut it = rest.iter();
    while let Some(&w) = it.next() {
        match w {
            "-P" => {
                let v = it
                    .next()
                    .ok_or_else(|| anyhow!("{cmd}: -P needs a pattern"))?;
                pattern = Some(parse_pattern(v)?);
            }
            "-v" => verbose = true,
            "-z" => zero = true,
            "-c" => compressed = true,
            "-q" => quiet = true,
            "-u" => {}
            _ if w.starts_with('-') && w.len() > 1 => bail!("{cmd}: unsupported option '{w}'"),
            _ => pos.push(w),
        }
    }
    let range = || -> Result<(u64, u64)> {
        if pos.len() != 2 {
            bail!("{cmd}: expected <offset> <length>");
        }
        Ok((cvtnum(pos[0])?, cvtnum(pos[1])?))
    };
    let t = Instant::now();
    match cmd {
        "read" => {
            let (off, len) = range()?;
            let len_us = usize::try_from(len).map_err(|_| anyhow!("length too large"))?;
            let mut buf = vec![0u8; len_us];
            img.dev
                .read_at(off, &mut buf)
                .map_err(|e| anyhow!("read failed: {e}"))?;
            if let Some(p) = pattern {
                if let Some(bad) = buf.iter().position(|&b| b != p) {
                    println!(
                        "Pattern verification failed at offset {}, {} bytes",
                        off + bad as u64,
                        len
                    );
                    bail!("pattern verification failed");
                }
            }
            if verbose {
                dump(&buf, off);
            }
            stats("read", len, off, t, quiet);
        }
        "write" => {
            let (off, len) = range()?;
            if zero {
                img.dev
                    .write_zeroes(off, len)
                    .map_err(|e| anyhow!("write failed: {e}"))?;
            } else {
                let len_us = usize::try_from(len).map_err(|_| anyhow!("length too large"))?;
                let buf = vec![pattern.unwrap_or(0xcd); len_us];
                if compressed {
                    let q = img
                        .qcow2
                        .as_ref()
                        .ok_or_else(|| anyhow!("write failed: compression needs qcow2"))?;
                    let cs = q.cluster_size() as usize;
                    for (i, c) in buf.chunks(cs).enumerate() {
                        q.write_compressed(off + (i * cs) as u64, c)
                            .map_err(|e| anyhow!("write failed: {e}"))?;
                    }
                } else {
                    img.dev
                        .write_at(off, &buf)
                        .map_err(|e| anyhow!("write failed: {e}"))?;
                }
            }
            stats("wrote", len, off, t, quiet);
        }
        "discard" => {
            let (off, len) = range()?;
            img.dev
                .discard(off, len)
                .map_err(|e| anyhow!("discard failed: {e}"))?;
            stats("discard", len, off, t, quiet);
        }
        "flush" => img.dev.flush().map_err(|e| anyhow!("flush failed: {e}"))?,
        _ => bail!("command '{cmd}' not found"),
    }
    Ok(())
}

/// Run `io`.
pub fn run(a: Args) -> Result<i32> {
    let fmt = format_of(&a.file, parse_format(a.fmt.as_deref())?)?;
    let img = match fmt {
        Format::Qcow2 => {
            let q = Arc::new(super::open_qcow2(&a.file, a.read_only)?);
            Image {
                dev: q.clone(),
                qcow2: Some(q),
            }
        }
        Format::Raw => Image {
            dev: super::open(&a.file, Some(Format::Raw), a.read_only)?,
            qcow2: None,
        },
    };
    let mut code = 0;
    for c in &a.cmds {
        if let Err(e) = command(&img, c) {
            if !e.to_string().contains("pattern verification") {
                println!("{e}");
            }
            code = 1;
        }
    }
    if let Some(q) = &img.qcow2 {
        q.close()?;
    }
    Ok(code)
}
