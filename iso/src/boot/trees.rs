//! Installer trees recognized by their layout when no boot-loader menu names the kernel:
//! `.treeinfo` (Fedora/RHEL/CentOS composes) and Debian's `install.amd/`.

use super::{read_config, resolve, Menu, MenuEntry};
use crate::error::Result;
use crate::image::Iso;

/// Keys of one `[section]` of an INI-style file.
fn ini_section<'a>(text: &'a str, section: &str) -> Vec<(&'a str, &'a str)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim(), v.trim()));
            }
        }
    }
    out
}

/// Escape a volume label the way dracut's `LABEL=` expects: bytes other than letters, digits,
/// `.`, `_` and `-` become `\xHH`.
pub(super) fn escape_label(label: &str) -> String {
    let mut out = String::new();
    for b in label.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The x86_64 images of a `.treeinfo`, booted with `inst.stage2=hd:LABEL=<volume id>`.
pub(super) fn treeinfo(iso: &Iso) -> Result<Option<Menu>> {
    let Some(text) = read_config(iso, "/.treeinfo")? else {
        return Ok(None);
    };
    let images = ini_section(&text, "images-x86_64");
    let get = |k: &str| images.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    let (Some(kernel), Some(initrd)) = (get("kernel"), get("initrd")) else {
        log::info!(
            "{}: .treeinfo has no [images-x86_64] kernel and initrd",
            iso.name()
        );
        return Ok(None);
    };
    let family = ini_section(&text, "general")
        .into_iter()
        .chain(ini_section(&text, "release"))
        .find(|(k, _)| *k == "family" || *k == "name")
        .map_or("installer", |(_, v)| v);
    let entry = MenuEntry {
        label: "treeinfo".into(),
        title: format!("Install {family}"),
        kernel: Some(resolve("/", kernel)),
        initrds: vec![resolve("/", initrd)],
        cmdline: format!("inst.stage2=hd:LABEL={}", escape_label(iso.volume_id())),
        ..Default::default()
    };
    Ok(Some(Menu {
        entries: vec![entry],
        default: Some(0),
        config: "/.treeinfo".into(),
    }))
}

/// Debian's installer tree: `install.amd/vmlinuz` with the text and (when present) graphical
/// initrds.
pub(super) fn debian(iso: &Iso) -> Result<Option<Menu>> {
    if !iso.exists("/install.amd/vmlinuz") || !iso.exists("/install.amd/initrd.gz") {
        return Ok(None);
    }
    let mut entries = vec![MenuEntry {
        label: "install".into(),
        title: "Install".into(),
        kernel: Some("/install.amd/vmlinuz".into()),
        initrds: vec!["/install.amd/initrd.gz".into()],
        cmdline: String::new(),
        ..Default::default()
    }];
    if iso.exists("/install.amd/gtk/initrd.gz") {
        entries.push(MenuEntry {
            label: "installgui".into(),
            title: "Graphical install".into(),
            kernel: Some("/install.amd/vmlinuz".into()),
            initrds: vec!["/install.amd/gtk/initrd.gz".into()],
            cmdline: String::new(),
            ..Default::default()
        });
    }
    Ok(Some(Menu {
        entries,
        default: Some(0),
        config: "/install.amd".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_escape_like_dracut() {
        assert_eq!(escape_label("CentOS 7 x86_64"), r"CentOS\x207\x20x86_64");
        assert_eq!(escape_label("Rocky-9.3/x"), r"Rocky-9.3\x2fx");
    }

    #[test]
    fn ini_sections_are_separate() {
        let t = "[general]\nfamily = CentOS\n[images-x86_64]\nkernel = a\n# c\ninitrd=b\n[x]\nkernel=z\n";
        assert_eq!(
            ini_section(t, "images-x86_64"),
            vec![("kernel", "a"), ("initrd", "b")]
        );
        assert_eq!(ini_section(t, "general"), vec![("family", "CentOS")]);
    }
}
