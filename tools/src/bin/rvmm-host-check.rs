//! `rvmm-host-check`: can this host run rvmm? Checks CPU virtualization, /dev/kvm, the KVM API
//! and the capabilities rvmm needs, nested or software-assisted KVM, /dev/net/tun, bridging
//! and huge pages. Prints one PASS/WARN/FAIL line per check with a fix hint; exits 1 on FAIL.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

/// Check whether this host can run rvmm virtual machines.
#[derive(Parser)]
#[command(name = "rvmm-host-check", version, about)]
struct Args {
    /// KVM device node to check.
    #[arg(long, default_value = "/dev/kvm")]
    kvm_device: PathBuf,
    /// Root of the proc filesystem (for testing).
    #[arg(long, default_value = "/proc", hide = true)]
    proc_root: PathBuf,
    /// Root of the sys filesystem (for testing).
    #[arg(long, default_value = "/sys", hide = true)]
    sys_root: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug)]
struct Check {
    level: Level,
    name: &'static str,
    detail: String,
    hint: Option<String>,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            level: Level::Pass,
            name,
            detail: detail.into(),
            hint: None,
        }
    }
    fn warn(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            level: Level::Warn,
            name,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
    fn fail(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            level: Level::Fail,
            name,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
    fn line(&self) -> String {
        let tag = match self.level {
            Level::Pass => "PASS",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        match &self.hint {
            Some(h) => format!("{tag}  {}: {} (fix: {h})", self.name, self.detail),
            None => format!("{tag}  {}: {}", self.name, self.detail),
        }
    }
}

/// The flags of the first CPU in /proc/cpuinfo.
fn cpu_flags(cpuinfo: &str) -> Vec<&str> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().collect())
        .unwrap_or_default()
}

fn check_cpu(cpuinfo: &str) -> Check {
    let flags = cpu_flags(cpuinfo);
    let has = |f: &str| flags.contains(&f);
    if has("vmx") {
        Check::pass("cpu virtualization", "Intel VT-x (vmx)")
    } else if has("svm") {
        Check::pass("cpu virtualization", "AMD-V (svm)")
    } else if has("hypervisor") {
        Check::warn(
            "cpu virtualization",
            "no vmx/svm flag; this host is itself a virtual machine",
            "enable nested virtualization on the outer hypervisor, or rely on a software-assisted KVM (see below)",
        )
    } else {
        Check::fail(
            "cpu virtualization",
            "no vmx/svm flag in /proc/cpuinfo",
            "enable Intel VT-x or AMD-V (SVM) in the BIOS/UEFI setup",
        )
    }
}

/// Which KVM vendor module is loaded, from the names under /sys/module.
fn kvm_flavour(sys: &Path) -> Option<&'static str> {
    ["kvm_intel", "kvm_amd", "kvm_pvm"]
        .into_iter()
        .find(|m| sys.join("module").join(m).exists())
}

fn check_module(sys: &Path, cpuinfo: &str) -> Vec<Check> {
    let mut out = Vec::new();
    let nested_host = cpu_flags(cpuinfo).contains(&"hypervisor");
    match kvm_flavour(sys) {
        Some("kvm_pvm") => {
            out.push(Check::pass("kvm module", "kvm_pvm loaded"));
            out.push(Check::warn(
                "kvm acceleration",
                "software-assisted KVM (PVM): guest user code runs natively, guest kernel code is \
                 interpreted (slow) and some instructions (xsave family, cmpxchg16b) fail",
                "use small guests and --cpu-model baseline; a host with VT-x/AMD-V is much faster",
            ));
        }
        Some(m) => {
            out.push(Check::pass("kvm module", format!("{m} loaded")));
            let nested =
                std::fs::read_to_string(sys.join("module").join(m).join("parameters/nested"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default();
            if nested_host {
                out.push(Check::warn(
                    "kvm acceleration",
                    "nested KVM: this host runs inside another hypervisor",
                    "expect slower VM exits; run on bare metal for benchmarks",
                ));
            } else {
                out.push(Check::pass(
                    "kvm acceleration",
                    format!(
                        "hardware (nested support for our own guests: {})",
                        if nested.is_empty() {
                            "unknown"
                        } else {
                            &nested
                        }
                    ),
                ));
            }
        }
        None => out.push(Check::fail(
            "kvm module",
            "no kvm_intel, kvm_amd or kvm_pvm module loaded",
            "modprobe kvm_intel (Intel) or modprobe kvm_amd (AMD)",
        )),
    }
    out
}

const KVM_GET_API_VERSION: libc::c_ulong = 0xae00;
const KVM_CHECK_EXTENSION: libc::c_ulong = 0xae03;

/// A KVM capability rvmm relies on: number, name, and whether it is required.
const CAPS: &[(libc::c_ulong, &str, bool)] = &[
    (0, "KVM_CAP_IRQCHIP", true),
    (3, "KVM_CAP_USER_MEMORY", true),
    (4, "KVM_CAP_SET_TSS_ADDR", true),
    (7, "KVM_CAP_EXT_CPUID", true),
    (14, "KVM_CAP_MP_STATE", true),
    (25, "KVM_CAP_IRQ_ROUTING", true),
    (32, "KVM_CAP_IRQFD", true),
    (33, "KVM_CAP_PIT2", true),
    (36, "KVM_CAP_IOEVENTFD", true),
    (72, "KVM_CAP_TSC_DEADLINE_TIMER", false),
];
const KVM_CAP_MAX_VCPUS: libc::c_ulong = 66;

fn kvm_ioctl(fd: &std::fs::File, req: libc::c_ulong, arg: libc::c_ulong) -> i32 {
    // SAFETY: KVM_GET_API_VERSION and KVM_CHECK_EXTENSION take an integer argument and touch
    // no memory of ours.
    unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) }
}

