//! rvmm-img / qcow engine interop with qemu-img and qemu-io as oracles, in both directions.
//!
//! Direction 1: qemu creates and writes an image; our reads (engine and `rvmm-img convert`)
//! must equal `qemu-img convert -O raw`. Direction 2: we create and write; `qemu-img check`
//! must find nothing and `qemu-img compare` must match a raw shadow written with the same ops.

mod img_common;

use img_common::{ok, run, s, MIB, RVMM_IMG};
use std::path::Path;

/// A write workload in qemu-io syntax, also applied to a byte-vector shadow.
#[derive(Clone, Copy, Debug)]
enum Op {
    Write(u64, u64, u8),
    Zero(u64, u64),
    Compressed(u64, u64, u8),
    Discard(u64, u64),
}

impl Op {
    fn cmd(&self) -> String {
        match *self {
            Op::Write(o, l, p) => format!("write -P {p} {o} {l}"),
            Op::Zero(o, l) => format!("write -z {o} {l}"),
            Op::Compressed(o, l, p) => format!("write -c -P {p} {o} {l}"),
            Op::Discard(o, l) => format!("discard {o} {l}"),
        }
    }
    fn apply(&self, shadow: &mut [u8]) {
        match *self {
            Op::Write(o, l, p) | Op::Compressed(o, l, p) => {
                shadow[o as usize..(o + l) as usize].fill(p)
            }
            Op::Zero(o, l) | Op::Discard(o, l) => shadow[o as usize..(o + l) as usize].fill(0),
        }
    }
}

/// Ops that mean the same for both tools: cluster-aligned discards (whole clusters, no
/// backing) and compressed writes of whole clusters.
fn workload(cs: u64, size: u64) -> Vec<Op> {
    let mut v = vec![
        Op::Write(0, 3 * cs + 100, 0x11),
        Op::Write(cs / 2, 1000, 0x22),
        Op::Write(size - 5000, 5000, 0x33),
        Op::Write(7 * cs + 3, cs, 0x44),
        Op::Zero(cs, cs),
        Op::Zero(7 * cs + 10, 20),
        Op::Write(12 * cs, 4 * cs, 0x55),
        Op::Discard(13 * cs, 2 * cs),
        Op::Compressed(20 * cs, cs, 0x66),
        Op::Compressed(21 * cs, 2 * cs, 0x67),
        Op::Write(21 * cs + 17, 33, 0x68),
    ];
    if size > 64 * cs {
        v.push(Op::Write(size / 2 + 3, 3 * cs, 0x77));
    }
    v
}

fn io_args<'a>(cmds: &'a [String], img: &'a str) -> Vec<&'a str> {
    let mut a = vec![];
    for c in cmds {
        a.push("-c");
        a.push(c.as_str());
    }
    a.push(img);
    a
}

struct Cfg {
    compat: &'static str,
    cs: u64,
    refcount_bits: u32,
    lazy: bool,
}

impl Cfg {
    fn opts(&self) -> String {
        format!(
            "compat={},cluster_size={},refcount_bits={},lazy_refcounts={}",
            self.compat,
            self.cs,
            self.refcount_bits,
            if self.lazy { "on" } else { "off" }
        )
    }
}

fn matrix() -> Vec<Cfg> {
    let mut v = Vec::new();
    for cs in [512u64, 4096, 65536, 2 << 20] {
        v.push(Cfg {
            compat: "0.10",
            cs,
            refcount_bits: 16,
            lazy: false,
        });
        for rb in [1u32, 16, 64] {
            v.push(Cfg {
                compat: "1.1",
                cs,
                refcount_bits: rb,
                lazy: false,
            });
        }
    }
    v.push(Cfg {
        compat: "1.1",
        cs: 65536,
        refcount_bits: 16,
        lazy: true,
    });
    v
}

fn image_size(cs: u64) -> u64 {
    (64 * cs).max(8 * MIB)
}

