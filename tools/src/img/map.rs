//! `rvmm-img map`: the allocation map of an image chain (qemu-img's JSON and human layouts).

use anyhow::{bail, Result};
use std::path::PathBuf;

use super::parse_format;
use qcow::{BlockBackend, Extent};

/// Flags of `map`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image format (probed when absent).
    #[arg(short = 'f')]
    pub fmt: Option<String>,
    /// Output format: human or json.
    #[arg(long, default_value = "human")]
    pub output: String,
    /// Accepted for qemu-img compatibility.
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    /// The image.
    pub file: PathBuf,
}

/// Extents of the whole disk with neighbours of equal status merged.
pub fn extents(dev: &dyn BlockBackend) -> Result<Vec<(u64, Extent)>> {
    let size = dev.size();
    let mut v: Vec<(u64, Extent)> = Vec::new();
    let mut off = 0;
    while off < size {
        let e = dev.block_status(off, (size - off).min(1 << 30))?;
        if e.len == 0 {
            bail!("block status returned an empty extent at {off}");
        }
        if let Some((s, last)) = v.last_mut() {
            let contiguous = match (last.offset, e.offset) {
                (Some(a), Some(b)) => a + last.len == b,
                (None, None) => true,
                _ => false,
            };
            if contiguous
                && last.present == e.present
                && last.zero == e.zero
                && last.data == e.data
                && last.depth == e.depth
                && last.compressed == e.compressed
                && *s + last.len == off
            {
                last.len += e.len;
                off += e.len;
                continue;
            }
        }
        v.push((off, e));
        off += e.len;
    }
    Ok(v)
}

/// Run `map`.
pub fn run(a: Args) -> Result<i32> {
    let dev = super::open(&a.file, parse_format(a.fmt.as_deref())?, true)?;
    let ex = extents(dev.as_ref())?;
    match a.output.as_str() {
        "json" => {
            let lines: Vec<String> = ex
                .iter()
                .map(|(s, e)| {
                    let mut l = format!(
                        "{{ \"start\": {s}, \"length\": {}, \"depth\": {}, \"present\": {}, \
                         \"zero\": {}, \"data\": {}",
                        e.len, e.depth, e.present, e.zero, e.data
                    );
                    if let Some(o) = e.offset {
                        l += &format!(", \"offset\": {o}");
                    }
                    l + "}"
                })
                .collect();
            println!("[{}]", lines.join(",\n"));
        }
        "human" => {
            println!("{:<16}{:<16}{:<16}File", "Offset", "Length", "Mapped to");
            for (s, e) in &ex {
                if let (true, Some(o)) = (e.data, e.offset) {
                    println!("{:<#16x}{:<#16x}{:<#16x}{}", s, e.len, o, a.file.display());
                }
            }
        }
        o => bail!("--output must be human or json, not '{o}'"),
    }
    Ok(0)
}
