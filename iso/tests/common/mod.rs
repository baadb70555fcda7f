//! Build ISO fixtures at test time with xorriso (and grub-mkrescue), from a tree in a temp dir.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory tree that becomes an ISO.
pub struct Tree {
    pub dir: tempfile::TempDir,
}

impl Tree {
    pub fn new() -> Tree {
        Tree {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Add a file (parents created).
    pub fn file(&self, path: &str, data: impl AsRef<[u8]>) -> &Self {
        let p = self.root().join(path.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
        self
    }

    /// Copy a host file into the tree.
    pub fn copy(&self, path: &str, from: &Path) -> &Self {
        let data = fs::read(from).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        self.file(path, data)
    }

    /// Run `xorriso -as mkisofs ARGS -o out root` and return the image path.
    pub fn mkisofs(&self, args: &[&str]) -> PathBuf {
        fs::create_dir_all(self.root()).unwrap();
        let out = self.dir.path().join("out.iso");
        let st = Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet"])
            .args(args)
            .arg("-o")
            .arg(&out)
            .arg(self.root())
            .status()
            .expect("xorriso runs (scripts/setup.sh installs it)");
        assert!(st.success(), "xorriso failed");
        out
    }
}

/// Logical block address xorriso reports for a file on an image (the oracle for extents).
pub fn xorriso_lba(iso: &Path, path: &str) -> u32 {
    let o = Command::new("xorriso")
        .args(["-indev"])
        .arg(iso)
        .args(["-find", path, "-exec", "report_lba"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    // "File data lba:  0 ,      35 ,       1 ,       1234 , '/path'"
    let line = text
        .lines()
        .find(|l| l.starts_with("File data lba:"))
        .unwrap_or_else(|| panic!("no report_lba for {path}: {text}"));
    let fields: Vec<&str> = line["File data lba:".len()..].split(',').collect();
    fields[1].trim().parse().unwrap()
}

/// Offset of the directory record naming `name` (plain ISO 9660 identifier) in `image`, inside
/// the directory extent starting at block `dir_lba`.
pub fn record_offset(image: &[u8], dir_lba: u32, name: &[u8]) -> usize {
    let start = dir_lba as usize * 2048;
    let mut pos = start;
    loop {
        let len = image[pos] as usize;
        assert!(len != 0, "record {name:?} not found");
        let nl = image[pos + 32] as usize;
        let id = &image[pos + 33..pos + 33 + nl];
        if id == name || id.starts_with(&[name, b";"].concat()) {
            return pos;
        }
        pos += len;
    }
}

/// Set the extent (both byte orders) of the directory record at `rec`.
pub fn patch_extent(image: &mut [u8], rec: usize, lba: u32, len: u32) {
    image[rec + 2..rec + 6].copy_from_slice(&lba.to_le_bytes());
    image[rec + 6..rec + 10].copy_from_slice(&lba.to_be_bytes());
    image[rec + 10..rec + 14].copy_from_slice(&len.to_le_bytes());
    image[rec + 14..rec + 18].copy_from_slice(&len.to_be_bytes());
}

/// Tiny deterministic PRNG (xorshift) for corruption tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