fn raw_of(tool: &str, img: &Path, out: &Path) -> Vec<u8> {
    match tool {
        "qemu" => ok("qemu-img", &["convert", "-O", "raw", s(img), s(out)]),
        _ => ok(RVMM_IMG, &["convert", "-O", "raw", s(img), s(out)]),
    };
    std::fs::read(out).unwrap()
}

#[test]
fn qemu_written_images_read_identically() {
    let dir = tempfile::tempdir().unwrap();
    for cfg in matrix() {
        let size = image_size(cfg.cs);
        let img = dir.path().join(format!(
            "q-{}-{}-{}.qcow2",
            cfg.compat, cfg.cs, cfg.refcount_bits
        ));
        ok(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &cfg.opts(),
                s(&img),
                &size.to_string(),
            ],
        );
        let ops = workload(cfg.cs, size);
        let cmds: Vec<String> = ops.iter().map(Op::cmd).collect();
        ok("qemu-io", &io_args(&cmds, s(&img)));
        let mut shadow = vec![0u8; size as usize];
        for o in &ops {
            o.apply(&mut shadow);
        }
        let theirs = raw_of("qemu", &img, &dir.path().join("theirs.raw"));
        assert!(
            theirs == shadow,
            "{}: qemu's own view differs from the shadow",
            cfg.opts()
        );
        let ours = raw_of("rvmm", &img, &dir.path().join("ours.raw"));
        assert!(
            ours == theirs,
            "{}: our read differs from qemu's",
            cfg.opts()
        );
        // Our check agrees that qemu's image is clean.
        let out = run(RVMM_IMG, &["check", s(&img)]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            cfg.opts(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn our_written_images_pass_qemu_check_and_compare() {
    let dir = tempfile::tempdir().unwrap();
    for cfg in matrix() {
        let size = image_size(cfg.cs);
        let img = dir.path().join(format!(
            "r-{}-{}-{}.qcow2",
            cfg.compat, cfg.cs, cfg.refcount_bits
        ));
        ok(
            RVMM_IMG,
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &cfg.opts(),
                s(&img),
                &size.to_string(),
            ],
        );
        let ops = workload(cfg.cs, size);
        let cmds: Vec<String> = ops.iter().map(Op::cmd).collect();
        ok(
            RVMM_IMG,
            &["io"]
                .iter()
                .copied()
                .chain(io_args(&cmds, s(&img)))
                .collect::<Vec<_>>(),
        );
        let mut shadow = vec![0u8; size as usize];
        for o in &ops {
            o.apply(&mut shadow);
        }
        let raw = dir.path().join("shadow.raw");
        std::fs::write(&raw, &shadow).unwrap();
        let out = run("qemu-img", &["check", s(&img)]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: qemu-img check:\n{}",
            cfg.opts(),
            String::from_utf8_lossy(&out.stdout)
        );
        ok(
            "qemu-img",
            &["compare", "-f", "qcow2", "-F", "raw", s(&img), s(&raw)],
        );
        // qemu-img info sees the options we were asked for.
        let info: serde_json::Value =
            serde_json::from_str(&ok("qemu-img", &["info", "--output=json", s(&img)])).unwrap();
        assert_eq!(info["cluster-size"], cfg.cs);
        assert_eq!(info["format-specific"]["data"]["compat"], cfg.compat);
        assert_eq!(
            info["format-specific"]["data"]["refcount-bits"],
            cfg.refcount_bits
        );
        if cfg.compat == "1.1" {
            assert_eq!(info["format-specific"]["data"]["lazy-refcounts"], cfg.lazy);
            assert_eq!(info["dirty-flag"], false);
        }
    }
}

#[test]
fn preallocation_modes_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    for mode in ["off", "metadata", "falloc", "full"] {
        let ours = dir.path().join(format!("p-{mode}.qcow2"));
        ok(
            RVMM_IMG,
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &format!("preallocation={mode},cluster_size=64k"),
                s(&ours),
                "20M",
            ],
        );
        ok(RVMM_IMG, &["io", "-c", "write -P 9 1M 100k", s(&ours)]);
        let out = run("qemu-img", &["check", s(&ours)]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        ok(
            "qemu-io",
            &["-c", "read -P 9 1M 100k", "-c", "read -P 0 0 1M", s(&ours)],
        );
        if mode != "off" {
            let map = ok("qemu-img", &["map", "--output=json", s(&ours)]);
            assert!(
                !map.contains("\"data\": false"),
                "{mode}: not fully allocated: {map}"
            );
        }
        let theirs = dir.path().join(format!("pq-{mode}.qcow2"));
        ok(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &format!("preallocation={mode}"),
                s(&theirs),
                "20M",
            ],
        );
        ok("qemu-io", &["-c", "write -P 7 3M 64k", s(&theirs)]);
        ok(
            RVMM_IMG,
            &[
                "io",
                "-c",
                "read -P 7 3M 64k",
                "-c",
                "read -P 0 0 3M",
                "-c",
                "write -P 8 5M 4k",
                s(&theirs),
            ],
        );
        let out = run("qemu-img", &["check", s(&theirs)]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        ok("qemu-io", &["-c", "read -P 8 5M 4k", s(&theirs)]);
    }
}

fn patterned(size: usize) -> Vec<u8> {
    // Compressible but not trivial: text-like runs with a changing seed.
    (0..size)
        .map(|i| {
            if (i / 4096) % 3 == 0 {
                0
            } else {
                ((i / 7) % 251) as u8
            }
        })
        .collect()
}

#[test]
fn compressed_images_zlib_and_zstd_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    let data = patterned(6 * MIB as usize);
    std::fs::write(&raw, &data).unwrap();
    for ct in ["zlib", "zstd"] {
        // qemu compresses, we read and then write into compressed clusters.
        let q = dir.path().join(format!("qc-{ct}.qcow2"));
        ok(
            "qemu-img",
            &[
                "convert",
                "-c",
                "-O",
                "qcow2",
                "-o",
                &format!("compression_type={ct}"),
                s(&raw),
                s(&q),
            ],
        );
        let ours = raw_of("rvmm", &q, &dir.path().join("o.raw"));
        assert!(ours == data, "{ct}: our decompression differs");
        ok(
            RVMM_IMG,
            &[
                "io",
                "-c",
                "write -P 0x5a 70000 3000",
                "-c",
                "write -c -P 0x5b 2M 64k",
                s(&q),
            ],
        );
        let mut shadow = data.clone();
        shadow[70000..73000].fill(0x5a);
        shadow[2 * MIB as usize..2 * MIB as usize + 65536].fill(0x5b);
        let out = run("qemu-img", &["check", s(&q)]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{ct}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let sh = dir.path().join("shadow.raw");
        std::fs::write(&sh, &shadow).unwrap();
        ok("qemu-img", &["compare", "-F", "raw", s(&q), s(&sh)]);
        // We compress, qemu reads.
        let r = dir.path().join(format!("rc-{ct}.qcow2"));
        ok(
            RVMM_IMG,
            &[
                "convert",
                "-c",
                "-O",
                "qcow2",
                "-o",
                &format!("compression_type={ct}"),
                s(&raw),
                s(&r),
            ],
        );
        let info: serde_json::Value =
            serde_json::from_str(&ok("qemu-img", &["info", "--output=json", s(&r)])).unwrap();
        assert_eq!(info["format-specific"]["data"]["compression-type"], ct);
        let check: serde_json::Value =
            serde_json::from_str(&ok("qemu-img", &["check", "--output=json", s(&r)])).unwrap();
        assert!(
            check["compressed-clusters"].as_u64().unwrap() > 10,
            "{ct}: {check}"
        );
        ok("qemu-img", &["compare", "-F", "raw", s(&r), s(&raw)]);
        assert!(std::fs::metadata(&r).unwrap().len() < data.len() as u64 / 2);
    }
}

#[test]
fn backing_chains_raw_and_qcow2_relative_names() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = d.join("base.raw");
    let mut shadow = patterned(4 * MIB as usize);
    std::fs::write(&base, &shadow).unwrap();
    // mid (qcow2, by qemu, relative name) over raw base; top (ours) over mid.
    let mid = d.join("mid.qcow2");
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.raw",
            "-F",
            "raw",
            s(&mid),
        ],
    );
    ok("qemu-io", &["-c", "write -P 1 1M 64k", s(&mid)]);
    shadow[MIB as usize..MIB as usize + 65536].fill(1);
    let top = d.join("top.qcow2");
    ok(
        RVMM_IMG,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "mid.qcow2",
            "-F",
            "qcow2",
            s(&top),
        ],
    );
    ok(
        RVMM_IMG,
        &[
            "io",
            "-c",
            "write -P 2 1M 100",
            "-c",
            "write -P 3 3M 70000",
            "-c",
            "write -z 200k 64k",
            s(&top),
        ],
    );
    shadow[MIB as usize..MIB as usize + 100].fill(2);
    shadow[3 * MIB as usize..3 * MIB as usize + 70000].fill(3);
    shadow[200 * 1024..200 * 1024 + 65536].fill(0);
    let sh = d.join("shadow.raw");
    std::fs::write(&sh, &shadow).unwrap();
    let out = run("qemu-img", &["check", s(&top)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    ok("qemu-img", &["compare", "-F", "raw", s(&top), s(&sh)]);
    assert!(raw_of("rvmm", &top, &d.join("o.raw")) == shadow);
    // info --backing-chain lists all three, like qemu-img.
    let chain: serde_json::Value = serde_json::from_str(&ok(
        RVMM_IMG,
        &["info", "--output", "json", "--backing-chain", s(&top)],
    ))
    .unwrap();
    let formats: Vec<&str> = chain
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["format"].as_str().unwrap())
        .collect();
    assert_eq!(formats, ["qcow2", "qcow2", "raw"]);
    assert_eq!(chain[0]["backing-filename"], "mid.qcow2");
    // map agrees with qemu-img map on the chain.
    let ours = ok(RVMM_IMG, &["map", "--output", "json", s(&top)]);
    let theirs = ok("qemu-img", &["map", "--output=json", s(&top)]);
    let a: serde_json::Value = serde_json::from_str(&ours).unwrap();
    let b: serde_json::Value = serde_json::from_str(&theirs).unwrap();
    let strip = |v: &serde_json::Value| -> Vec<(u64, u64, bool, bool)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["start"].as_u64().unwrap(),
                    e["length"].as_u64().unwrap(),
                    e["data"].as_bool().unwrap(),
                    e["zero"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        strip(&a),
        strip(&b),
        "map differs:\nours {ours}\ntheirs {theirs}"
    );
    // commit top into mid, then mid reads like the shadow.
    ok(RVMM_IMG, &["commit", "-q", s(&top)]);
    ok("qemu-img", &["compare", "-F", "raw", s(&mid), s(&sh)]);
    ok("qemu-img", &["compare", "-F", "raw", s(&top), s(&sh)]);
    let out = run("qemu-img", &["check", s(&mid)]);
    assert_eq!(out.status.code(), Some(0));
    // rebase (safe) top straight onto base keeps its contents.
    ok(
        RVMM_IMG,
        &["rebase", "-b", "base.raw", "-F", "raw", s(&top)],
    );
    ok("qemu-img", &["compare", "-F", "raw", s(&top), s(&sh)]);
    let info: serde_json::Value =
        serde_json::from_str(&ok("qemu-img", &["info", "--output=json", s(&top)])).unwrap();
    assert_eq!(info["backing-filename"], "base.raw");
    assert_eq!(qemu_check_code(&top), 0);
}

