//! Benchmark: `rvmm-vhost blk` vs `qemu-storage-daemon --export type=vhost-user-blk`, the same
//! Debian guest under QEMU TCG doing O_DIRECT dd runs on the same kind of qcow2 image; prints
//! both figures and their ratio. Not a test (no timed assertions): run it with
//!
//! ```text
//! cargo test --release -p tools --test vhost_blk_bench -- --ignored --nocapture
//! ```

mod vhost_blk_common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use vhost_blk_common::{assets, qemu_vhost_blk, run_ok, wait_socket, Proc, Scratch};

/// (name, dd arguments, passes, bytes moved per pass). Enough passes that each run takes
/// about a second or more: the guest clock (/proc/uptime) ticks in 10 ms steps.
const WORKLOADS: &[(&str, &str, u32, u64)] = &[
    (
        "seq-write-1M",
        "if=/dev/zero of=/dev/vda bs=1M count=96 oflag=direct",
        12,
        96 << 20,
    ),
    (
        "seq-read-1M",
        "if=/dev/vda of=/dev/null bs=1M count=96 iflag=direct",
        12,
        96 << 20,
    ),
    (
        "write-4K",
        "if=/dev/zero of=/dev/vda bs=4k count=20000 oflag=direct",
        1,
        20000 * 4096,
    ),
    (
        "read-4K",
        "if=/dev/vda of=/dev/null bs=4k count=20000 iflag=direct",
        1,
        20000 * 4096,
    ),
];
const ROUNDS: usize = 3;

fn guest_script() -> String {
    let mut s = String::from("t() { cut -d' ' -f1 /proc/uptime; }\n");
    for round in 0..ROUNDS {
        for (name, args, passes, _) in WORKLOADS {
            s += &format!(
                "a=$(t); for p in $(seq {passes}); do dd {args} 2>/dev/null; done; b=$(t); \
                 echo \"BENCH {name} {round} $a $b\"\n"
            );
        }
    }
    s
}

/// Best (shortest) seconds per workload from the guest's BENCH lines.
fn parse(log: &str) -> Vec<f64> {
    WORKLOADS
        .iter()
        .map(|(name, _, _, _)| {
            log.lines()
                .filter_map(|l| l.strip_prefix("BENCH "))
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.len() == 4 && f[0] == *name).then(|| {
                        let a: f64 = f[2].parse().unwrap_or(0.0);
                        let b: f64 = f[3].parse().unwrap_or(0.0);
                        (b - a).max(0.01)
                    })
                })
                .fold(f64::INFINITY, f64::min)
        })
        .collect()
}

fn run(kernel: &Path, initrd: &Path, s: &Scratch, tag: &str, backend: &mut Command) -> Vec<f64> {
    let disk = s.path(&format!("{tag}.qcow2"));
    run_ok(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("128M"),
    );
    let sock = s.path(&format!("{tag}.sock"));
    let disk_s = disk.display().to_string();
    let sock_s = sock.display().to_string();
    let args: Vec<String> = backend
        .get_args()
        .map(|a| {
            a.to_string_lossy()
                .replace("@DISK@", &disk_s)
                .replace("@SOCK@", &sock_s)
        })
        .collect();
    let mut cmd = Command::new(backend.get_program());
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
    let mut b = Proc(cmd.spawn().expect("start the backend"));
    wait_socket(&sock, &mut b);
    let serial = s.path(&format!("{tag}.log"));
    let mut q = qemu_vhost_blk(kernel, initrd, &sock, &serial);
    let st = q.wait_timeout(Duration::from_secs(600));
    let log = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(
        st.is_some() && log.contains("RVMM-TEST-EXIT=0"),
        "{tag} run failed:\n{log}"
    );
    parse(&log)
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn rvmm_vhost_blk_vs_qemu_storage_daemon() {
    let s = Scratch::new("vhost-blk-bench");
    std::fs::write(s.path("bench.sh"), guest_script()).unwrap();
    let initrd = s.path("initrd.gz");
    let kernel = assets(&s.path("bench.sh"), &initrd);

    let mut ours = Command::new(env!("CARGO_BIN_EXE_rvmm-vhost"));
    ours.args([
        "blk",
        "--socket",
        "@SOCK@",
        "--disk",
        "@DISK@,format=qcow2,cache=writeback",
    ]);
    let mut qsd = Command::new("qemu-storage-daemon");
    qsd.args([
        "--blockdev",
        "driver=file,node-name=f,filename=@DISK@,cache.direct=off",
        "--blockdev",
        "driver=qcow2,node-name=d,file=f",
        "--export",
        "type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=@SOCK@,writable=on",
    ]);
    let r = run(&kernel, &initrd, &s, "rvmm", &mut ours);
    let q = run(&kernel, &initrd, &s, "qsd", &mut qsd);
    println!(
        "\nvhost-user-blk under QEMU TCG, qcow2 128M, best of {ROUNDS} (MB/s; higher is better)"
    );
    println!(
        "{:<14} {:>12} {:>22} {:>8}",
        "workload", "rvmm-vhost", "qemu-storage-daemon", "ratio"
    );
    for (i, (name, _, passes, bytes)) in WORKLOADS.iter().enumerate() {
        let mb = f64::from(*passes) * *bytes as f64 / 1e6;
        let (a, b) = (mb / r[i], mb / q[i]);
        println!("{name:<14} {a:>12.1} {b:>22.1} {:>8.2}", a / b);
    }
}
