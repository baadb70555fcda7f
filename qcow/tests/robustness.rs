//! Randomised operation sequences against a raw model, fault injection (fail the Nth write or
//! sync, then "crash"), concurrent I/O, and hostile (mutated) images that must never panic.

mod common;

use common::{faulted_writes, FaultedWrites};
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use qcow::{create, BlockBackend, CreateOptions, OpenOptions, Qcow2};

const SIZE: u64 = 2 << 20;

/// Case count: the CI default, or `PROPTEST_CASES` for a long run.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone)]
enum Op {
    Write(u64, u64, u8),
    Zero(u64, u64),
    Discard(u64, u64),
    Compressed(u64, u8),
    Flush,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let range = (0..SIZE).prop_flat_map(|o| (Just(o), 1..=(SIZE - o).min(150_000)));
    prop_oneof![
        4 => (range.clone(), any::<u8>()).prop_map(|((o, l), p)| Op::Write(o, l, p)),
        1 => range.clone().prop_map(|(o, l)| Op::Zero(o, l)),
        1 => range.prop_map(|(o, l)| Op::Discard(o, l)),
        1 => (0..SIZE, any::<u8>()).prop_map(|(o, p)| Op::Compressed(o, p)),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

fn rw() -> OpenOptions {
    OpenOptions::default()
}

fn make(path: &Path, cs: u64, bits: u32, v3: bool, backing: Option<&str>) {
    create(
        path,
        &CreateOptions {
            size: Some(SIZE),
            cluster_size: cs,
            refcount_bits: bits,
            v3,
            backing_file: backing.map(str::to_string),
            backing_format: backing.map(|_| qcow::Format::Raw),
            ..Default::default()
        },
    )
    .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(24), ..ProptestConfig::default() })]

    #[test]
    fn random_ops_match_a_raw_model(
        ops in proptest::collection::vec(op(), 1..40),
        geometry in prop_oneof![Just((512u64, 16u32, true)), Just((4096, 1, true)),
                                Just((65536, 64, true)), Just((4096, 16, false))],
        with_backing in any::<bool>(),
    ) {
        let (cs, bits, v3) = geometry;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.qcow2");
        let mut model: Vec<u8> = (0..SIZE).map(|i| if with_backing { (i % 253) as u8 } else { 0 }).collect();
        if with_backing {
            std::fs::write(dir.path().join("base.raw"), &model).unwrap();
        }
        make(&p, cs, bits, v3, with_backing.then_some("base.raw"));
        let mut q = Qcow2::open(&p, &rw()).unwrap();
        for o in &ops {
            match *o {
                Op::Write(off, len, pat) => {
                    q.write_at(off, &vec![pat; len as usize]).unwrap();
                    model[off as usize..(off + len) as usize].fill(pat);
                }
                Op::Zero(off, len) => {
                    q.write_zeroes(off, len).unwrap();
                    model[off as usize..(off + len) as usize].fill(0);
                }
                Op::Discard(off, len) => {
                    // Discard is a hint: the model takes whatever the image now reads.
                    q.discard(off, len).unwrap();
                    let mut b = vec![0u8; len as usize];
                    q.read_at(off, &mut b).unwrap();
                    let m = &model[off as usize..(off + len) as usize];
                    // Only whole clusters may change, and only to zeroes or backing data.
                    for (i, (&got, &was)) in b.iter().zip(m).enumerate() {
                        let g = off + i as u64;
                        let backing = if with_backing { (g % 253) as u8 } else { 0 };
                        prop_assert!(got == was || got == 0 || got == backing);
                    }
                    model[off as usize..(off + len) as usize].copy_from_slice(&b);
                }
                Op::Compressed(off, pat) => {
                    let off = off / cs * cs;
                    let len = cs.min(SIZE - off);
                    let data: Vec<u8> = (0..len).map(|i| if i % 64 < 8 { pat } else { 0x20 }).collect();
                    q.write_compressed(off, &data).unwrap();
                    model[off as usize..(off + len) as usize].copy_from_slice(&data);
                }
                Op::Flush => q.flush().unwrap(),
                Op::Reopen => {
                    drop(q);
                    q = Qcow2::open(&p, &rw()).unwrap();
                }
            }
        }
        let mut got = vec![0u8; SIZE as usize];
        q.read_at(0, &mut got).unwrap();
        prop_assert!(got == model, "content differs from the model");
        let r = q.check(None).unwrap();
        prop_assert_eq!((r.corruptions, r.leaks), (0, 0), "{:?}", r.messages);
    }
}

