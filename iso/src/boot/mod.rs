//! Find the installer's kernel, initrds and command line on an ISO, the way its boot loader
//! would, and pick the entry that installs (not the media check, rescue or memtest ones).

mod grub;
mod syslinux;
mod trees;

use crate::error::{IsoError, Result};
use crate::image::{DirEntry, Iso};

/// Largest boot configuration file read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Nesting of `include`/`source` followed.
const MAX_INCLUDE_DEPTH: usize = 16;
/// Configuration files read (all includes together) for one menu: bounds include bombs.
const MAX_INCLUDES: usize = 256;
/// Menu entries accepted from one configuration.
const MAX_ENTRIES: usize = 4096;

/// What the user asked for on the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootChoice {
    /// `--boot-entry LABEL`: the entry's label (ISOLINUX `label`, GRUB `--id`) or its menu title.
    pub entry: Option<String>,
    /// `--append STR`: added after the entry's own command line.
    pub append: Option<String>,
}

/// Which boot configuration an entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootSource {
    /// ISOLINUX/SYSLINUX configuration.
    Isolinux,
    /// GRUB 2 configuration.
    Grub,
    /// A `.treeinfo` (Fedora/RHEL/CentOS compose metadata).
    Treeinfo,
    /// A Debian installer tree (`install.amd/`).
    Debian,
}

impl std::fmt::Display for BootSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BootSource::Isolinux => "isolinux",
            BootSource::Grub => "grub",
            BootSource::Treeinfo => "treeinfo",
            BootSource::Debian => "debian",
        })
    }
}

/// A file the boot needs, found on the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootFile {
    /// Absolute path on the image as resolved from the configuration.
    pub path: String,
    /// Its directory entry: size and extents, for [`Iso::read_file`].
    pub entry: DirEntry,
}

/// The installer boot that was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallerBoot {
    /// Kernel image (bzImage).
    pub kernel: BootFile,
    /// Initrds in load order (concatenated in memory by the loader).
    pub initrds: Vec<BootFile>,
    /// Kernel command line: the entry's append line unchanged, plus the user's `--append`.
    pub cmdline: String,
    /// The entry's label (ISOLINUX label, GRUB title).
    pub label: String,
    /// Where the entry came from.
    pub source: BootSource,
    /// The configuration file that defined it (empty for tree-derived entries).
    pub config: String,
}

/// Largest kernel or initrd read by [`InstallerBoot::read_kernel`]/[`InstallerBoot::read_initrd`].
pub const MAX_BOOT_FILE: u64 = 1 << 30;

impl InstallerBoot {
    /// The kernel image's bytes.
    pub fn read_kernel(&self, iso: &Iso) -> Result<Vec<u8>> {
        iso.read_path(&self.kernel.path, MAX_BOOT_FILE)
    }

    /// All initrds concatenated in order, each padded to 4 bytes as boot loaders do (the kernel
    /// unpacks concatenated cpio archives); empty when the entry has none.
    pub fn read_initrd(&self, iso: &Iso) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for f in &self.initrds {
            let total = out.len() as u64 + f.entry.size();
            if total > MAX_BOOT_FILE {
                return Err(IsoError::TooLarge {
                    image: iso.name().to_string(),
                    path: f.path.clone(),
                    size: total,
                    limit: MAX_BOOT_FILE,
                });
            }
            out.extend(iso.read_file(&f.entry, MAX_BOOT_FILE)?);
            out.resize(out.len().next_multiple_of(4), 0);
        }
        Ok(out)
    }
}

impl std::fmt::Display for InstallerBoot {
    /// One line saying what will boot, for the user.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let initrds: Vec<&str> = self.initrds.iter().map(|i| i.path.as_str()).collect();
        write!(
            f,
            "{} entry {:?} ({}): kernel {}, initrd {}, cmdline {:?}",
            self.source,
            self.label,
            if self.config.is_empty() {
                "-"
            } else {
                &self.config
            },
            self.kernel.path,
            if initrds.is_empty() {
                "none".to_string()
            } else {
                initrds.join(" + ")
            },
            self.cmdline
        )
    }
}

/// One menu entry as parsed from a boot configuration, before choosing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MenuEntry {
    /// ISOLINUX label or GRUB `--id` (GRUB title when there is no id).
    pub label: String,
    /// Human-readable title (`menu label`, GRUB menuentry title), `^` hotkey marks removed.
    pub title: String,
    /// Kernel path as resolved against the configuration's directory; `None` for entries that
    /// boot something other than Linux (localboot, chain.c32, memtest as COM32).
    pub kernel: Option<String>,
    /// Initrd paths, resolved.
    pub initrds: Vec<String>,
    /// Command line exactly as written.
    pub cmdline: String,
    /// Inside a submenu (Troubleshooting, Advanced options).
    pub in_submenu: bool,
    /// Hidden from the menu (`menu hide`).
    pub hidden: bool,
}

