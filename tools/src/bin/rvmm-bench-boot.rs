//! `rvmm-bench-boot`: start-up benchmark of rvmm against `qemu-system-x86_64 -M microvm -accel
//! kvm` booting the same kernel. For each VMM it measures, over several runs (median):
//! process start → first guest instruction (the first byte the guest writes to COM1, which a
//! built-in PVH guest does as its first instructions), process start → a guest marker (a string
//! in the serial output of `--guest`), process start → exit, and the VMM's resident memory while
//! the guest idles. Results are printed side by side with rvmm/QEMU ratios.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

/// Compare rvmm's start-up time and memory with QEMU microvm's.
#[derive(Parser)]
#[command(name = "rvmm-bench-boot", version, about)]
struct Args {
    /// rvmm binary (default: next to this one).
    #[arg(long)]
    rvmm: Option<PathBuf>,
    /// QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// Guest for the marker measurement (bzImage with a real-mode setup, or PVH ELF), e.g. the
    /// demo guest built by the rvmm-tests crate. Without it only the built-in guest is timed.
    #[arg(long)]
    guest: Option<PathBuf>,
    /// Serial output that marks "guest ready" in --guest's output.
    #[arg(long, default_value = "demo: ok")]
    marker: String,
    /// Runs per measurement (the median is reported).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Guest RAM for both VMMs, in MiB.
    #[arg(long, default_value_t = 256)]
    memory_mib: u64,
}

/// A PVH ELF guest whose first instructions write 'X' to COM1, then either exit through the
/// debug-exit port (`spin = false`) or spin forever.
fn builtin_guest(spin: bool) -> Vec<u8> {
    const LOAD: u32 = 0x10_0000;
    // mov dx,0x3f8; mov al,'X'; out dx,al
    let mut code = vec![0x66, 0xba, 0xf8, 0x03, 0xb0, b'X', 0xee];
    if spin {
        code.extend_from_slice(&[0xeb, 0xfe]); // jmp $
    } else {
        // mov al,0; out 0xf4,al; hlt; jmp $-1
        code.extend_from_slice(&[0xb0, 0x00, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd]);
    }
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes());
    note.extend_from_slice(&4u32.to_le_bytes());
    note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&LOAD.to_le_bytes());
    let code_off = 64 + 2 * 56u64;
    let note_off = code_off + code.len() as u64;
    let mut b = vec![0u8; 64];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[6] = 1;
    b[0x10..0x12].copy_from_slice(&2u16.to_le_bytes());
    b[0x12..0x14].copy_from_slice(&62u16.to_le_bytes());
    b[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
    b[0x18..0x20].copy_from_slice(&u64::from(LOAD).to_le_bytes());
    b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
    b[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
    b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
    b[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
    let ph = |kind: u32, flags: u32, off: u64, addr: u64, size: u64| {
        let mut p = vec![0u8; 56];
        p[0..4].copy_from_slice(&kind.to_le_bytes());
        p[4..8].copy_from_slice(&flags.to_le_bytes());
        p[8..16].copy_from_slice(&off.to_le_bytes());
        p[16..24].copy_from_slice(&addr.to_le_bytes());
        p[24..32].copy_from_slice(&addr.to_le_bytes());
        p[32..40].copy_from_slice(&size.to_le_bytes());
        p[40..48].copy_from_slice(&size.to_le_bytes());
        p[48..56].copy_from_slice(&4u64.to_le_bytes());
        p
    };
    b.extend(ph(1, 5, code_off, u64::from(LOAD), code.len() as u64));
    b.extend(ph(4, 4, note_off, 0, note.len() as u64));
    b.extend_from_slice(&code);
    b.extend_from_slice(&note);
    b
}

#[derive(Clone, Copy, PartialEq)]
enum Vmm {
    Rvmm,
    Qemu,
}

struct Bench {
    rvmm: PathBuf,
    qemu: PathBuf,
    memory_mib: u64,
}

impl Bench {
    fn command(&self, vmm: Vmm, kernel: &Path) -> Command {
        match vmm {
            Vmm::Rvmm => {
                let mut c = Command::new(&self.rvmm);
                c.arg("--kernel").arg(kernel).args([
                    "--memory",
                    &format!("{}M", self.memory_mib),
                    "--serial",
                    "stdio",
                ]);
                c
            }
            Vmm::Qemu => {
                let mut c = Command::new(&self.qemu);
                c.args([
                    "-M",
                    "microvm,isa-serial=on,rtc=on",
                    "-accel",
                    "kvm",
                    "-cpu",
                    "host",
                ])
                .args(["-m", &format!("{}M", self.memory_mib)])
                .args([
                    "-nodefaults",
                    "-no-user-config",
                    "-nographic",
                    "-serial",
                    "stdio",
                ])
                .args([
                    "-monitor",
                    "none",
                    "-device",
                    "isa-debug-exit,iobase=0xf4,iosize=0x01",
                ])
                .arg("-kernel")
                .arg(kernel);
                c
            }
        }
    }

    /// Start the VMM with its serial output (stdout) piped to us.
    fn spawn(&self, vmm: Vmm, kernel: &Path) -> Result<(Child, ChildStdout)> {
        let mut child = self
            .command(vmm, kernel)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the VMM")?;
        let out = child.stdout.take().context("no stdout")?;
        Ok((child, out))
    }

    /// Start the VMM; returns the child, the time of the first serial byte, the time the
    /// marker appeared (if asked) and the total output, reading until exit or `until` matches.
    fn run(&self, vmm: Vmm, kernel: &Path, marker: Option<&str>) -> Result<Run> {
        let t0 = Instant::now();
        let (mut child, mut out) = self.spawn(vmm, kernel)?;
        let mut first = None;
        let mut marked = None;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = out.read(&mut buf).context("reading guest serial output")?;
            if n == 0 {
                break;
            }
            first.get_or_insert_with(|| t0.elapsed());
            seen.extend_from_slice(&buf[..n]);
            if let Some(m) = marker {
                if marked.is_none() && seen.windows(m.len()).any(|w| w == m.as_bytes()) {
                    marked = Some(t0.elapsed());
                }
            }
        }
        let status = wait_with_timeout(&mut child, Duration::from_secs(60))?;
        Ok(Run {
            first,
            marked,
            exit: t0.elapsed(),
            status,
        })
    }

    /// Resident memory of the VMM while the built-in spinning guest runs.
    fn rss_kib(&self, vmm: Vmm, kernel: &Path) -> Result<u64> {
        let (mut child, mut out) = self.spawn(vmm, kernel)?;
        let mut b = [0u8; 1];
        let r = out.read(&mut b);
        // Let the VMM settle after the guest's first output.
        std::thread::sleep(Duration::from_millis(300));
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()));
        let _ = child.kill();
        let _ = child.wait();
        r.context("the guest produced no output")?;
        let status = status.context("cannot read the VMM's /proc status")?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .context("no VmRSS line")
    }
}

