//! Boots the project-built demo guest under rvmm with the serial console on this terminal:
//! `cargo run --release -p rvmm-tests --bin demo [-- extra rvmm flags]`. The guest prints a
//! banner and powers off through ACPI; the exit status is rvmm's.

use anyhow::{bail, Context, Result};
use std::process::Command;

fn main() -> Result<()> {
    let rvmm = match std::env::var_os("RVMM_BIN") {
        Some(p) => p.into(),
        None => rvmm_tests::bin_dir().join("rvmm"),
    };
    if !rvmm.is_file() {
        bail!(
            "rvmm not found at {}: build it first with `cargo build --release --workspace` \
             (same profile as this demo), or set RVMM_BIN",
            rvmm.display()
        );
    }
    let kernel = rvmm_tests::guest("demo");
    let status = Command::new(&rvmm)
        .arg("--kernel")
        .arg(&kernel)
        .args(["--serial", "stdio", "--cmdline", "console=ttyS0 demo"])
        .args(std::env::args_os().skip(1))
        .status()
        .with_context(|| format!("starting {} --kernel {}", rvmm.display(), kernel.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}