fn qemu_check_code(p: &Path) -> i32 {
    run("qemu-img", &["check", s(p)])
        .status
        .code()
        .unwrap_or(-1)
}

#[test]
fn hostile_backing_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = d.join("a.qcow2");
    let b = d.join("b.qcow2");
    ok("qemu-img", &["create", "-q", "-f", "qcow2", s(&a), "1M"]);
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "a.qcow2",
            "-F",
            "qcow2",
            s(&b),
        ],
    );
    // Point a at b: a loop.
    ok(
        "qemu-img",
        &["rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", s(&a)],
    );
    let out = run(RVMM_IMG, &["io", "-r", "-c", "read 0 512", s(&b)]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("loop"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A device node as backing file.
    let c = d.join("c.qcow2");
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            "/dev/zero",
            "-F",
            "raw",
            s(&c),
            "1M",
        ],
    );
    let out = run(RVMM_IMG, &["io", "-r", "-c", "read 0 512", s(&c)]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
}

#[test]
fn internal_snapshots_survive_our_writes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = d.join("s.qcow2");
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4k",
            s(&img),
            "4M",
        ],
    );
    ok("qemu-io", &["-c", "write -P 1 0 1M", s(&img)]);
    ok("qemu-img", &["snapshot", "-c", "s1", s(&img)]);
    // Our writes must copy the shared clusters.
    ok(
        RVMM_IMG,
        &[
            "io",
            "-c",
            "write -P 2 4k 8k",
            "-c",
            "write -P 3 512k 1M",
            "-c",
            "discard 0 4k",
            s(&img),
        ],
    );
    assert_eq!(
        qemu_check_code(&img),
        0,
        "{}",
        ok("qemu-img", &["check", s(&img)])
    );
    let snap_raw = d.join("snap.raw");
    ok(
        "qemu-img",
        &[
            "convert",
            "-l",
            "snapshot.name=s1",
            "-O",
            "raw",
            s(&img),
            s(&snap_raw),
        ],
    );
    let v = std::fs::read(&snap_raw).unwrap();
    assert!(v[..MIB as usize].iter().all(|&x| x == 1) && v[MIB as usize..].iter().all(|&x| x == 0));
    // Our snapshot create, listed and applied by qemu.
    ok(RVMM_IMG, &["snapshot", "-c", "ours", s(&img)]);
    let list = ok("qemu-img", &["snapshot", "-l", s(&img)]);
    assert!(list.contains("ours") && list.contains("s1"), "{list}");
    assert_eq!(qemu_check_code(&img), 0);
    ok("qemu-io", &["-c", "write -P 9 0 2M", s(&img)]);
    ok(RVMM_IMG, &["snapshot", "-a", "ours", s(&img)]);
    ok(
        "qemu-io",
        &[
            "-c",
            "read -P 0 0 4k",
            "-c",
            "read -P 2 4k 8k",
            "-c",
            "read -P 3 512k 1M",
            s(&img),
        ],
    );
    ok(RVMM_IMG, &["snapshot", "-d", "s1", s(&img)]);
    assert_eq!(
        qemu_check_code(&img),
        0,
        "{}",
        ok("qemu-img", &["check", s(&img)])
    );
    let list = ok(RVMM_IMG, &["snapshot", "-l", s(&img)]);
    assert!(list.contains("ours") && !list.contains("s1"), "{list}");
}

