//! `VmConfig`: the VM description as plain data, parsed and validated once from the CLI.

use std::path::PathBuf;

use arch::cpuid::CpuModel;

use crate::cli::{Cli, CpuModelArg};

/// Smallest guest RAM rvmm accepts: room for the boot structures, the ACPI tables and a
/// small kernel above 1 MiB.
pub const MIN_MEMORY: u64 = 4 << 20;
/// Largest guest RAM rvmm maps (1 TiB), whatever the host has.
pub const MAX_MEMORY: u64 = 1 << 40;
/// Most vCPUs the MADT's 8-bit APIC IDs can describe.
pub const MAX_CPUS_ACPI: u32 = 255;

/// Errors in the user's VM description.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Unparsable size.
    #[error("invalid --memory {0:?}: use a number of MiB (1024) or a size like 512M or 2G")]
    BadSize(String),
    /// Zero or too small.
    #[error("--memory {0} is too small: the guest needs at least 4M")]
    MemoryTooSmall(String),
    /// More than rvmm or the host can map.
    #[error("--memory {given} is more than {limit} MiB, {why}")]
    MemoryTooLarge {
        /// What the user gave.
        given: String,
        /// The limit in MiB.
        limit: u64,
        /// Which limit.
        why: &'static str,
    },
    /// Not page aligned (or, with --hugepages, not 2 MiB aligned).
    #[error("--memory {0} must be a multiple of {1} KiB")]
    MemoryUnaligned(String, u64),
    /// `--cpus 0`.
    #[error("--cpus must be at least 1")]
    NoCpus,
    /// More vCPUs than KVM or ACPI allow.
    #[error("--cpus {given} is above the limit of {limit} ({why})")]
    TooManyCpus {
        /// Requested.
        given: u32,
        /// Allowed.
        limit: u32,
        /// Which limit.
        why: &'static str,
    },
    /// Bad `--serial`.
    #[error("invalid --serial {0:?}: use stdio, file:PATH or none")]
    BadSerial(String),
    /// Command line with a NUL.
    #[error("--cmdline contains a NUL byte")]
    CmdlineNul,
}

/// Where COM1's output goes and its input comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialMode {
    /// The controlling terminal (raw mode) or the process's stdin/stdout.
    Stdio,
    /// Output appended to a file; no input.
    File(PathBuf),
    /// Discarded.
    None,
}

/// Everything needed to build and run one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Optional initrd.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// Guest RAM in bytes.
    pub mem_size: u64,
    /// vCPU count.
    pub cpus: u32,
    /// COM1 wiring.
    pub serial: SerialMode,
    /// Guest reboot ends rvmm.
    pub no_reboot: bool,
    /// CPU feature model.
    pub cpu_model: CpuModel,
    /// Huge-page backed RAM.
    pub hugepages: bool,
    /// KVM device node.
    pub kvm_device: PathBuf,
}

/// What the host allows, for validation.
#[derive(Debug, Clone, Copy)]
pub struct HostLimits {
    /// KVM's maximum vCPUs per VM.
    pub max_vcpus: u32,
    /// Host RAM in bytes (0 if unknown).
    pub host_mem: u64,
}

