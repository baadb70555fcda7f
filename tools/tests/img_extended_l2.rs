//! qcow2 extended L2 entries (subclusters) against qemu-img/qemu-io as oracles, both ways:
//! qemu writes subcluster-granular patterns (over a backing file) and our reads must equal
//! `qemu-img convert -O raw`; we create and write, and `qemu-img check`/`compare` must agree;
//! a bitmap with a subcluster both allocated and zero fails cleanly.

mod img_common;

use img_common::{ok, run, s, MIB, RVMM_IMG};
use std::path::Path;

/// Cluster sizes covered: the minimum (16 KiB), the default and the maximum.
const CLUSTER_SIZES: [u64; 3] = [16 << 10, 64 << 10, 2 << 20];

fn size_for(cs: u64) -> u64 {
    (24 * cs).max(4 * MIB)
}

fn io(tool: &str, cmds: &[String], img: &Path) -> String {
    let mut a: Vec<&str> = if tool == "qemu-io" {
        vec![]
    } else {
        vec!["io"]
    };
    for c in cmds {
        a.push("-c");
        a.push(c.as_str());
    }
    a.push(s(img));
    ok(tool, &a)
}

fn to_raw(tool: &str, img: &Path, out: &Path) -> Vec<u8> {
    ok(tool, &["convert", "-O", "raw", s(img), s(out)]);
    std::fs::read(out).unwrap()
}

/// A backing file whose every 512-byte sector holds a distinct byte, so a read that falls
/// through to the wrong place shows.
fn patterned_base(path: &Path, size: u64) -> Vec<u8> {
    let v: Vec<u8> = (0..size).map(|i| ((i / 512) % 251 + 1) as u8).collect();
    std::fs::write(path, &v).unwrap();
    v
}

