//! Crash consistency: SIGKILL `rvmm-img io` at random points of a write workload, then
//! `qemu-img check` must report no corruption (leaks are allowed) and every write before the
//! last completed flush must read back.
//!
//! `RVMM_CRASH_RUNS=N` sets the number of kills (default 8; the long mode uses 200 or more).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RVMM_IMG: &str = env!("CARGO_BIN_EXE_rvmm-img");
const SIZE: u64 = 32 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Region `i` of the workload: disjoint, unaligned, up to three clusters long.
fn region(i: u64) -> (u64, u64) {
    let slot = SIZE / 256;
    (
        i * slot + (i * 977) % 4096,
        1000 + (i * 7919) % (slot - 8192),
    )
}

/// A qemu-io command and, for writes, the (offset, length, pattern) it leaves behind.
type Step = (String, Option<(u64, u64, u8)>);

fn workload(rng: &mut Rng) -> Vec<Step> {
    let mut order: Vec<u64> = (0..256).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let mut v = Vec::new();
    for (n, &i) in order.iter().enumerate() {
        let (off, len) = region(i);
        let pat = (i % 250) as u8 + 1;
        v.push((format!("write -P {pat} {off} {len}"), Some((off, len, pat))));
        if n % 16 == 15 {
            v.push(("flush".to_string(), None));
        }
        if n % 37 == 0 {
            v.push((
                format!("write -z {} {}", off, len / 2),
                Some((off, len / 2, 0)),
            ));
        }
    }
    v
}

fn one_run(dir: &Path, run: u64, rng: &mut Rng, max_delay: Duration) {
    let img = dir.join(format!("crash-{run}.qcow2"));
    let cs = ["4k", "64k", "512"][(run % 3) as usize];
    let st = Command::new(RVMM_IMG)
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("cluster_size={cs}"),
            s(&img),
            &SIZE.to_string(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let ops = workload(rng);
    let mut cmd = Command::new(RVMM_IMG);
    cmd.arg("io");
    for (c, _) in &ops {
        cmd.args(["-c", c]);
    }
    cmd.arg(&img).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let delay = Duration::from_micros(rng.next() % max_delay.as_micros().max(1) as u64);
    std::thread::sleep(delay);
    let _ = child.kill(); // SIGKILL
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = child.wait();
    let check = Command::new("qemu-img")
        .args(["check", s(&img)])
        .output()
        .unwrap();
    let code = check.status.code();
    assert!(
        code == Some(0) || code == Some(3),
        "run {run} (cs {cs}, killed after {delay:?}): qemu-img check exit {code:?}\n{}",
        String::from_utf8_lossy(&check.stdout)
    );
    // Commands run in order, so a flush followed by a completed write has completed too: every
    // write before the last such flush must be durable. (Later writes may be lost with the
    // unflushed metadata cache, as with QEMU.)
    let done = out.lines().filter(|l| l.starts_with("wrote ")).count();
    let mut writes_seen = 0;
    let mut durable = 0;
    for (_, w) in &ops {
        match w {
            Some(_) => writes_seen += 1,
            None if writes_seen < done => durable = writes_seen,
            None => {}
        }
    }
    let mut expect = vec![None; 256];
    for (n, (off, len, pat)) in ops.iter().filter_map(|(_, w)| *w).enumerate() {
        let i = (off / (SIZE / 256)) as usize;
        if n < durable {
            expect[i] = Some((off, len, pat));
        } else {
            // Touched after the last completed flush (possibly in flight): either state is fine.
            expect[i] = None;
        }
    }
    let mut cmds = Vec::new();
    for (off, len, pat) in expect.into_iter().flatten() {
        cmds.push("-c".to_string());
        cmds.push(format!("read -q -P {pat} {off} {len}"));
    }
    if !cmds.is_empty() {
        let mut args = vec!["-r".to_string()];
        args.extend(cmds);
        args.push(s(&img).to_string());
        let o = Command::new("qemu-io").args(&args).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        if !o.status.success() || text.contains("verification failed") {
            let keep = dir.join(format!("failed-{run}"));
            std::fs::rename(&img, &keep).unwrap();
            std::fs::write(keep.with_extension("out"), &out).unwrap();
            panic!(
                "run {run} (cs {cs}, {done} writes done, {durable} durable): a write before the \
                 last completed flush was lost (image kept at {}):\n{text}",
                keep.display()
            );
        }
    }
    std::fs::remove_file(&img).unwrap();
}

#[test]
fn sigkill_during_writes_leaves_no_corruption() {
    let runs: u64 = std::env::var("RVMM_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let tmp = tempfile::tempdir().unwrap();
    let keep = std::env::var_os("RVMM_CRASH_KEEP").is_some();
    let dir_path = if keep {
        tmp.keep()
    } else {
        tmp.path().to_path_buf()
    };
    let dir = &dir_path;
    // Calibrate: how long does the whole workload take uninterrupted?
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let img = dir.join("calib.qcow2");
    assert!(Command::new(RVMM_IMG)
        .args(["create", "-q", "-f", "qcow2", s(&img), &SIZE.to_string()])
        .status()
        .unwrap()
        .success());
    let ops = workload(&mut rng);
    let t = Instant::now();
    let mut cmd = Command::new(RVMM_IMG);
    cmd.arg("io");
    for (c, _) in &ops {
        cmd.args(["-c", c]);
    }
    assert!(cmd
        .arg(&img)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    let full = t.elapsed();
    for run in 0..runs {
        one_run(dir, run, &mut rng, full);
    }
}