/// Non-overlapping regions so that each one holds either its old or its new pattern.
fn region(i: u64) -> (u64, u64) {
    (i * 70_000 + (i % 3) * 111, 20_000 + (i % 5) * 9000)
}

fn fault_run(cs: u64, bits: u32, fail_after: i64, lazy: bool) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.qcow2");
    create(
        &p,
        &CreateOptions {
            size: Some(SIZE),
            cluster_size: cs,
            refcount_bits: bits,
            lazy_refcounts: lazy,
            ..Default::default()
        },
    )
    .unwrap();
    let FaultedWrites { durable, failed } = {
        let q = Qcow2::open(&p, &rw()).unwrap();
        q.faults().fail_after(fail_after);
        faulted_writes(&q, 24, 4, region, |i| i as u8 + 1)
        // Dropping with the fault still armed: nothing more reaches the file (a crash).
    };
    let ro = OpenOptions {
        read_only: true,
        ..Default::default()
    };
    let q = Qcow2::open(&p, &ro).unwrap();
    for &i in &durable {
        let (off, len) = region(i);
        let mut b = vec![0u8; len as usize];
        q.read_at(off, &mut b).unwrap();
        assert!(
            b.iter().all(|&x| x == i as u8 + 1),
            "region {i} lost after a completed flush (fail after {fail_after})"
        );
    }
    let r = q.check(None).unwrap();
    assert_eq!(
        r.corruptions, 0,
        "fail after {fail_after} (cs {cs}, lazy {lazy}): {:?}",
        r.messages
    );
    drop(q);
    if lazy || r.leaks > 0 {
        let q = Qcow2::open_with(
            &p,
            &rw(),
            qcow::qcow2::OpenFlags {
                allow_dirty: true,
                no_backing: false,
            },
        )
        .unwrap();
        q.check(Some(qcow::Repair::All)).unwrap();
        let r = q.check(None).unwrap();
        assert_eq!(
            (r.corruptions, r.leaks),
            (0, 0),
            "after repair: {:?}",
            r.messages
        );
    }
    u64::from(failed)
}

#[test]
fn injected_write_and_sync_failures_never_corrupt() {
    let mut failures = 0;
    for n in (0..90).step_by(3) {
        failures += fault_run(4096, 16, n, false);
    }
    for n in (0..60).step_by(7) {
        failures += fault_run(512, 2, n, false);
        failures += fault_run(65536, 16, n, true);
    }
    // The schedule must actually have hit the engine's writes.
    assert!(
        failures > 20,
        "only {failures} runs saw an injected failure"
    );
}