#[test]
fn dirty_images_are_read_refused_for_writes_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.qcow2");
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "lazy_refcounts=on",
            s(&img),
            "8M",
        ],
    );
    // qemu-io abort leaves the image dirty with stale refcounts.
    let _ = run(
        "qemu-io",
        &["-c", "write -P 4 0 2M", "-c", "abort", s(&img)],
    );
    let info: serde_json::Value =
        serde_json::from_str(&ok(RVMM_IMG, &["info", "--output", "json", s(&img)])).unwrap();
    assert_eq!(info["dirty-flag"], true);
    ok(RVMM_IMG, &["io", "-r", "-c", "read -P 4 0 2M", s(&img)]);
    let out = run(RVMM_IMG, &["io", "-c", "write 0 512", s(&img)]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("check -r all"));
    let out = run(RVMM_IMG, &["check", s(&img)]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run(RVMM_IMG, &["check", "-r", "all", s(&img)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        qemu_check_code(&img),
        0,
        "{}",
        ok("qemu-img", &["check", s(&img)])
    );
    ok("qemu-io", &["-c", "read -P 4 0 2M", s(&img)]);
    let info: serde_json::Value =
        serde_json::from_str(&ok("qemu-img", &["info", "--output=json", s(&img)])).unwrap();
    assert_eq!(info["dirty-flag"], false);
    ok(RVMM_IMG, &["io", "-c", "write -P 5 4M 4k", s(&img)]);
    assert_eq!(qemu_check_code(&img), 0);
}

#[test]
fn leaks_give_exit_3_and_are_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("l.qcow2");
    ok("qemu-img", &["create", "-q", "-f", "qcow2", s(&img), "8M"]);
    ok("qemu-io", &["-c", "write -P 4 0 256k", s(&img)]);
    // Extend the file by four clusters and give the last one a refcount nothing explains.
    let h = std::fs::read(&img).unwrap();
    let rt = u64::from_be_bytes(h[48..56].try_into().unwrap());
    let rb = u64::from_be_bytes(h[rt as usize..rt as usize + 8].try_into().unwrap());
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    let clusters = h.len() as u64 / 65536 + 4;
    f.set_len(clusters * 65536).unwrap();
    f.write_all_at(&1u16.to_be_bytes(), rb + (clusters - 1) * 2)
        .unwrap();
    drop(f);
    assert_eq!(qemu_check_code(&img), 3);
    let out = run(RVMM_IMG, &["check", "--output", "json", s(&img)]);
    assert_eq!(out.status.code(), Some(3));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["leaks"], 1);
    assert_eq!(j["corruptions"], 0);
    let out = run(RVMM_IMG, &["check", "-r", "leaks", s(&img)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(qemu_check_code(&img), 0);
}

#[test]
fn refuses_unknown_features_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("u.qcow2");
    ok("qemu-img", &["create", "-q", "-f", "qcow2", s(&img), "1M"]);
    let mut h = std::fs::read(&img).unwrap();
    h[72 + 7] |= 0x80; // incompatible bit 7
    std::fs::write(&img, &h).unwrap();
    let out = run(RVMM_IMG, &["info", s(&img)]);
    assert_ne!(out.status.code(), Some(0));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("incompatible feature") && e.contains("bit 7"),
        "{e}"
    );
    let e2 = dir.path().join("e.qcow2");
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "extended_l2=on",
            s(&e2),
            "1M",
        ],
    );
    // Extended L2 entries are supported now (tests/img_extended_l2.rs): the image opens.
    ok(RVMM_IMG, &["io", "-r", "-c", "read 0 512", s(&e2)]);
}