/// `qemu-img map` extents without host offsets (qemu reports offsets of preallocated zero
/// subclusters, we do not), adjacent extents of equal status merged (qemu also splits where
/// its host offsets stop being contiguous, even when it does not print them).
fn map_of(tool: &str, img: &Path) -> Vec<(u64, u64, u64, bool, bool, bool)> {
    let out = ok(tool, &["map", "--output=json", s(img)]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut merged: Vec<(u64, u64, u64, bool, bool, bool)> = Vec::new();
    for e in v.as_array().unwrap().iter().map(|e| {
        (
            e["start"].as_u64().unwrap(),
            e["length"].as_u64().unwrap(),
            e["depth"].as_u64().unwrap(),
            e["zero"].as_bool().unwrap(),
            e["data"].as_bool().unwrap(),
            e["present"].as_bool().unwrap(),
        )
    }) {
        match merged.last_mut() {
            // Data extents stay split: their host offsets may differ.
            Some(l) if l.0 + l.1 == e.0 && (l.2, l.3, l.4, l.5) == (e.2, e.3, e.4, e.5) && !e.4 => {
                l.1 += e.1
            }
            _ => merged.push(e),
        }
    }
    merged
}

/// Subcluster-granular qemu-io commands for a disk of `size` bytes with clusters of `cs`.
fn qemu_ops(cs: u64, size: u64) -> Vec<String> {
    let sc = cs / 32;
    vec![
        format!("write -P 0x22 {} 100", sc / 2),
        format!("write -P 0x23 {} {}", 3 * sc, 2 * sc),
        format!("write -z {} {}", 5 * sc, sc),
        format!("write -z {} 10", 6 * sc + 7),
        format!("write -P 0x24 {} {}", cs + 9 * sc, 3 * sc + 1),
        format!("write -z {} {}", cs + 20 * sc, 4 * sc),
        format!("write -P 0x44 {} 300", 2 * cs - 100),
        format!("write -c -P 0x45 {} {}", 4 * cs, cs),
        format!("write -P 0x46 {} 77", 4 * cs + 5 * sc + 3),
        format!("write -z {} {}", 8 * cs, 2 * cs),
        format!("write -P 0x47 {} {}", 8 * cs + sc, sc),
        format!("discard {} {}", 12 * cs, cs),
        format!("write -P 0x48 {} {}", 14 * cs, cs),
        format!("write -z {} {}", 14 * cs + 2 * sc, 30 * sc),
        format!("write -P 0x55 {} {}", size - sc - 5, sc + 5),
    ]
}

/// Our writes on top of qemu's layout: into allocated, zero, unallocated and compressed
/// subclusters, partial and whole.
fn our_ops(cs: u64) -> Vec<(u64, u64, Option<u8>)> {
    let sc = cs / 32;
    vec![
        (sc / 2 + 50, 200, Some(0x61)),
        (5 * sc + 10, 20, Some(0x62)),
        (cs + 19 * sc, 3 * sc, Some(0x63)),
        (cs + 21 * sc + 1, 2 * sc, None),
        (4 * cs + 7 * sc, 9, Some(0x64)),
        (8 * cs + 3 * sc, sc, Some(0x65)),
        (12 * cs + 1, 17, Some(0x66)),
        (14 * cs + 5 * sc, 2 * sc, None),
        (16 * cs + 7, sc * 3, Some(0x67)),
        (17 * cs + sc, 4 * sc, None),
    ]
}

fn cmd_of(op: &(u64, u64, Option<u8>)) -> String {
    match op {
        (o, l, Some(p)) => format!("write -P {p} {o} {l}"),
        (o, l, None) => format!("write -z {o} {l}"),
    }
}

fn apply(shadow: &mut [u8], op: &(u64, u64, Option<u8>)) {
    let (o, l, p) = *op;
    shadow[o as usize..(o + l) as usize].fill(p.unwrap_or(0));
}

fn qemu_check(img: &Path) {
    let out = run("qemu-img", &["check", s(img)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "qemu-img check {}:\n{}{}",
        img.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn qemu_written_subclusters_read_identically_and_take_our_writes() {
    let dir = tempfile::tempdir().unwrap();
    for cs in CLUSTER_SIZES {
        for backing in [false, true] {
            let size = size_for(cs);
            let img = dir.path().join(format!("q-{cs}-{backing}.qcow2"));
            let base = dir.path().join(format!("base-{cs}.raw"));
            let mut create = vec!["create", "-q", "-f", "qcow2"];
            let opts = format!("extended_l2=on,cluster_size={cs}");
            create.extend(["-o", &opts]);
            if backing {
                patterned_base(&base, size);
                create.extend(["-b", s(&base), "-F", "raw"]);
            }
            let size_s = size.to_string();
            create.extend([s(&img), &size_s]);
            ok("qemu-img", &create);
            io("qemu-io", &qemu_ops(cs, size), &img);
            let what = format!("cs={cs} backing={backing}");
            let theirs = to_raw("qemu-img", &img, &dir.path().join("theirs.raw"));
            let ours = to_raw(RVMM_IMG, &img, &dir.path().join("ours.raw"));
            assert!(ours == theirs, "{what}: our read differs from qemu's");
            assert_eq!(
                map_of(RVMM_IMG, &img),
                map_of("qemu-img", &img),
                "{what}: map"
            );
            let out = run(RVMM_IMG, &["check", s(&img)]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{what}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            // Now our writes on top of qemu's subcluster layout.
            let ops = our_ops(cs);
            let cmds: Vec<String> = ops.iter().map(cmd_of).collect();
            io(RVMM_IMG, &cmds, &img);
            let mut shadow = theirs;
            for o in &ops {
                apply(&mut shadow, o);
            }
            let raw = dir.path().join("shadow.raw");
            std::fs::write(&raw, &shadow).unwrap();
            qemu_check(&img);
            ok(
                "qemu-img",
                &["compare", "-f", "qcow2", "-F", "raw", s(&img), s(&raw)],
            );
            let ours = to_raw(RVMM_IMG, &img, &dir.path().join("ours.raw"));
            assert!(ours == shadow, "{what}: our read after our writes");
        }
    }
}

/// A small deterministic generator (no external crates needed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn our_extended_l2_images_pass_qemu_check_and_compare() {
    let dir = tempfile::tempdir().unwrap();
    for cs in CLUSTER_SIZES {
        for backing in [false, true] {
            let size = size_for(cs);
            let sc = cs / 32;
            let img = dir.path().join(format!("r-{cs}-{backing}.qcow2"));
            let base = dir.path().join(format!("base-{cs}.raw"));
            let opts = format!("extended_l2=on,cluster_size={cs}");
            let mut create = vec!["create", "-q", "-f", "qcow2", "-o", &opts];
            let mut shadow = if backing {
                let b = patterned_base(&base, size);
                create.extend(["-b", s(&base), "-F", "raw"]);
                b
            } else {
                vec![0u8; size as usize]
            };
            let size_s = size.to_string();
            create.extend([s(&img), &size_s]);
            ok(RVMM_IMG, &create);
            let mut r = Lcg(cs ^ u64::from(backing));
            let mut cmds = Vec::new();
            for i in 0..80u64 {
                let kind = r.below(20);
                // Offsets cluster near subcluster boundaries half of the time.
                let off = if r.below(2) == 0 {
                    r.below(size / sc) * sc + r.below(3) * 511
                } else {
                    r.below(size)
                };
                let off = off.min(size - 1);
                let len = (1 + r.below(3 * sc + 7)).min(size - off);
                let cl = off / cs * cs;
                let (cmd, o, l, p) = match kind {
                    0..=11 => {
                        let p = (i % 250 + 2) as u8;
                        (format!("write -P {p} {off} {len}"), off, len, p)
                    }
                    12..=15 => (format!("write -z {off} {len}"), off, len, 0),
                    16 => {
                        let o = off / sc * sc;
                        let l = (len.div_ceil(sc) * sc).min(size - o);
                        (format!("write -z {o} {l}"), o, l, 0)
                    }
                    17 if cl + cs <= size => (format!("discard {cl} {cs}"), cl, cs, 0),
                    18 if cl + cs <= size => {
                        let p = (i % 250 + 2) as u8;
                        (format!("write -c -P {p} {cl} {cs}"), cl, cs, p)
                    }
                    _ => {
                        let l = len.min(64);
                        let p = (i % 250 + 2) as u8;
                        (format!("write -P {p} {off} {l}"), off, l, p)
                    }
                };
                shadow[o as usize..(o + l) as usize].fill(p);
                cmds.push(cmd);
            }
            // Half the ops in one process, the rest in another (reopen in between).
            let (a, b) = cmds.split_at(cmds.len() / 2);
            io(RVMM_IMG, a, &img);
            io(RVMM_IMG, b, &img);
            let what = format!("cs={cs} backing={backing}");
            let raw = dir.path().join("shadow.raw");
            std::fs::write(&raw, &shadow).unwrap();
            qemu_check(&img);
            ok(
                "qemu-img",
                &["compare", "-f", "qcow2", "-F", "raw", s(&img), s(&raw)],
            );
            let ours = to_raw(RVMM_IMG, &img, &dir.path().join("ours.raw"));
            assert!(
                ours == shadow,
                "{what}: our own read differs from the shadow"
            );
            let out = run(RVMM_IMG, &["check", s(&img)]);
            assert_eq!(out.status.code(), Some(0), "{what}");
            // qemu-img info agrees on the format-specific data.
            let theirs: serde_json::Value =
                serde_json::from_str(&ok("qemu-img", &["info", "--output=json", s(&img)])).unwrap();
            let mine: serde_json::Value =
                serde_json::from_str(&ok(RVMM_IMG, &["info", "--output", "json", s(&img)]))
                    .unwrap();
            assert_eq!(theirs["format-specific"]["data"]["extended-l2"], true);
            assert_eq!(mine["format-specific"], theirs["format-specific"], "{what}");
            assert_eq!(theirs["cluster-size"], cs);
        }
    }
}

#[test]
fn create_refuses_what_qemu_img_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("x.qcow2");
    for (opts, msg) in [
        (
            "extended_l2=on,compat=0.10",
            "Extended L2 entries are only supported with compatibility level 1.1",
        ),
        (
            "extended_l2=on,cluster_size=8k",
            "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes",
        ),
    ] {
        for tool in ["qemu-img", RVMM_IMG] {
            let out = run(
                tool,
                &["create", "-q", "-f", "qcow2", "-o", opts, s(&img), "1M"],
            );
            assert_ne!(out.status.code(), Some(0), "{tool} {opts}");
            let e = String::from_utf8_lossy(&out.stderr);
            assert!(e.contains(msg), "{tool} {opts}: {e}");
        }
    }
    let out = ok(
        RVMM_IMG,
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "extended_l2=on",
            s(&img),
            "1M",
        ],
    );
    assert!(out.contains("extended_l2=on"), "{out}");
    let human = ok(RVMM_IMG, &["info", s(&img)]);
    assert!(human.contains("extended l2: true"), "{human}");
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn invalid_subcluster_bitmaps_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cs = 64u64 << 10;
    // (bitmap, whether the cluster keeps its host offset)
    for (bm, keep_host) in [
        (0x0000_0001_0000_0001u64, true),
        (0x8000_0000_8000_0000, true),
        (0x0000_0000_0000_0004, false),
    ] {
        let img = dir.path().join("h.qcow2");
        ok(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                "extended_l2=on",
                s(&img),
                "1M",
            ],
        );
        ok("qemu-io", &["-c", "write -P 7 0 64k", s(&img)]);
        let mut f = std::fs::read(&img).unwrap();
        let l1 = be64(&f, 40) as usize;
        let l2 = (be64(&f, l1) & 0x00ff_ffff_ffff_fe00) as usize;
        assert_ne!(l2, 0);
        if !keep_host {
            f[l2..l2 + 8].copy_from_slice(&0u64.to_be_bytes());
        }
        f[l2 + 8..l2 + 16].copy_from_slice(&bm.to_be_bytes());
        std::fs::write(&img, &f).unwrap();
        for cmd in ["read 0 512", "read 60k 4k"] {
            let out = run(RVMM_IMG, &["io", "-r", "-c", cmd, s(&img)]);
            assert_ne!(out.status.code(), Some(0), "{bm:#x} {cmd}");
            assert_ne!(out.status.code(), Some(101), "{bm:#x}: panicked");
            // rvmm-img io reports failed commands as qemu-io does, on stdout.
            let e = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
            assert!(
                e.contains("corrupt image") && e.contains("invalid subcluster bitmap"),
                "{bm:#x}: {e}"
            );
        }
        let out = run(
            RVMM_IMG,
            &["io", "-c", &format!("write -P 1 {} 10", cs / 2), s(&img)],
        );
        assert_ne!(out.status.code(), Some(0), "{bm:#x}: write");
        assert_ne!(out.status.code(), Some(101), "{bm:#x}: write panicked");
        let out = run(
            RVMM_IMG,
            &[
                "convert",
                "-O",
                "raw",
                s(&img),
                s(&dir.path().join("o.raw")),
            ],
        );
        assert_ne!(out.status.code(), Some(0), "{bm:#x}: convert");
        assert_ne!(out.status.code(), Some(101), "{bm:#x}: convert panicked");
        let out = run(RVMM_IMG, &["check", s(&img)]);
        assert_eq!(out.status.code(), Some(2), "{bm:#x}: check");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("invalid subcluster bitmap"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        // qemu agrees the image is corrupt.
        assert_eq!(run("qemu-img", &["check", s(&img)]).status.code(), Some(2));
    }
}