struct Run {
    first: Option<Duration>,
    marked: Option<Duration>,
    exit: Duration,
    status: Option<i32>,
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> Result<Option<i32>> {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s.code());
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the VMM did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn row(name: &str, unit: &str, ours: Option<f64>, theirs: Option<f64>) {
    let f = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1} {unit}"));
    let ratio = match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".into(),
    };
    println!("{name:<34} {:>14} {:>14} {:>10}", f(ours), f(theirs), ratio);
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rvmm = match args.rvmm {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("no directory for this binary")?
            .join("rvmm"),
    };
    if !rvmm.exists() {
        bail!(
            "{} not found: build it (cargo build -p vmm) or pass --rvmm",
            rvmm.display()
        );
    }
    let bench = Bench {
        rvmm,
        qemu: args.qemu,
        memory_mib: args.memory_mib,
    };
    let dir = std::env::temp_dir().join(format!("rvmm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let exit_guest = dir.join("first-insn.elf");
    let spin_guest = dir.join("spin.elf");
    std::fs::write(&exit_guest, builtin_guest(false))?;
    std::fs::write(&spin_guest, builtin_guest(true))?;
    let runs = args.runs.max(1);

    println!(
        "rvmm-bench-boot: {runs} runs each, median; guest RAM {} MiB",
        args.memory_mib
    );
    println!(
        "{:<34} {:>14} {:>14} {:>10}",
        "metric", "rvmm", "qemu microvm", "rvmm/qemu"
    );
    let mut results = Vec::new();
    for vmm in [Vmm::Rvmm, Vmm::Qemu] {
        let mut first = Vec::new();
        let mut exit = Vec::new();
        for _ in 0..runs {
            match bench.run(vmm, &exit_guest, None) {
                Ok(r) => {
                    if let Some(f) = r.first {
                        first.push(ms(f));
                    }
                    exit.push(ms(r.exit));
                    let expect = if vmm == Vmm::Rvmm { 0 } else { 1 };
                    if r.status != Some(expect) {
                        eprintln!("warning: unexpected exit status {:?}", r.status);
                    }
                }
                Err(e) => eprintln!("warning: run failed: {e:#}"),
            }
        }
        let rss = bench
            .rss_kib(vmm, &spin_guest)
            .map_err(|e| eprintln!("warning: {e:#}"))
            .ok();
        let mut marked = Vec::new();
        let mut gexit = Vec::new();
        if let Some(g) = &args.guest {
            for _ in 0..runs {
                match bench.run(vmm, g, Some(&args.marker)) {
                    Ok(r) => {
                        if let Some(m) = r.marked {
                            marked.push(ms(m));
                        }
                        gexit.push(ms(r.exit));
                    }
                    Err(e) => eprintln!("warning: run failed: {e:#}"),
                }
            }
        }
        results.push((
            median(first),
            median(exit),
            rss.map(|k| k as f64 / 1024.0),
            median(marked),
            median(gexit),
        ));
    }
    let (a, b) = (&results[0], &results[1]);
    row("start -> first guest instruction", "ms", a.0, b.0);
    row("start -> exit (built-in guest)", "ms", a.1, b.1);
    row("VMM RSS, idle guest", "MiB", a.2, b.2);
    if let Some(g) = &args.guest {
        println!("guest: {} (marker {:?})", g.display(), args.marker);
        row("start -> guest marker", "ms", a.3, b.3);
        row("start -> exit (guest)", "ms", a.4, b.4);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