#[test]
fn info_json_matches_qemu_img() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("i.qcow2");
    let base = dir.path().join("b.raw");
    std::fs::write(&base, vec![0u8; MIB as usize]).unwrap();
    ok(
        RVMM_IMG,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4k,lazy_refcounts=on,refcount_bits=32",
            "-b",
            "b.raw",
            "-F",
            "raw",
            s(&img),
            "3M",
        ],
    );
    let ours: serde_json::Value =
        serde_json::from_str(&ok(RVMM_IMG, &["info", "--output", "json", s(&img)])).unwrap();
    let theirs: serde_json::Value =
        serde_json::from_str(&ok("qemu-img", &["info", "--output=json", s(&img)])).unwrap();
    for k in [
        "virtual-size",
        "cluster-size",
        "format",
        "backing-filename",
        "backing-filename-format",
        "dirty-flag",
        "format-specific",
    ] {
        assert_eq!(ours[k], theirs[k], "key {k}");
    }
    let human = ok(RVMM_IMG, &["info", s(&img)]);
    assert!(
        human.contains("virtual size: 3 MiB (3145728 bytes)"),
        "{human}"
    );
    assert!(human.contains("backing file: b.raw"), "{human}");
    // compare: equal, different and strict size mismatch.
    let a = dir.path().join("a.raw");
    std::fs::write(&a, vec![0u8; 3 * MIB as usize]).unwrap();
    assert_eq!(
        run(RVMM_IMG, &["compare", s(&img), s(&a)]).status.code(),
        Some(0)
    );
    ok(RVMM_IMG, &["io", "-c", "write -P 1 2M 1", s(&img)]);
    let out = run(RVMM_IMG, &["compare", s(&img), s(&a)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Content mismatch at offset 2097152!"));
    let short = dir.path().join("short.raw");
    std::fs::write(&short, vec![0u8; MIB as usize]).unwrap();
    assert_eq!(
        run(RVMM_IMG, &["compare", "-s", s(&a), s(&short)])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        run(RVMM_IMG, &["compare", s(&a), s(&short)]).status.code(),
        Some(0)
    );
}

#[test]
fn resize_grow_and_shrink() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("z.qcow2");
    ok(
        RVMM_IMG,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=512",
            s(&img),
            "1M",
        ],
    );
    ok(RVMM_IMG, &["io", "-c", "write -P 1 0 1M", s(&img)]);
    // 512-byte clusters: 64 entries per L2, so growing to 64M needs a larger L1 table.
    ok(RVMM_IMG, &["resize", s(&img), "+63M"]);
    ok(RVMM_IMG, &["io", "-c", "write -P 2 60M 64k", s(&img)]);
    assert_eq!(
        qemu_check_code(&img),
        0,
        "{}",
        ok("qemu-img", &["check", s(&img)])
    );
    ok(
        "qemu-io",
        &[
            "-c",
            "read -P 1 0 1M",
            "-c",
            "read -P 2 60M 64k",
            "-c",
            "read -P 0 1M 1M",
            s(&img),
        ],
    );
    assert_ne!(
        run(RVMM_IMG, &["resize", s(&img), "512k"]).status.code(),
        Some(0)
    );
    ok(RVMM_IMG, &["resize", "--shrink", s(&img), "512k"]);
    let info: serde_json::Value =
        serde_json::from_str(&ok("qemu-img", &["info", "--output=json", s(&img)])).unwrap();
    assert_eq!(info["virtual-size"], 512 * 1024);
    assert_eq!(
        qemu_check_code(&img),
        0,
        "{}",
        ok("qemu-img", &["check", s(&img)])
    );
    ok("qemu-io", &["-c", "read -P 1 0 512k", s(&img)]);
}