fn check_kvm(dev: &Path) -> Vec<Check> {
    let mut out = Vec::new();
    let p = dev.display();
    if !dev.exists() {
        out.push(Check::fail(
            "/dev/kvm",
            format!("{p} does not exist"),
            "load the KVM module (modprobe kvm_intel or kvm_amd) and enable VT-x/AMD-V in the BIOS",
        ));
        return out;
    }
    let f = match OpenOptions::new().read(true).write(true).open(dev) {
        Ok(f) => f,
        Err(e) => {
            out.push(Check::fail(
                "/dev/kvm",
                format!("cannot open {p}: {e}"),
                "add your user to the kvm group (sudo usermod -aG kvm $USER, log in again) or run as root",
            ));
            return out;
        }
    };
    out.push(Check::pass(
        "/dev/kvm",
        format!("{p} is readable and writable"),
    ));
    let v = kvm_ioctl(&f, KVM_GET_API_VERSION, 0);
    if v == 12 {
        out.push(Check::pass("kvm api", "version 12"));
    } else {
        out.push(Check::fail(
            "kvm api",
            format!("KVM_GET_API_VERSION returned {v}, rvmm needs 12"),
            "use a Linux kernel with standard KVM (2.6.22 or later)",
        ));
        return out;
    }
    let mut missing_req = Vec::new();
    let mut missing_opt = Vec::new();
    for &(cap, name, required) in CAPS {
        if kvm_ioctl(&f, KVM_CHECK_EXTENSION, cap) <= 0 {
            if required {
                missing_req.push(name);
            } else {
                missing_opt.push(name);
            }
        }
    }
    if missing_req.is_empty() {
        out.push(Check::pass(
            "kvm capabilities",
            "all required capabilities present",
        ));
    } else {
        out.push(Check::fail(
            "kvm capabilities",
            format!("missing {}", missing_req.join(", ")),
            "use a newer host kernel with in-kernel irqchip support",
        ));
    }
    if !missing_opt.is_empty() {
        out.push(Check::warn(
            "kvm optional capabilities",
            format!("missing {}", missing_opt.join(", ")),
            "guests fall back to slower timers; a newer host kernel adds them",
        ));
    }
    let max = kvm_ioctl(&f, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
    out.push(Check::pass("kvm max vcpus", format!("{max} vCPUs per VM")));
    out
}

fn check_tun() -> Check {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => Check::pass("/dev/net/tun", "tap devices can be created"),
        Err(e) => Check::warn(
            "/dev/net/tun",
            format!("cannot open /dev/net/tun: {e}"),
            "modprobe tun (needed for --bridge networking), and run with CAP_NET_ADMIN",
        ),
    }
}

fn check_bridge(sys: &Path, proc_root: &Path) -> Check {
    let loaded = sys.join("module/bridge").exists();
    let builtin = std::fs::read_to_string(proc_root.join("modules"))
        .map(|m| m.lines().any(|l| l.starts_with("bridge ")))
        .unwrap_or(false);
    if loaded || builtin {
        Check::pass("bridge", "Linux bridge support available")
    } else {
        Check::warn(
            "bridge",
            "bridge module not loaded",
            "modprobe bridge (needed for --bridge networking)",
        )
    }
}

