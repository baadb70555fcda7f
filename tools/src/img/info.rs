//! `rvmm-img info`: image facts in qemu-img's human and JSON layouts.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::opts::human_size;
use super::{format_of, parse_format};
use qcow::Format;

/// Flags of `info`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image format (probed when absent).
    #[arg(short = 'f')]
    pub fmt: Option<String>,
    /// Output format: human or json.
    #[arg(long, default_value = "human")]
    pub output: String,
    /// Show every image of the backing chain.
    #[arg(long)]
    pub backing_chain: bool,
    /// Accepted for qemu-img compatibility (images are opened read-only anyway).
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    /// The image.
    pub file: PathBuf,
}

/// Facts about one image, as `info` prints them.
pub struct ImageInfo {
    /// JSON object in qemu-img's schema.
    pub json: Value,
    /// Resolved path of its backing file and that file's format.
    pub backing: Option<(PathBuf, Format)>,
}

fn date(sec: u32) -> String {
    let t = sec as i64;
    let days = t.div_euclid(86400);
    let rem = t.rem_euclid(86400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Collect the facts of one image.
pub fn image_info(path: &Path, fmt: Option<Format>) -> Result<ImageInfo> {
    let fmt = format_of(path, fmt)?;
    let md = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    let actual = md.blocks() * 512;
    let name = path.display().to_string();
    match fmt {
        Format::Raw => {
            let b = super::open(path, Some(Format::Raw), true)?;
            Ok(ImageInfo {
                json: json!({
                    "virtual-size": b.size(),
                    "filename": name,
                    "format": "raw",
                    "actual-size": actual,
                    "dirty-flag": false,
                }),
                backing: None,
            })
        }
        Format::Qcow2 => {
            let q = qcow::Qcow2::open_with(
                path,
                &qcow::OpenOptions {
                    read_only: true,
                    format: Some(Format::Qcow2),
                    ..Default::default()
                },
                qcow::qcow2::OpenFlags {
                    allow_dirty: true,
                    no_backing: true,
                },
            )
            .with_context(|| format!("Could not open '{}'", path.display()))?;
            let h = q.header()?;
            let mut data = json!({
                "compat": if h.version >= 3 { "1.1" } else { "0.10" },
                "compression-type": h.compression_type.name(),
                "refcount-bits": h.refcount_bits(),
                "corrupt": h.incompatible & qcow::qcow2::header::INCOMPAT_CORRUPT != 0,
                "extended-l2": h.incompatible & qcow::qcow2::header::INCOMPAT_EXTL2 != 0,
            });
            if h.version >= 3 {
                data["lazy-refcounts"] =
                    json!(h.compatible & qcow::qcow2::header::COMPAT_LAZY_REFCOUNTS != 0);
            }
            let mut j = json!({
                "virtual-size": h.size,
                "filename": name,
                "cluster-size": h.cluster_size(),
                "format": "qcow2",
                "actual-size": actual,
                "format-specific": {"type": "qcow2", "data": data},
                "dirty-flag": h.incompatible & qcow::qcow2::header::INCOMPAT_DIRTY != 0,
            });
            let snaps = q.snapshots()?;
            if !snaps.is_empty() {
                j["snapshots"] = Value::Array(
                    snaps
                        .iter()
                        .map(|s| {
                            json!({
                                "icount": 0,
                                "vm-state-size": s.vm_state_size,
                                "date-sec": s.date_sec,
                                "date-nsec": s.date_nsec,
                                "vm-clock-sec": s.vm_clock_nsec / 1_000_000_000,
                                "vm-clock-nsec": s.vm_clock_nsec % 1_000_000_000,
                                "id": s.id,
                                "name": s.name,
                            })
                        })
                        .collect(),
                );
            }
            let mut backing = None;
            if let Some(b) = &h.backing_file {
                j["backing-filename"] = json!(b);
                if let Some(f) = &h.backing_format {
                    j["backing-filename-format"] = json!(f);
                }
                match qcow::qcow2::resolve_backing(path, b, h.backing_format.as_deref()) {
                    Ok((p, f)) => {
                        j["full-backing-filename"] = json!(p.display().to_string());
                        backing = Some((p, f));
                    }
                    Err(e) => log::warn!("{e}"),
                }
            }
            Ok(ImageInfo { json: j, backing })
        }
    }
}

/// Render one image's facts as qemu-img's human output.
pub fn human(j: &Value) -> String {
    let mut s = String::new();
    let g = |k: &str| j.get(k).cloned().unwrap_or(Value::Null);
    let vs = g("virtual-size").as_u64().unwrap_or(0);
    s += &format!("image: {}\n", g("filename").as_str().unwrap_or(""));
    s += &format!("file format: {}\n", g("format").as_str().unwrap_or(""));
    s += &format!("virtual size: {} ({vs} bytes)\n", human_size(vs));
    s += &format!(
        "disk size: {}\n",
        human_size(g("actual-size").as_u64().unwrap_or(0))
    );
    if let Some(c) = j.get("cluster-size") {
        s += &format!("cluster_size: {c}\n");
    }
    if let Some(b) = j.get("backing-filename").and_then(|v| v.as_str()) {
        s += &format!("backing file: {b}");
        if let Some(f) = j.get("full-backing-filename").and_then(|v| v.as_str()) {
            if f != b {
                s += &format!(" (actual path: {f})");
            }
        }
        s += "\n";
        if let Some(f) = j.get("backing-filename-format").and_then(|v| v.as_str()) {
            s += &format!("backing file format: {f}\n");
        }
    }
    if let Some(snaps) = j.get("snapshots").and_then(|v| v.as_array()) {
        s += "Snapshot list:\n";
        s += &snapshot_table(snaps);
    }
    if let Some(d) = j.pointer("/format-specific/data") {
        s += "Format specific information:\n";
        for (k, name) in [
            ("compat", "compat"),
            ("compression-type", "compression type"),
            ("lazy-refcounts", "lazy refcounts"),
            ("refcount-bits", "refcount bits"),
            ("corrupt", "corrupt"),
            ("extended-l2", "extended l2"),
        ] {
            if let Some(v) = d.get(k) {
                let v = match v {
                    Value::String(x) => x.clone(),
                    other => other.to_string(),
                };
                s += &format!("    {name}: {v}\n");
            }
        }
    }
    s
}

/// The snapshot list table (`info` and `snapshot -l`).
pub fn snapshot_table(snaps: &[Value]) -> String {
    let mut s = format!(
        "{:<10}{:<17}{:>8}{:>20}{:>13}{:>11}\n",
        "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT"
    );
    for x in snaps {
        let clk = x["vm-clock-sec"].as_u64().unwrap_or(0);
        let ns = x["vm-clock-nsec"].as_u64().unwrap_or(0);
        s += &format!(
            "{:<10}{:<17}{:>8}{:>20}{:>13}{:>11}\n",
            x["id"].as_str().unwrap_or(""),
            x["name"].as_str().unwrap_or(""),
            human_size(x["vm-state-size"].as_u64().unwrap_or(0)),
            date(x["date-sec"].as_u64().unwrap_or(0) as u32),
            format!(
                "{:02}:{:02}:{:02}.{:03}",
                clk / 3600,
                (clk / 60) % 60,
                clk % 60,
                ns / 1_000_000
            ),
            0
        );
    }
    s
}

/// Run `info`.
pub fn run(a: Args) -> Result<i32> {
    let json_out = match a.output.as_str() {
        "json" => true,
        "human" => false,
        o => anyhow::bail!("--output must be human or json, not '{o}'"),
    };
    let mut infos = Vec::new();
    let mut cur = Some((a.file.clone(), parse_format(a.fmt.as_deref())?));
    let mut depth = 0;
    while let Some((p, f)) = cur.take() {
        let i = image_info(&p, f)?;
        let next = i.backing.clone();
        infos.push(i.json);
        depth += 1;
        if a.backing_chain && depth <= qcow::open::MAX_BACKING_DEPTH {
            cur = next.map(|(p, f)| (p, Some(f)));
        }
    }
    if json_out {
        let v = if a.backing_chain {
            Value::Array(infos)
        } else {
            infos.into_iter().next().unwrap_or(Value::Null)
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let parts: Vec<String> = infos.iter().map(human).collect();
        print!("{}", parts.join("\n"));
    }
    Ok(0)
}
