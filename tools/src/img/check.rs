//! `rvmm-img check`: metadata consistency check and repair (exit 0 clean, 2 corrupt, 3 leaks).

use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::PathBuf;

use super::{format_of, parse_format};
use qcow::qcow2::OpenFlags;
use qcow::{CheckReport, Format, OpenOptions, Repair};

/// Flags of `check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image format (probed when absent).
    #[arg(short = 'f')]
    pub fmt: Option<String>,
    /// Repair: leaks or all.
    #[arg(short = 'r')]
    pub repair: Option<String>,
    /// Output format: human or json.
    #[arg(long, default_value = "human")]
    pub output: String,
    /// Quiet.
    #[arg(short = 'q')]
    pub quiet: bool,
    /// Accepted for qemu-img compatibility.
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    /// The image.
    pub file: PathBuf,
}

/// Exit code qemu-img uses for a report.
pub fn exit_code(r: &CheckReport) -> i32 {
    if r.check_errors > 0 {
        1
    } else if r.corruptions > 0 {
        2
    } else if r.leaks > 0 {
        3
    } else {
        0
    }
}

/// Run `check`.
pub fn run(a: Args) -> Result<i32> {
    let repair = match a.repair.as_deref() {
        None => None,
        Some("leaks") => Some(Repair::Leaks),
        Some("all") => Some(Repair::All),
        Some(o) => bail!("Unknown option value for -r (expecting 'leaks' or 'all'): {o}"),
    };
    let json_out = a.output == "json";
    let fmt = format_of(&a.file, parse_format(a.fmt.as_deref())?)?;
    if fmt == Format::Raw {
        eprintln!("qemu-img: This image format does not support checks");
        return Ok(63);
    }
    let q = qcow::Qcow2::open_with(
        &a.file,
        &OpenOptions {
            read_only: repair.is_none(),
            format: Some(Format::Qcow2),
            ..Default::default()
        },
        OpenFlags {
            allow_dirty: true,
            no_backing: true,
        },
    )
    .with_context(|| format!("Could not open '{}'", a.file.display()))?;
    let mut r = q.check(repair).context("check failed")?;
    if repair.is_some() {
        let fixed = (r.leaks_fixed, r.corruptions_fixed);
        if !a.quiet && !json_out && (fixed.0 > 0 || fixed.1 > 0) {
            println!("The following inconsistencies were found and repaired:\n");
            println!("    {} leaked clusters", fixed.0);
            println!("    {} corruptions\n", fixed.1);
            println!("Double checking the fixed image now...");
        }
        let again = q.check(None)?;
        r = CheckReport {
            leaks_fixed: fixed.0,
            corruptions_fixed: fixed.1,
            ..again
        };
    }
    q.close()?;
    if json_out {
        let v = json!({
            "image-end-offset": r.image_end_offset,
            "total-clusters": r.total_clusters,
            "check-errors": r.check_errors,
            "leaks": r.leaks,
            "corruptions": r.corruptions,
            "leaks-fixed": r.leaks_fixed,
            "corruptions-fixed": r.corruptions_fixed,
            "filename": a.file.display().to_string(),
            "format": "qcow2",
            "allocated-clusters": r.allocated_clusters,
            "fragmented-clusters": r.fragmented_clusters,
            "compressed-clusters": r.compressed_clusters,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !a.quiet {
        for m in &r.messages {
            println!("{m}");
        }
        if r.corruptions > 0 {
            println!(
                "\n{} errors were found on the image.\nData may be corrupted, or further writes \
                 to the image may corrupt it.",
                r.corruptions
            );
        }
        if r.leaks > 0 {
            println!(
                "\n{} leaked clusters were found on the image.\nThis means waste of disk space, \
                 but no harm to data.",
                r.leaks
            );
        }
        if r.corruptions == 0 && r.leaks == 0 {
            println!("No errors were found on the image.");
        }
        let t = r.total_clusters.max(1) as f64;
        println!(
            "{}/{} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed clusters",
            r.allocated_clusters,
            r.total_clusters,
            r.allocated_clusters as f64 * 100.0 / t,
            r.fragmented_clusters as f64 * 100.0 / r.allocated_clusters.max(1) as f64,
            r.compressed_clusters as f64 * 100.0 / r.allocated_clusters.max(1) as f64
        );
        println!("Image end offset: {}", r.image_end_offset);
    }
    Ok(exit_code(&r))
}
