//! `--bridge`, `--tap`, `--net-fd`, `--net` and `--mac`: the guest's NICs.
//!
//! Host taps are opened (a `--bridge` tap created and made a port of the bridge) once per rvmm
//! process by [`Nics::open`], so a guest reboot keeps its tap; each VM build puts a fresh
//! virtio-net function on those taps ([`Nics::attach`]). Dropping [`Nics`] deletes the taps rvmm
//! created: `crate::run` holds it on the stack, so every return path (poweroff, `--no-reboot`
//! reset, SIGINT/SIGTERM/SIGHUP, errors) removes them; after SIGKILL the kernel deletes them as
//! their last fd closes, since they are not persistent.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, bail, Result};

use ::devices::virtio::net::Net;
use net::{MacAddr, NetBackendConfig, NetConfig, Tap};

use crate::cli::Cli;
use crate::config::VmConfig;
use crate::vm::Vm;

/// Numbers NIC and `--mac` flags in the order clap meets them on the command line (values are
/// parsed left to right), since clap keeps no order across different flags.
static FLAG_SEQ: AtomicU64 = AtomicU64::new(0);

fn next_seq() -> u64 {
    FLAG_SEQ.fetch_add(1, Ordering::Relaxed)
}

/// One NIC flag (`--bridge`, `--tap`, `--net-fd`, `--net`) with its place on the command line.
#[derive(Debug, Clone)]
pub struct NicArg {
    seq: u64,
    /// The NIC it describes.
    pub config: NetConfig,
}

/// One `--mac` with its place on the command line: it names the NIC flag just before it.
#[derive(Debug, Clone)]
pub struct MacArg {
    seq: u64,
    /// The address.
    pub mac: MacAddr,
}

fn nic_arg(kind: &str, value: &str) -> Result<NicArg, String> {
    NetConfig::from_flag(kind, value)
        .map(|config| NicArg {
            seq: next_seq(),
            config,
        })
        .map_err(|e| e.to_string())
}

/// clap value parser of `--bridge`.
pub fn parse_bridge(v: &str) -> Result<NicArg, String> {
    nic_arg("bridge", v)
}

/// clap value parser of `--tap`.
pub fn parse_tap(v: &str) -> Result<NicArg, String> {
    nic_arg("tap", v)
}

/// clap value parser of `--net-fd`.
pub fn parse_net_fd(v: &str) -> Result<NicArg, String> {
    nic_arg("net-fd", v)
}

/// clap value parser of `--net`.
pub fn parse_net(v: &str) -> Result<NicArg, String> {
    nic_arg("net", v)
}

/// clap value parser of `--mac`.
pub fn parse_mac(v: &str) -> Result<MacArg, String> {
    v.parse::<MacAddr>()
        .map(|mac| MacArg {
            seq: next_seq(),
            mac,
        })
        .map_err(|e| e.to_string())
}

/// The NICs the command line asks for, in command-line order, each `--mac` applied to the NIC
/// flag before it. `--net none` alone means no NIC; with other NIC flags it is an error.
pub fn configs(cli: &Cli) -> Result<Vec<NetConfig>> {
    let mut nics: Vec<&NicArg> = cli
        .bridges
        .iter()
        .chain(&cli.taps)
        .chain(&cli.net_fds)
        .chain(&cli.nets)
        .collect();
    nics.sort_by_key(|n| n.seq);
    let mut out: Vec<(u64, NetConfig)> = nics.iter().map(|n| (n.seq, n.config.clone())).collect();
    for m in &cli.macs {
        let Some((_, nic)) = out.iter_mut().rev().find(|(seq, _)| *seq < m.seq) else {
            bail!(
                "--mac {} comes before any NIC: put it after the --bridge, --tap or --net-fd \
                 it is for",
                m.mac
            );
        };
        if nic.backend == NetBackendConfig::None {
            bail!("--mac {} follows --net none, which has no NIC", m.mac);
        }
        if let Some(old) = nic.mac {
            bail!(
                "--mac {} names a NIC that already has MAC {old}: give one --mac after each NIC",
                m.mac
            );
        }
        nic.mac = Some(m.mac);
    }
    let none = out.iter().any(|(_, n)| n.backend == NetBackendConfig::None);
    if none && out.len() > 1 {
        bail!("--net none cannot be combined with other NICs: drop it, or drop the others");
    }
    Ok(out
        .into_iter()
        .map(|(_, n)| n)
        .filter(|n| n.backend != NetBackendConfig::None)
        .collect())
}

