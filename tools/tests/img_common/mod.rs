//! Helpers the rvmm-img test files share: run a tool, insist that it succeeds, path strings.
// Each test binary uses only some of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// The rvmm-img binary under test.
pub const RVMM_IMG: &str = env!("CARGO_BIN_EXE_rvmm-img");
/// One mebibyte.
pub const MIB: u64 = 1 << 20;

/// Run `cmd` with `args` and collect its output.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"))
}

/// Run `cmd` with `args`, fail the test unless it succeeds, and return its stdout.
pub fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test path as the `&str` an argument list wants.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}