/// The parsed entries of one configuration and which one its menu would boot by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Menu {
    /// Entries in file order.
    pub entries: Vec<MenuEntry>,
    /// Index of the configured default, when it names an entry.
    pub default: Option<usize>,
    /// Path of the configuration file.
    pub config: String,
}

/// Words in a label, title or command line that mark an entry that does not install.
fn not_install_reason(e: &MenuEntry) -> Option<&'static str> {
    let Some(kernel) = &e.kernel else {
        return Some("does not boot a Linux kernel");
    };
    let text = format!("{} {}", e.label, e.title).to_ascii_lowercase();
    let words: Vec<&str> = e.cmdline.split_whitespace().collect();
    if words
        .iter()
        .any(|w| *w == "rd.live.check" || *w == "mediacheck")
    {
        return Some("checks the media");
    }
    if words
        .iter()
        .any(|w| *w == "rescue" || *w == "inst.rescue" || w.starts_with("rescue/enable="))
        || text.contains("rescue")
    {
        return Some("is a rescue entry");
    }
    if text.contains("memtest") || kernel.to_ascii_lowercase().contains("memtest") {
        return Some("is a memory test");
    }
    if text.contains("test this media") || text.contains("check") || text.contains("mediachk") {
        return Some("checks the media");
    }
    None
}

/// Pick the entry to boot: the requested one, else the menu default when it installs, else the
/// first installing entry (top level before submenus, visible before hidden, "install" first).
pub fn choose_entry(menu: &Menu, wanted: Option<&str>) -> std::result::Result<usize, String> {
    if let Some(w) = wanted {
        let found = menu
            .entries
            .iter()
            .position(|e| e.label == w)
            .or_else(|| {
                menu.entries
                    .iter()
                    .position(|e| e.label.eq_ignore_ascii_case(w))
            })
            .or_else(|| {
                menu.entries
                    .iter()
                    .position(|e| e.title.eq_ignore_ascii_case(w))
            });
        return match found {
            Some(i) if menu.entries[i].kernel.is_some() => Ok(i),
            Some(_) => Err(format!("entry {w:?} does not boot a Linux kernel")),
            None => Err(format!("no entry {w:?}")),
        };
    }
    if let Some(d) = menu.default {
        match menu.entries.get(d).map(not_install_reason) {
            Some(None) => return Ok(d),
            Some(Some(why)) => log::info!(
                "{}: default entry {:?} {why}; looking for the install entry",
                menu.config,
                menu.entries[d].label
            ),
            None => {}
        }
    }
    let rank = |e: &MenuEntry| {
        let text = format!("{} {}", e.label, e.title).to_ascii_lowercase();
        (e.in_submenu, e.hidden, !text.contains("install"))
    };
    menu.entries
        .iter()
        .enumerate()
        .filter(|(_, e)| not_install_reason(e).is_none())
        .min_by_key(|(i, e)| (rank(e), *i))
        .map(|(i, _)| i)
        .ok_or_else(|| "no entry boots an installer kernel".to_string())
}

/// Resolve `path` (absolute, or relative to `dir`) into a normalized absolute path.
fn resolve(dir: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{dir}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Directory part of an absolute path ("/" for top-level files).
fn dir_of(path: &str) -> String {
    match path.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => path[..i].to_string(),
    }
}