#[test]
fn concurrent_readers_and_writers_on_distinct_regions() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.qcow2");
    make(&p, 4096, 16, true, None);
    let q: Arc<Qcow2> = Arc::new(Qcow2::open(&p, &rw()).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let q = q.clone();
            std::thread::spawn(move || {
                let base = t * (SIZE / 4);
                for i in 0..200u64 {
                    let off = base + (i * 7919) % (SIZE / 4 - 5000);
                    let pat = (t * 50 + i % 50) as u8;
                    q.write_at(off, &vec![pat; 5000]).unwrap();
                    let mut b = vec![0u8; 5000];
                    q.read_at(off, &mut b).unwrap();
                    assert!(
                        b.iter().all(|&x| x == pat),
                        "thread {t} op {i} read back wrong data"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let r = q.check(None).unwrap();
    assert_eq!((r.corruptions, r.leaks), (0, 0), "{:?}", r.messages);
}

fn seed_image(dir: &Path) -> Vec<u8> {
    let p = dir.join("seed.qcow2");
    make(&p, 512, 16, true, None);
    let q = Qcow2::open(&p, &rw()).unwrap();
    for i in 0..40u64 {
        q.write_at(i * 40_000, &vec![i as u8; 3000]).unwrap();
    }
    q.write_compressed(512 * 1000, &[7u8; 512]).unwrap();
    q.snapshot_create("s").unwrap();
    q.write_at(0, &[9u8; 1000]).unwrap();
    drop(q);
    std::fs::read(&p).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(128), ..ProptestConfig::default() })]

    /// Mutated headers and metadata: open, read everything and check without panicking.
    #[test]
    fn hostile_images_never_panic(
        muts in proptest::collection::vec((0usize..12_000, any::<u8>()), 0..12),
        words in proptest::collection::vec(
            (0usize..1500, prop_oneof![Just(u64::MAX), Just(1u64 << 55), Just(1u64 << 63 | 512),
                                      Just(0u64), any::<u64>()]),
            0..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut img = seed_image(dir.path());
        for (pos, val) in muts {
            let n = img.len();
            img[pos % n] = val;
        }
        // Whole table entries with extreme values (offsets, sizes, counts).
        for (slot, val) in words {
            let pos = (slot * 8) % (img.len() - 8);
            img[pos..pos + 8].copy_from_slice(&val.to_be_bytes());
        }
        let p = dir.path().join("bad.qcow2");
        std::fs::write(&p, &img).unwrap();
        let ro = OpenOptions { read_only: true, ..Default::default() };
        if let Ok(q) = Qcow2::open(&p, &ro) {
            let size = q.size().min(4 << 20);
            let mut buf = vec![0u8; 65536];
            let mut off = 0;
            while off < size {
                let n = (size - off).min(buf.len() as u64) as usize;
                let _ = q.read_at(off, &mut buf[..n]);
                off += n as u64;
            }
            let _ = q.check(None);
        }
        // Writable opens of hostile images must fail cleanly or work.
        if let Ok(q) = Qcow2::open(&p, &rw()) {
            let _ = q.write_at(0, &[1u8; 4096]);
            let _ = q.write_zeroes(8192, 4096);
            let _ = q.flush();
        }
    }
}

/// An extended-L2 image (16 KiB clusters, 512-byte subclusters) with partly written, zeroed and
/// compressed clusters and a snapshot: the metadata the subcluster paths parse.
fn ext_seed_image(dir: &Path) -> Vec<u8> {
    let p = dir.join("ext-seed.qcow2");
    create(
        &p,
        &CreateOptions {
            size: Some(SIZE),
            cluster_size: 16 << 10,
            extended_l2: true,
            ..Default::default()
        },
    )
    .unwrap();
    let q = Qcow2::open(&p, &rw()).unwrap();
    for i in 0..24u64 {
        q.write_at(i * 50_000 + i * 512, &vec![i as u8 + 1; 700])
            .unwrap();
        q.write_zeroes(i * 50_000 + 4096, 1024).unwrap();
    }
    q.write_compressed(1536 << 10, &[7u8; 16 << 10]).unwrap();
    q.snapshot_create("s").unwrap();
    q.write_at(100, &[9u8; 1000]).unwrap();
    drop(q);
    std::fs::read(&p).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    /// Mutated extended-L2 images (bytes and 64-bit words anywhere in the file, so L2 entries
    /// and subcluster bitmaps are hit too): open, read, check and write without panicking.
    #[test]
    fn hostile_extended_l2_images_never_panic(
        muts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..16),
        words in proptest::collection::vec(
            (any::<prop::sample::Index>(),
             prop_oneof![Just(u64::MAX), Just(0xffff_ffffu64), Just(0xffff_ffff_0000_0000u64),
                         Just(1u64 << 55), Just(1u64 << 63 | 16384), Just(0u64), any::<u64>()]),
            0..8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut img = ext_seed_image(dir.path());
        let n = img.len();
        for (pos, val) in muts {
            img[pos.index(n)] = val;
        }
        for (slot, val) in words {
            let pos = slot.index(n / 8 - 1) * 8;
            img[pos..pos + 8].copy_from_slice(&val.to_be_bytes());
        }
        let p = dir.path().join("bad.qcow2");
        std::fs::write(&p, &img).unwrap();
        let ro = OpenOptions { read_only: true, ..Default::default() };
        if let Ok(q) = Qcow2::open(&p, &ro) {
            let size = q.size().min(20 << 20);
            let mut buf = vec![0u8; 65536];
            let mut off = 0;
            while off < size {
                let n = (size - off).min(buf.len() as u64) as usize;
                let _ = q.read_at(off, &mut buf[..n]);
                let _ = q.block_status(off, n as u64);
                off += n as u64;
            }
            let _ = q.check(None);
        }
        if let Ok(q) = Qcow2::open(&p, &rw()) {
            let _ = q.write_at(300, &[1u8; 4096]);
            let _ = q.write_zeroes(50_000, 2048);
            let _ = q.discard(0, 32 << 10);
            let _ = q.flush();
        }
    }
}