/// HugePages_Total and HugePages_Free from /proc/meminfo.
fn hugepages(meminfo: &str) -> (u64, u64) {
    let get = |k: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("HugePages_Total:"), get("HugePages_Free:"))
}

fn check_hugepages(meminfo: &str) -> Check {
    let (total, free) = hugepages(meminfo);
    if free > 0 {
        Check::pass(
            "hugepages",
            format!("{free} of {total} 2 MiB pages free for --hugepages"),
        )
    } else {
        Check::warn(
            "hugepages",
            format!("{free} of {total} huge pages free"),
            "echo 512 > /proc/sys/vm/nr_hugepages to back 1 GiB of guest RAM with --hugepages",
        )
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cpuinfo = std::fs::read_to_string(args.proc_root.join("cpuinfo")).unwrap_or_default();
    let meminfo = std::fs::read_to_string(args.proc_root.join("meminfo")).unwrap_or_default();
    let mut checks = vec![check_cpu(&cpuinfo)];
    checks.extend(check_module(&args.sys_root, &cpuinfo));
    checks.extend(check_kvm(&args.kvm_device));
    checks.push(check_tun());
    checks.push(check_bridge(&args.sys_root, &args.proc_root));
    checks.push(check_hugepages(&meminfo));
    for c in &checks {
        println!("{}", c.line());
    }
    let worst = checks.iter().map(|c| c.level).max().unwrap_or(Level::Pass);
    let fails = checks.iter().filter(|c| c.level == Level::Fail).count();
    let warns = checks.iter().filter(|c| c.level == Level::Warn).count();
    println!(
        "summary: {} checks, {fails} failed, {warns} warnings",
        checks.len()
    );
    if worst == Level::Fail {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTEL: &str = "processor\t: 0\nflags\t\t: fpu vme vmx sse2\nprocessor\t: 1\n";
    const GUEST: &str = "flags\t\t: fpu sse2 hypervisor\n";
    const NONE: &str = "flags\t\t: fpu sse2\n";

    #[test]
    fn cpu_flags_decide_pass_warn_fail() {
        assert_eq!(check_cpu(INTEL).level, Level::Pass);
        assert!(check_cpu(INTEL).detail.contains("vmx"));
        assert_eq!(check_cpu("flags : svm").level, Level::Pass);
        assert_eq!(check_cpu(GUEST).level, Level::Warn);
        let f = check_cpu(NONE);
        assert_eq!(f.level, Level::Fail);
        assert!(f.line().starts_with("FAIL  cpu virtualization"));
        assert!(f.line().contains("BIOS"));
        assert_eq!(check_cpu("").level, Level::Fail);
    }

    #[test]
    fn missing_or_forbidden_kvm_device_fails_with_a_hint() {
        let c = check_kvm(Path::new("/nonexistent/kvm"));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].level, Level::Fail);
        assert!(c[0].line().contains("modprobe"));
        // A node that exists but cannot be opened read-write (a directory: even root fails).
        let d = tempfile::tempdir().unwrap();
        let c = check_kvm(d.path());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].level, Level::Fail);
        assert!(c[0].line().contains("kvm group"));
    }

    #[test]
    fn software_assisted_and_absent_modules_are_reported() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(check_module(d.path(), NONE)[0].level, Level::Fail);
        std::fs::create_dir_all(d.path().join("module/kvm_pvm")).unwrap();
        let c = check_module(d.path(), GUEST);
        assert_eq!(c[0].level, Level::Pass);
        assert_eq!(c[1].level, Level::Warn);
        assert!(c[1].detail.contains("software-assisted"));
    }

    #[test]
    fn hugepage_counts_parse() {
        let m = "MemTotal: 1 kB\nHugePages_Total:     512\nHugePages_Free:      100\n";
        assert_eq!(hugepages(m), (512, 100));
        assert_eq!(check_hugepages(m).level, Level::Pass);
        assert_eq!(
            check_hugepages("HugePages_Total: 0\nHugePages_Free: 0\n").level,
            Level::Warn
        );
    }

    #[test]
    fn real_host_kvm_checks_run() {
        // On CI /dev/kvm exists: the device must open and report API 12.
        if Path::new("/dev/kvm").exists() {
            let c = check_kvm(Path::new("/dev/kvm"));
            assert!(
                c.iter()
                    .any(|c| c.name == "kvm api" && c.level == Level::Pass),
                "{c:?}"
            );
        }
    }
}