/// Refuse `--net-fd` numbers that are not open or are given twice, before anything takes
/// ownership of them: closing a descriptor twice (or one that was never open) would abort rvmm.
pub fn check_inherited_fds(configs: &[NetConfig]) -> Result<()> {
    let mut seen = HashSet::new();
    for c in configs {
        let NetBackendConfig::Fd(fds) = &c.backend else {
            continue;
        };
        for &fd in fds {
            if !seen.insert(fd) {
                bail!("--net-fd {fd} is given twice: each tap fd serves one queue of one NIC");
            }
            // SAFETY: F_GETFD only queries the descriptor table; no memory is passed.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                bail!(
                    "--net-fd {fd}: rvmm has no open file descriptor {fd}; start rvmm with the \
                     tap fd inherited under that number (as libvirt does), or use --tap NAME"
                );
            }
        }
    }
    Ok(())
}

/// The name default MACs are derived from: the first disk, else the CD, else the kernel (as an
/// absolute path where it exists), so a VM keeps its MACs across runs.
pub fn vm_identity(cli: &Cli, cfg: &VmConfig) -> String {
    let path: &Path = cli
        .disks
        .first()
        .map(|d| d.path.as_path())
        .or(cli.cdrom.as_deref())
        .unwrap_or(cfg.kernel.as_path());
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// One NIC's host side, open for the life of rvmm.
struct Nic {
    tap: Tap,
    mac: MacAddr,
    mtu: Option<u16>,
    what: String,
}

/// The NICs of one rvmm process; dropping it deletes the taps rvmm created.
pub struct Nics {
    nics: Vec<Nic>,
}

fn describe(cfg: &NetConfig) -> String {
    match &cfg.backend {
        NetBackendConfig::Bridge(b) => format!("--bridge {b}"),
        NetBackendConfig::Tap(t) => format!("--tap {t}"),
        NetBackendConfig::Fd(fds) => {
            let fds: Vec<String> = fds.iter().map(|f| f.to_string()).collect();
            format!("--net-fd {}", fds.join(":"))
        }
        NetBackendConfig::None => "--net none".into(),
    }
}

impl Nics {
    /// Open the host side of every NIC `cli` names (see [`configs`]).
    pub fn open(cli: &Cli, cfg: &VmConfig) -> Result<Nics> {
        let identity = vm_identity(cli, cfg);
        let configs = configs(cli)?;
        check_inherited_fds(&configs)?;
        let mut nics = Vec::new();
        for (index, nc) in configs.into_iter().enumerate() {
            let flag = describe(&nc);
            let mac = nc.guest_mac(&identity, index as u32);
            // NetError's message names its cause and the fix; chaining would repeat it.
            let tap = nc
                .open(mac)
                .map_err(|e| anyhow!("cannot attach {flag}: {e}"))?
                .ok_or_else(|| anyhow!("{flag} opened no tap"))?;
            let mtu = tap
                .mtu()
                .ok()
                .and_then(|m| u16::try_from(m).ok())
                .filter(|&m| m >= 68);
            log::info!(
                "NIC {index} ({flag}): tap {}, guest MAC {mac}, {} queue pair(s)",
                tap.name(),
                tap.queues().len()
            );
            nics.push(Nic {
                what: format!("virtio-net {mac} on tap {} ({flag})", tap.name()),
                tap,
                mac,
                mtu,
            });
        }
        Ok(Nics { nics })
    }

    /// Host interface names of the taps, in NIC order.
    pub fn tap_names(&self) -> Vec<String> {
        self.nics.iter().map(|n| n.tap.name().to_string()).collect()
    }

    /// Put one virtio-net function per NIC on the PCI bus of `vm`.
    pub fn attach(&self, vm: &Vm) -> Result<()> {
        for n in &self.nics {
            let dev = Net::from_queues(n.tap.queues().to_vec(), n.mac, n.mtu)
                .map_err(|e| anyhow!("cannot create {}: {e}", n.what))?;
            super::pci::add_virtio(vm, Box::new(dev), &n.what)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        let mut v = vec!["rvmm", "--kernel", "/k"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).unwrap()
    }

    fn backends(args: &[&str]) -> Vec<(NetBackendConfig, Option<String>)> {
        configs(&cli(args))
            .unwrap()
            .into_iter()
            .map(|n| (n.backend, n.mac.map(|m| m.to_string())))
            .collect()
    }

    #[test]
    fn nics_keep_command_line_order_and_macs_follow_their_nic() {
        let got = backends(&[
            "--tap",
            "t0",
            "--bridge",
            "br0",
            "--mac",
            "52:54:00:00:00:02",
            "--net-fd",
            "5",
            "--tap",
            "t1,mac=52:54:00:00:00:04",
            "--bridge",
            "br1",
        ]);
        assert_eq!(
            got,
            vec![
                (NetBackendConfig::Tap("t0".into()), None),
                (
                    NetBackendConfig::Bridge("br0".into()),
                    Some("52:54:00:00:00:02".into())
                ),
                (NetBackendConfig::Fd(vec![5]), None),
                (
                    NetBackendConfig::Tap("t1".into()),
                    Some("52:54:00:00:00:04".into())
                ),
                (NetBackendConfig::Bridge("br1".into()), None),
            ]
        );
        assert_eq!(
            backends(&["--net", "bridge=br2", "--tap", "x"])[0].0,
            NetBackendConfig::Bridge("br2".into())
        );
    }

    #[test]
    fn net_none_means_no_nic_and_excludes_others() {
        assert!(backends(&["--net", "none"]).is_empty());
        assert!(backends(&[]).is_empty());
        let e = configs(&cli(&["--net", "none", "--bridge", "br0"])).unwrap_err();
        assert!(e.to_string().contains("--net none"), "{e}");
    }

    #[test]
    fn misplaced_or_doubled_macs_are_refused() {
        let err = |a: &[&str]| configs(&cli(a)).unwrap_err().to_string();
        assert!(err(&["--mac", "52:54:00:00:00:01", "--bridge", "br0"]).contains("before any NIC"));
        assert!(err(&[
            "--bridge",
            "br0,mac=52:54:00:00:00:01",
            "--mac",
            "52:54:00:00:00:02"
        ])
        .contains("already has MAC"));
        assert!(err(&["--net", "none", "--mac", "52:54:00:00:00:01"]).contains("--net none"));
        for bad in [
            vec!["--mac", "01:00:5e:00:00:01"],
            vec!["--bridge", "a/b"],
            vec!["--net-fd", "1"],
            vec!["--net", "vde"],
        ] {
            let mut v = vec!["rvmm", "--kernel", "/k"];
            v.extend(bad.iter());
            assert!(Cli::try_parse_from(&v).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn closed_or_repeated_net_fds_are_refused_before_use() {
        let check = |a: &[&str]| check_inherited_fds(&configs(&cli(a)).unwrap());
        let e = check(&["--net-fd", "1000"]).unwrap_err().to_string();
        assert!(e.contains("no open file descriptor 1000"), "{e}");
        let f = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f).to_string();
        assert!(check(&["--net-fd", &fd]).is_ok());
        let e = check(&["--net-fd", &fd, "--net", &format!("fd={fd}")]).unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        let e = check(&["--net-fd", &format!("{fd}:{fd}")]).unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        assert!(check(&["--bridge", "br0", "--tap", "t0"]).is_ok());
    }

    #[test]
    fn default_macs_are_stable_and_differ_per_nic_and_vm() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("kernel");
        std::fs::write(&k, b"x").unwrap();
        let c = Cli::try_parse_from(["rvmm", "--kernel", k.to_str().unwrap()]).unwrap();
        let cfg = VmConfig::from_cli(&c).unwrap();
        let id = vm_identity(&c, &cfg);
        assert_eq!(id, std::fs::canonicalize(&k).unwrap().display().to_string());
        let nc: NetConfig = "bridge=br0".parse().unwrap();
        let (a, b) = (nc.guest_mac(&id, 0), nc.guest_mac(&id, 1));
        assert_eq!(&a.0[..3], &[0x52, 0x54, 0x00]);
        assert_ne!(a, b);
        assert_eq!(a, nc.guest_mac(&vm_identity(&c, &cfg), 0));
        // A disk, when there is one, names the VM rather than the kernel.
        let d = dir.path().join("disk.raw");
        std::fs::write(&d, [0u8; 512]).unwrap();
        let c2 = Cli::try_parse_from([
            "rvmm",
            "--kernel",
            k.to_str().unwrap(),
            "--disk",
            d.to_str().unwrap(),
        ])
        .unwrap();
        let id2 = vm_identity(&c2, &VmConfig::from_cli(&c2).unwrap());
        assert!(id2.ends_with("disk.raw"), "{id2}");
    }
}
