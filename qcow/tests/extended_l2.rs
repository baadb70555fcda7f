//! Engine tests of qcow2 extended L2 entries (subclusters) through the public API.

mod common;

use common::{faulted_writes, FaultedWrites};
use qcow::{create, BlockBackend, CreateOptions, Mapping, OpenOptions, Qcow2};

const CS: u64 = 64 << 10;
const SC: u64 = CS / 32;

fn new_image(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    create(
        &p,
        &CreateOptions {
            size: Some(4 << 20),
            cluster_size: CS,
            extended_l2: true,
            ..Default::default()
        },
    )
    .unwrap();
    p
}

#[test]
fn partial_writes_allocate_whole_clusters_and_owned_clusters_are_written_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let p = new_image(dir.path(), "a.qcow2");
    let q = Qcow2::open(&p, &OpenOptions::default()).unwrap();
    q.write_at(SC + 3, &[0xaa; 100]).unwrap();
    let Mapping::Data { host, copied } = q.mapping(0).unwrap() else {
        panic!("a written cluster is allocated as a whole");
    };
    assert!(copied);
    // The rest of the cluster reads as zeroes, the write as written.
    let mut b = vec![0u8; CS as usize];
    q.read_at(0, &mut b).unwrap();
    assert!(b[..(SC + 3) as usize].iter().all(|&x| x == 0));
    assert!(b[(SC + 3) as usize..(SC + 103) as usize]
        .iter()
        .all(|&x| x == 0xaa));
    assert!(b[(SC + 103) as usize..].iter().all(|&x| x == 0));
    // A second write into the owned, fully allocated cluster does not move it.
    q.write_at(7 * SC, &[0xbb; 10]).unwrap();
    assert_eq!(q.mapping(7 * SC).unwrap(), Mapping::Data { host, copied });
    let e = q.block_status(0, CS).unwrap();
    assert!(e.data && e.len == CS && e.offset == Some(host), "{e:?}");
}

#[test]
fn write_zeroes_sets_zero_subclusters_and_status_splits_at_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = new_image(dir.path(), "z.qcow2");
    let q = Qcow2::open(&p, &OpenOptions::default()).unwrap();
    q.write_at(0, &vec![0x5a; 2 * CS as usize]).unwrap();
    // Whole subclusters 2..5 plus ragged edges either side.
    q.write_zeroes(2 * SC - 10, 3 * SC + 20).unwrap();
    let host = match q.mapping(0).unwrap() {
        Mapping::Data { host, .. } => host,
        m => panic!("{m:?}"),
    };
    // The zeroed whole subclusters keep the host cluster but read as zero.
    assert_eq!(q.mapping(3 * SC).unwrap(), Mapping::Zero { host });
    let e = q.block_status(0, CS).unwrap();
    assert_eq!((e.len, e.data), (2 * SC, true), "{e:?}");
    let e = q.block_status(2 * SC, CS - 2 * SC).unwrap();
    assert_eq!((e.len, e.zero, e.present), (3 * SC, true, true), "{e:?}");
    let e = q.block_status(5 * SC, CS - 5 * SC).unwrap();
    assert_eq!((e.data, e.offset), (true, Some(host + 5 * SC)), "{e:?}");
    let mut b = vec![0u8; CS as usize];
    q.read_at(0, &mut b).unwrap();
    for (i, &x) in b.iter().enumerate() {
        let zero = (2 * SC - 10..5 * SC + 10).contains(&(i as u64));
        assert_eq!(x, if zero { 0 } else { 0x5a }, "byte {i}");
    }
    // Writing into a zero subcluster rebuilds the cluster; the zeroes stay zeroes.
    q.write_at(3 * SC + 1, &[1, 2, 3]).unwrap();
    q.read_at(0, &mut b).unwrap();
    assert_eq!(&b[(3 * SC + 1) as usize..(3 * SC + 4) as usize], &[1, 2, 3]);
    assert_eq!(b[(3 * SC) as usize], 0);
    assert_eq!(b[(2 * SC) as usize], 0);
    assert_eq!(b[(5 * SC + 10) as usize], 0x5a);
    let r = q.check(None).unwrap();
    assert_eq!((r.corruptions, r.leaks), (0, 0), "{:?}", r.messages);
}

/// One crash run: a subcluster-patterned image, then writes with an injected failure after
/// `fail_after` host writes/syncs. Regions flushed before the failure must hold their data,
/// bytes no write touched must keep the first phase's contents, and the metadata must have
/// no corruption (leaks are allowed and repaired).
fn fault_run(cs: u64, fail_after: i64) -> bool {
    let sc = cs / 32;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.qcow2");
    let size = 16 * cs;
    create(
        &p,
        &CreateOptions {
            size: Some(size),
            cluster_size: cs,
            extended_l2: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut model = vec![0u8; size as usize];
    {
        let q = Qcow2::open(&p, &OpenOptions::default()).unwrap();
        for c in 0..16u64 {
            let o = c * cs + (c % 4) * sc + c;
            let l = (c % 5 + 1) * sc;
            q.write_at(o, &vec![c as u8 + 1; l as usize]).unwrap();
            model[o as usize..(o + l) as usize].fill(c as u8 + 1);
            let z = c * cs + 2 * sc;
            q.write_zeroes(z, sc).unwrap();
            model[z as usize..(z + sc) as usize].fill(0);
        }
        q.flush().unwrap();
    }
    let region = |i: u64| (i * cs + 5 * sc + 7 * i, sc + 13 * i);
    let FaultedWrites { durable, failed } = {
        let q = Qcow2::open(&p, &OpenOptions::default()).unwrap();
        q.faults().fail_after(fail_after);
        faulted_writes(&q, 12, 3, region, |i| 0x80 + i as u8)
    };
    let ro = OpenOptions {
        read_only: true,
        ..Default::default()
    };
    let q = Qcow2::open(&p, &ro).unwrap();
    let mut now = vec![0u8; size as usize];
    q.read_at(0, &mut now).unwrap();
    let mut touched = vec![false; size as usize];
    for i in 0..12u64 {
        let (o, l) = region(i);
        touched[o as usize..(o + l) as usize].fill(true);
    }
    for &i in &durable {
        let (o, l) = region(i);
        assert!(
            now[o as usize..(o + l) as usize]
                .iter()
                .all(|&x| x == 0x80 + i as u8),
            "cs {cs} fail after {fail_after}: region {i} lost after a completed flush"
        );
    }
    for (j, (&a, &b)) in now.iter().zip(&model).enumerate() {
        assert!(
            touched[j] || a == b,
            "cs {cs} fail after {fail_after}: untouched byte {j} changed ({b} -> {a})"
        );
    }
    let r = q.check(None).unwrap();
    assert_eq!(
        r.corruptions, 0,
        "cs {cs} fail after {fail_after}: {:?}",
        r.messages
    );
    failed
}

#[test]
fn injected_failures_during_cluster_rebuilds_never_corrupt() {
    let mut failures = 0;
    for cs in [16u64 << 10, 64 << 10] {
        for n in 0..40 {
            failures += u32::from(fault_run(cs, n));
        }
    }
    assert!(
        failures > 20,
        "only {failures} runs saw an injected failure"
    );
}