/// Read a configuration file as text, if present.
fn read_config(iso: &Iso, path: &str) -> Result<Option<String>> {
    match iso.read_path(path, MAX_CONFIG_BYTES) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(IsoError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// All menus found on the image, in the order they are tried.
pub fn menus(iso: &Iso) -> Result<Vec<(BootSource, Menu)>> {
    let mut out = Vec::new();
    if let Some(m) = syslinux::find(iso)? {
        out.push((BootSource::Isolinux, m));
    }
    for m in grub::find(iso)? {
        out.push((BootSource::Grub, m));
    }
    if let Some(m) = trees::treeinfo(iso)? {
        out.push((BootSource::Treeinfo, m));
    }
    if let Some(m) = trees::debian(iso)? {
        out.push((BootSource::Debian, m));
    }
    Ok(out)
}

fn boot_file(iso: &Iso, path: &str) -> Result<BootFile> {
    let entry = iso.lookup(path)?;
    if entry.is_dir {
        return Err(iso.corrupt(format!("{path} is a directory, not a kernel or initrd")));
    }
    Ok(BootFile {
        path: path.to_string(),
        entry,
    })
}

/// Find what an installer ISO boots, honouring `--boot-entry` and `--append`.
pub fn discover_boot(iso: &Iso, choice: &BootChoice) -> Result<InstallerBoot> {
    let menus = menus(iso)?;
    let mut problems = Vec::new();
    for (source, menu) in &menus {
        let i = match choose_entry(menu, choice.entry.as_deref()) {
            Ok(i) => i,
            Err(why) => {
                problems.push(format!("{source} {}: {why}", menu.config));
                continue;
            }
        };
        let e = &menu.entries[i];
        let Some(kernel_path) = &e.kernel else {
            continue;
        };
        let files = boot_file(iso, kernel_path).and_then(|k| {
            let initrds = e
                .initrds
                .iter()
                .map(|p| boot_file(iso, p))
                .collect::<Result<Vec<_>>>()?;
            Ok((k, initrds))
        });
        let (kernel, initrds) = match files {
            Ok(f) => f,
            Err(err) => {
                problems.push(format!("{source} entry {:?}: {err}", e.label));
                continue;
            }
        };
        let mut cmdline = e.cmdline.clone();
        if let Some(extra) = choice.append.as_deref().filter(|s| !s.is_empty()) {
            if !cmdline.is_empty() {
                cmdline.push(' ');
            }
            cmdline.push_str(extra);
        }
        log::info!(
            "{}: booting {source} entry {:?} ({}) from {}: kernel {} initrd {:?} cmdline {cmdline:?}",
            iso.name(),
            e.label,
            e.title,
            menu.config,
            kernel.path,
            initrds.iter().map(|f| f.path.as_str()).collect::<Vec<_>>()
        );
        return Ok(InstallerBoot {
            kernel,
            initrds,
            cmdline,
            label: e.label.clone(),
            source: *source,
            config: menu.config.clone(),
        });
    }
    let available: Vec<String> = menus
        .iter()
        .flat_map(|(s, m)| m.entries.iter().map(move |e| format!("{s}:{}", e.label)))
        .collect();
    let reason = if menus.is_empty() {
        "no isolinux/syslinux, GRUB, .treeinfo or install.amd/ boot configuration found; \
         boot it with --kernel/--initrd instead"
            .to_string()
    } else {
        format!(
            "{}; entries: {}; choose one with --boot-entry LABEL",
            problems.join("; "),
            available.join(", ")
        )
    };
    Err(IsoError::NoBootEntry {
        image: iso.name().to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(label: &str, title: &str, cmdline: &str) -> MenuEntry {
        MenuEntry {
            label: label.into(),
            title: title.into(),
            kernel: Some("/vmlinuz".into()),
            cmdline: cmdline.into(),
            ..Default::default()
        }
    }

    #[test]
    fn media_check_default_is_passed_over_for_install() {
        let menu = Menu {
            entries: vec![
                entry("linux", "Install CentOS 7", "inst.stage2=x quiet"),
                entry(
                    "check",
                    "Test this media & install CentOS 7",
                    "rd.live.check quiet",
                ),
            ],
            default: Some(1),
            config: "t".into(),
        };
        assert_eq!(choose_entry(&menu, None), Ok(0));
        assert_eq!(choose_entry(&menu, Some("check")), Ok(1));
        assert_eq!(choose_entry(&menu, Some("Install CentOS 7")), Ok(0));
        assert!(choose_entry(&menu, Some("nope")).is_err());
    }

    #[test]
    fn submenu_and_rescue_entries_come_last() {
        let mut rescue = entry("rescue", "Rescue a system", "inst.rescue");
        rescue.in_submenu = false;
        let mut vesa = entry("vesa", "Install in basic graphics mode", "nomodeset");
        vesa.in_submenu = true;
        let plain = entry("live", "Start the system", "quiet");
        let menu = Menu {
            entries: vec![rescue, vesa, plain],
            default: None,
            config: "t".into(),
        };
        assert_eq!(choose_entry(&menu, None), Ok(2));
    }

    #[test]
    fn paths_resolve_against_the_config_directory() {
        assert_eq!(resolve("/isolinux", "vmlinuz"), "/isolinux/vmlinuz");
        assert_eq!(
            resolve("/isolinux", "/install.amd/vmlinuz"),
            "/install.amd/vmlinuz"
        );
        assert_eq!(resolve("/a/b", "../c/./d"), "/a/c/d");
        assert_eq!(resolve("/", "../../x"), "/x");
        assert_eq!(dir_of("/isolinux/isolinux.cfg"), "/isolinux");
        assert_eq!(dir_of("/syslinux.cfg"), "/");
    }
}
