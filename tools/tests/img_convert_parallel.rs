//! `rvmm-img convert` with parallel workers (`-m`): the same result as one worker, whatever
//! the source holds (holes, zero clusters, compressed clusters, a short backing file), checked
//! with `qemu-img compare` and `qemu-img check`; in-order writes give byte-identical qcow2
//! files; a failing worker stops the copy with an error naming the offset.

mod img_common;

use img_common::{ok, run, s, MIB, RVMM_IMG};
use std::path::Path;

/// A 40 MiB qcow2 over a 24 MiB qcow2 backing file: data in many 1 MiB stripes (aligned and
/// not), zero clusters over backing data, compressed clusters, discarded ranges, and a tail
/// beyond the backing file's end.
fn source(d: &Path) -> std::path::PathBuf {
    let base = d.join("base.qcow2");
    let top = d.join("top.qcow2");
    ok(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", s(&base), "24M"],
    );
    ok(
        "qemu-io",
        &[
            "-c",
            "write -P 0x11 0 24M",
            "-c",
            "write -P 0x12 3M 100k",
            "-c",
            "write -z 10M 2M",
            s(&base),
        ],
    );
    ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            s(&top),
            "40M",
        ],
    );
    let mut cmds = vec![
        "write -P 0x21 0 64k".to_string(),
        "write -P 0x22 1000000 300000".into(),
        "write -z 5M 3M".into(),
        "write -P 0x23 30M 4M".into(),
        "write -P 0x24 39M 1M".into(),
        "discard 16M 1M".into(),
    ];
    for i in 0..24u64 {
        cmds.push(format!(
            "write -c -P {} {} 64k",
            0x40 + i,
            20 * MIB + i * 65536
        ));
    }
    for i in 0..8u64 {
        cmds.push(format!(
            "write -P {} {} 4k",
            0x60 + i,
            25 * MIB + i * 131072 + 512
        ));
    }
    let mut args: Vec<&str> = Vec::new();
    for c in &cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(s(&top));
    ok("qemu-io", &args);
    top
}

fn convert(m: &str, extra: &[&str], src: &Path, dst: &Path) {
    let mut args = vec!["convert", "-m", m];
    args.extend_from_slice(extra);
    args.push(s(src));
    args.push(s(dst));
    ok(RVMM_IMG, &args);
}

#[test]
fn parallel_convert_matches_one_worker_for_every_target_kind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = source(d);
    let cases: &[(&str, &[&str])] = &[
        ("raw", &["-O", "raw"]),
        ("qcow2", &["-O", "qcow2"]),
        ("qcow2-W", &["-O", "qcow2", "-W"]),
        ("qcow2-c", &["-O", "qcow2", "-c"]),
        ("qcow2-4k", &["-O", "qcow2", "-o", "cluster_size=4k"]),
    ];
    for (name, flags) in cases {
        let mut outs = Vec::new();
        for m in ["1", "8", "16"] {
            let out = d.join(format!("out-{name}-m{m}"));
            convert(m, flags, &src, &out);
            ok("qemu-img", &["compare", s(&src), s(&out)]);
            if *name != "raw" {
                let c = run("qemu-img", &["check", s(&out)]);
                assert_eq!(
                    c.status.code(),
                    Some(0),
                    "{name} -m {m}: {}",
                    String::from_utf8_lossy(&c.stdout)
                );
            }
            outs.push(std::fs::read(&out).unwrap());
        }
        // Raw targets and in-order qcow2 writes do not depend on the number of workers:
        // the files are byte-identical (same host layout), not merely equal in content.
        if *name != "qcow2-W" {
            assert!(
                outs.iter().all(|o| *o == outs[0]),
                "{name}: -m 1, 8 and 16 gave different files"
            );
        }
    }
    // Compressed output really is compressed (parallel compression, in-order writes).
    let info = ok(
        "qemu-img",
        &["check", "--output=json", s(&d.join("out-qcow2-c-m8"))],
    );
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert!(v["compressed-clusters"].as_u64().unwrap() > 100, "{v}");
    // -n into an existing raw file full of 0xff: every hole and zero run becomes zeroes.
    for m in ["1", "8"] {
        let raw = d.join(format!("existing-m{m}.raw"));
        std::fs::write(&raw, vec![0xffu8; 40 * MIB as usize]).unwrap();
        convert(m, &["-n", "-O", "raw"], &src, &raw);
        ok("qemu-img", &["compare", "-F", "raw", s(&src), s(&raw)]);
    }
    // -S 0 writes the zeroes too: the same content, no holes in the raw file.
    let full = d.join("full.raw");
    convert("8", &["-S", "0", "-O", "raw"], &src, &full);
    ok("qemu-img", &["compare", "-F", "raw", s(&src), s(&full)]);
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(&full).unwrap();
    assert!(md.blocks() * 512 >= 40 * MIB, "-S 0 left holes");
}

#[test]
fn a_failing_worker_stops_the_copy_and_names_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let img = d.join("bad.qcow2");
    ok("qemu-img", &["create", "-q", "-f", "qcow2", s(&img), "32M"]);
    // qemu compresses only into unallocated clusters: leave 24M.. free.
    ok("qemu-io", &["-c", "write -P 1 0 24M", s(&img)]);
    let before = std::fs::metadata(&img).unwrap().len();
    ok("qemu-io", &["-c", "write -c -P 2 24M 64k", s(&img)]);
    let after = std::fs::metadata(&img).unwrap().len();
    assert!(after > before, "the compressed cluster was appended");
    // Garbage over the compressed payload: inflating cluster 24M fails.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(&vec![0xffu8; (after - before) as usize], before)
            .unwrap();
    }
    for m in ["1", "8"] {
        for fmt in ["raw", "qcow2"] {
            let out = d.join(format!("out-{m}.{fmt}"));
            let r = run(RVMM_IMG, &["convert", "-m", m, "-O", fmt, s(&img), s(&out)]);
            let err = String::from_utf8_lossy(&r.stderr);
            assert_eq!(r.status.code(), Some(1), "-m {m} -O {fmt}: {err}");
            assert!(
                err.contains(&format!("offset {}", 24 * MIB)),
                "-m {m} -O {fmt}: {err}"
            );
        }
    }
    // qemu-img's limits and exclusions.
    let raw = d.join("x.raw");
    for bad in [&["-m", "0"][..], &["-m", "17"], &["-W", "-c"]] {
        let mut args = vec!["convert"];
        args.extend_from_slice(bad);
        args.extend_from_slice(&["-O", "qcow2", s(&img), s(&raw)]);
        let r = run(RVMM_IMG, &args);
        assert_ne!(r.status.code(), Some(0), "{bad:?} was accepted");
    }
}