#[test]
fn convert_across_cluster_sizes_and_into_existing_targets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src.qcow2");
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=4k",
            s(&src),
            "8M",
        ],
    );
    ok(
        "qemu-io",
        &[
            "-c",
            "write -P 1 0 4k",
            "-c",
            "write -P 2 1052672 8k",
            "-c",
            "write -P 3 7M 64k",
            s(&src),
        ],
    );
    // Sparse 4k-cluster source into 64k compressed clusters.
    let dst = d.join("dst.qcow2");
    ok(
        RVMM_IMG,
        &[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=64k",
            s(&src),
            s(&dst),
        ],
    );
    ok("qemu-img", &["compare", s(&src), s(&dst)]);
    assert_eq!(qemu_check_code(&dst), 0);
    // -n into an existing raw file full of 0xff: holes must become zeroes.
    let raw = d.join("existing.raw");
    std::fs::write(&raw, vec![0xffu8; 8 * MIB as usize]).unwrap();
    ok(RVMM_IMG, &["convert", "-n", "-O", "raw", s(&src), s(&raw)]);
    ok("qemu-img", &["compare", "-F", "raw", s(&src), s(&raw)]);
    // -p draws a progress bar and still converts.
    let p = d.join("p.raw");
    ok(RVMM_IMG, &["convert", "-p", "-O", "raw", s(&src), s(&p)]);
    ok("qemu-img", &["compare", "-F", "raw", s(&src), s(&p)]);
}
