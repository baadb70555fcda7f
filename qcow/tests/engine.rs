//! Engine tests on temporary files: create, write, read back, reopen, check.

use qcow::{create, BlockBackend, CreateOptions, OpenOptions, Qcow2, Repair};

fn rw() -> OpenOptions {
    OpenOptions::default()
}

#[test]
fn create_write_reopen_check_all_refcount_widths() {
    let dir = tempfile::tempdir().unwrap();
    for (cs, bits) in [
        (512u64, 1u32),
        (4096, 16),
        (65536, 64),
        (65536, 2),
        (2 << 20, 16),
    ] {
        let p = dir.path().join(format!("t-{cs}-{bits}.qcow2"));
        create(
            &p,
            &CreateOptions {
                size: Some(8 << 20),
                cluster_size: cs,
                refcount_bits: bits,
                ..Default::default()
            },
        )
        .unwrap();
        let mut shadow = vec![0u8; 8 << 20];
        {
            let q = Qcow2::open(&p, &rw()).unwrap();
            let mut x = 12345u64;
            for i in 0..200u64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let off = x % (8 << 20);
                let len = ((x >> 20) % 9000 + 1).min((8 << 20) - off);
                let buf: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
                q.write_at(off, &buf).unwrap();
                shadow[off as usize..(off + len) as usize].copy_from_slice(&buf);
                if i % 50 == 0 {
                    q.write_zeroes(off & !(cs - 1), cs.min((8 << 20) - (off & !(cs - 1))))
                        .unwrap();
                    let z = (off & !(cs - 1)) as usize;
                    let ze = (z + cs as usize).min(8 << 20);
                    shadow[z..ze].fill(0);
                }
            }
            q.flush().unwrap();
            let mut got = vec![0u8; 8 << 20];
            q.read_at(0, &mut got).unwrap();
            assert!(got == shadow, "cs {cs} bits {bits}: readback differs");
        }
        let q = Qcow2::open(&p, &rw()).unwrap();
        let mut got = vec![0u8; 8 << 20];
        q.read_at(0, &mut got).unwrap();
        assert!(got == shadow, "cs {cs} bits {bits}: differs after reopen");
        let r = q.check(None).unwrap();
        assert_eq!(r.corruptions, 0, "cs {cs} bits {bits}: {:?}", r.messages);
        assert_eq!(r.leaks, 0, "cs {cs} bits {bits}: {:?}", r.messages);
        let _ = Repair::Leaks;
        drop(q);
        let out = std::process::Command::new("qemu-img")
            .args(["check", "--output=json"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "qemu-img check {cs} {bits}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let out = std::process::Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&p)
            .arg(dir.path().join("out.raw"))
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(
            std::fs::read(dir.path().join("out.raw")).unwrap() == shadow,
            "qemu reads differ {cs} {bits}"
        );
    }
}