/// Parse a memory size: a bare number is MiB; K, M, G, T suffixes (optionally with "B" or
/// "iB", any case) are binary multiples.
pub fn parse_size(s: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::BadSize(s.to_string());
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let stripped = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (num, shift) = match stripped.char_indices().last() {
        Some((i, 'k')) => (&stripped[..i], 10),
        Some((i, 'm')) => (&stripped[..i], 20),
        Some((i, 'g')) => (&stripped[..i], 30),
        Some((i, 't')) => (&stripped[..i], 40),
        Some((_, c)) if c.is_ascii_digit() && stripped.len() == lower.len() => (stripped, 20),
        _ => return Err(bad()),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

fn parse_serial(s: &str) -> Result<SerialMode, ConfigError> {
    match s {
        "stdio" => Ok(SerialMode::Stdio),
        "none" => Ok(SerialMode::None),
        _ => match s.strip_prefix("file:") {
            Some(p) if !p.is_empty() => Ok(SerialMode::File(PathBuf::from(p))),
            _ => Err(ConfigError::BadSerial(s.to_string())),
        },
    }
}

impl VmConfig {
    /// Parse the CLI into a config (host-independent checks only).
    pub fn from_cli(cli: &Cli) -> Result<Self, ConfigError> {
        let mem_size = parse_size(&cli.memory)?;
        if mem_size < MIN_MEMORY {
            return Err(ConfigError::MemoryTooSmall(cli.memory.clone()));
        }
        if mem_size > MAX_MEMORY {
            return Err(ConfigError::MemoryTooLarge {
                given: cli.memory.clone(),
                limit: MAX_MEMORY >> 20,
                why: "the most rvmm maps",
            });
        }
        let align = if cli.hugepages { 2 << 20 } else { 4096 };
        if mem_size % align != 0 {
            return Err(ConfigError::MemoryUnaligned(
                cli.memory.clone(),
                align >> 10,
            ));
        }
        if cli.cpus == 0 {
            return Err(ConfigError::NoCpus);
        }
        if cli.cpus > MAX_CPUS_ACPI {
            return Err(ConfigError::TooManyCpus {
                given: cli.cpus,
                limit: MAX_CPUS_ACPI,
                why: "8-bit APIC IDs in the MADT",
            });
        }
        if cli.cmdline.as_bytes().contains(&0) {
            return Err(ConfigError::CmdlineNul);
        }
        Ok(Self {
            // Without --kernel, crate::devices::prepare sets the kernel the boot order picks.
            kernel: cli.kernel.clone().unwrap_or_default(),
            initrd: cli.initrd.clone(),
            cmdline: cli.cmdline.clone(),
            mem_size,
            cpus: cli.cpus,
            serial: parse_serial(cli.serial.as_deref().unwrap_or("stdio"))?,
            no_reboot: cli.no_reboot,
            cpu_model: match cli.cpu_model {
                CpuModelArg::Host => CpuModel::Host,
                CpuModelArg::Baseline => CpuModel::Baseline,
            },
            hugepages: cli.hugepages,
            kvm_device: cli.kvm_device.clone(),
        })
    }

    /// Check the config against what this host and its KVM allow.
    pub fn check_host(&self, limits: &HostLimits) -> Result<(), ConfigError> {
        if self.cpus > limits.max_vcpus {
            return Err(ConfigError::TooManyCpus {
                given: self.cpus,
                limit: limits.max_vcpus,
                why: "KVM_CAP_MAX_VCPUS of this host",
            });
        }
        if limits.host_mem != 0 && self.mem_size > limits.host_mem {
            return Err(ConfigError::MemoryTooLarge {
                given: format!("{}M", self.mem_size >> 20),
                limit: limits.host_mem >> 20,
                why: "the host's RAM (MemTotal in /proc/meminfo)",
            });
        }
        Ok(())
    }
}

/// Host RAM in bytes from /proc/meminfo, or 0 if unknown.
pub fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const MIB: u64 = 1 << 20;

    fn cli(args: &[&str]) -> Cli {
        let mut v = vec!["rvmm", "--kernel", "/k"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).unwrap()
    }

    #[test]
    fn sizes_parse_as_mib_or_with_suffixes() {
        assert_eq!(parse_size("1024"), Ok(1024 * MIB));
        assert_eq!(parse_size("512M"), Ok(512 * MIB));
        assert_eq!(parse_size("512m"), Ok(512 * MIB));
        assert_eq!(parse_size("2G"), Ok(2048 * MIB));
        assert_eq!(parse_size("2GiB"), Ok(2048 * MIB));
        assert_eq!(parse_size("2gb"), Ok(2048 * MIB));
        assert_eq!(parse_size("65536K"), Ok(64 * MIB));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in [
            "",
            "M",
            "12X",
            "-1",
            "1.5G",
            "0x100",
            "99999999999999999999",
            "20000000000T",
            "1 G",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_are_sensible() {
        let c = VmConfig::from_cli(&cli(&[])).unwrap();
        assert_eq!(c.mem_size, 512 * MIB);
        assert_eq!(c.cpus, 1);
        assert_eq!(c.serial, SerialMode::Stdio);
        assert!(c.cmdline.contains("console=ttyS0"));
        assert_eq!(c.cpu_model, CpuModel::Host);
        assert!(!c.no_reboot);
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        let e = |a: &[&str]| VmConfig::from_cli(&cli(a)).unwrap_err();
        assert!(matches!(
            e(&["--memory", "0"]),
            ConfigError::MemoryTooSmall(_)
        ));
        assert!(matches!(
            e(&["--memory", "1M"]),
            ConfigError::MemoryTooSmall(_)
        ));
        assert!(matches!(
            e(&["--memory", "2T"]),
            ConfigError::MemoryTooLarge { .. }
        ));
        assert!(matches!(e(&["--memory", "lots"]), ConfigError::BadSize(_)));
        assert!(matches!(
            e(&["--memory", "5001K"]),
            ConfigError::MemoryUnaligned(_, 4)
        ));
        assert!(matches!(
            e(&["--memory", "513M", "--hugepages"]),
            ConfigError::MemoryUnaligned(_, 2048)
        ));
        assert_eq!(e(&["--cpus", "0"]), ConfigError::NoCpus);
        assert!(matches!(
            e(&["--cpus", "256"]),
            ConfigError::TooManyCpus { limit: 255, .. }
        ));
        assert!(matches!(
            e(&["--serial", "tcp:1"]),
            ConfigError::BadSerial(_)
        ));
        assert!(matches!(
            e(&["--serial", "file:"]),
            ConfigError::BadSerial(_)
        ));
        assert!(e(&["--memory", "0"]).to_string().contains("at least 4M"));
    }

    #[test]
    fn serial_and_cpu_model_parse() {
        let c = VmConfig::from_cli(&cli(&[
            "--serial",
            "file:/tmp/x.log",
            "--cpu-model",
            "baseline",
            "--no-reboot",
            "--cpus",
            "4",
            "--memory",
            "6G",
        ]))
        .unwrap();
        assert_eq!(c.serial, SerialMode::File("/tmp/x.log".into()));
        assert_eq!(c.cpu_model, CpuModel::Baseline);
        assert!(c.no_reboot);
        assert_eq!((c.cpus, c.mem_size), (4, 6 << 30));
        assert!(Cli::try_parse_from(["rvmm", "--kernel", "/k", "--cpu-model", "fast"]).is_err());
        assert!(
            Cli::try_parse_from(["rvmm"]).is_err(),
            "--kernel is required"
        );
    }

    #[test]
    fn host_limits_apply() {
        let c = VmConfig::from_cli(&cli(&["--cpus", "8", "--memory", "4G"])).unwrap();
        let ok = HostLimits {
            max_vcpus: 8,
            host_mem: 4 << 30,
        };
        assert!(c.check_host(&ok).is_ok());
        let few = HostLimits {
            max_vcpus: 4,
            host_mem: 0,
        };
        assert!(matches!(
            c.check_host(&few),
            Err(ConfigError::TooManyCpus { limit: 4, .. })
        ));
        let small = HostLimits {
            max_vcpus: 8,
            host_mem: 2 << 30,
        };
        assert!(matches!(
            c.check_host(&small),
            Err(ConfigError::MemoryTooLarge { .. })
        ));
        assert!(host_memory() > 0);
    }
}
