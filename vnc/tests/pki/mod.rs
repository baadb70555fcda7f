//! A throwaway PKI for the TLS tests (`vnc/tests/rfb.rs` and `tools/tests/vnc_clients.rs`,
//! which includes this file by path).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A test CA and a server certificate it signed for localhost/127.0.0.1, made with the
/// openssl CLI: `(ca.pem, cert.pem, key.pem)`.
pub fn test_pki(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .ok()?;
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = [
        "-days",
        "2",
        "-subj",
        "/CN=rvmm test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ];
    let leaf = [
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ];
    let sign = [
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ];
    let ok = run(&[&["req", "-x509"][..], &ec, &ca].concat())
        && run(&[&["req"][..], &ec, &leaf].concat())
        && run(&sign);
    ok.then(|| {
        (
            dir.join("ca.pem"),
            dir.join("cert.pem"),
            dir.join("key.pem"),
        )
    })
}
