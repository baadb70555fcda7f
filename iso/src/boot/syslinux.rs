//! ISOLINUX/SYSLINUX configuration: `label`, `menu label`, `menu default`, `default`,
//! `kernel`/`linux`, `append` (with `initrd=`), `initrd`, `include`/`menu include`,
//! `menu begin`/`menu end` submenus and `text help … endtext` blocks.

use super::{
    dir_of, read_config, resolve, Menu, MenuEntry, MAX_ENTRIES, MAX_INCLUDES, MAX_INCLUDE_DEPTH,
};
use crate::error::Result;
use crate::image::Iso;

/// Where ISOLINUX and SYSLINUX look for their configuration, in their search order.
const CONFIGS: &[&str] = &[
    "/boot/isolinux/isolinux.cfg",
    "/isolinux/isolinux.cfg",
    "/boot/syslinux/isolinux.cfg",
    "/boot/syslinux/syslinux.cfg",
    "/syslinux/syslinux.cfg",
    "/isolinux.cfg",
    "/syslinux.cfg",
];

/// Kernel file extensions SYSLINUX runs as something other than a Linux kernel.
const NON_LINUX_EXT: &[&str] = &[".c32", ".com", ".cbt", ".bs", ".bss", ".bin", ".0", ".img"];

#[derive(Default)]
struct State {
    entries: Vec<MenuEntry>,
    /// Per entry: its own `append` was given (a global one applies otherwise).
    has_append: Vec<bool>,
    menu_default: Option<usize>,
    default_label: Option<String>,
    ontimeout: Option<String>,
    global_append: Option<String>,
    submenu_depth: usize,
    in_text: bool,
    /// Files included so far.
    includes: usize,
    /// Directory relative paths resolve against (that of the top configuration file).
    cwd: String,
}

/// Find and parse the first ISOLINUX/SYSLINUX configuration on the image: in the usual
/// places, else (as ISOLINUX itself does) in the directory of the El Torito BIOS boot image,
/// which is where e.g. openSUSE keeps it (`boot/x86_64/loader/`).
pub(super) fn find(iso: &Iso) -> Result<Option<Menu>> {
    for path in CONFIGS {
        if let Some(text) = read_config(iso, path)? {
            return Ok(Some(parse(iso, path, &text)?));
        }
    }
    let Some(dir) = boot_image_dir(iso) else {
        return Ok(None);
    };
    for name in ["isolinux.cfg", "syslinux.cfg"] {
        let path = resolve(&dir, name);
        if let Some(text) = read_config(iso, &path)? {
            return Ok(Some(parse(iso, &path, &text)?));
        }
    }
    Ok(None)
}

/// Directory of the file the El Torito BIOS entry boots, if it is a file on the image.
fn boot_image_dir(iso: &Iso) -> Option<String> {
    let catalog = iso.boot_catalog().ok().flatten()?;
    let lba = catalog
        .entries
        .iter()
        .find(|e| e.platform == crate::eltorito::Platform::X86Bios && e.bootable)?
        .load_lba;
    let mut found = None;
    // A damaged tree just means no fallback.
    let _ = iso.walk(|path, e| {
        if found.is_none() && !e.is_dir && e.extents.first().is_some_and(|x| x.lba == lba) {
            found = Some(dir_of(path));
        }
    });
    found
}

/// Parse a configuration whose text is `text` (read from `path`), following its includes.
pub(super) fn parse(iso: &Iso, path: &str, text: &str) -> Result<Menu> {
    let mut st = State {
        cwd: dir_of(path),
        ..Default::default()
    };
    parse_into(iso, &mut st, path, text, 0)?;
    let State {
        mut entries,
        has_append,
        menu_default,
        default_label,
        ontimeout,
        global_append,
        ..
    } = st;
    if let Some(g) = &global_append {
        for (e, has) in entries.iter_mut().zip(&has_append) {
            if !has {
                e.cmdline = g.clone();
                e.initrds
                    .extend(initrds_in(&e.cmdline).map(|p| resolve(&dir_of(path), p)));
            }
        }
    }
    let by_label = |l: &str| {
        // `default` may carry arguments ("default linux text"); the label is the first word.
        let l = l.split_whitespace().next().unwrap_or("");
        entries.iter().position(|e| e.label.eq_ignore_ascii_case(l))
    };
    let default = menu_default
        .or_else(|| default_label.as_deref().and_then(by_label))
        .or_else(|| ontimeout.as_deref().and_then(by_label));
    Ok(Menu {
        entries,
        default,
        config: path.to_string(),
    })
}

/// The paths listed by `initrd=` options of an append line.
fn initrds_in(append: &str) -> impl Iterator<Item = &str> {
    append
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("initrd="))
        .flat_map(|list| list.split(','))
        .filter(|p| !p.is_empty())
}

fn split_word(line: &str) -> (&str, &str) {
    match line.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (&line[..i], line[i..].trim()),
        None => (line, ""),
    }
}

fn parse_into(iso: &Iso, st: &mut State, path: &str, text: &str, depth: usize) -> Result<()> {
    for raw in text.lines() {
        let line = raw.trim();
        if st.in_text {
            if line.eq_ignore_ascii_case("endtext") {
                st.in_text = false;
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (kw, rest) = split_word(line);
        let kw = kw.to_ascii_lowercase();
        match kw.as_str() {
            "menu" => {
                let (sub, arg) = split_word(rest);
                match sub.to_ascii_lowercase().as_str() {
                    "label" => {
                        if let Some(e) = st.entries.last_mut() {
                            e.title = arg.replace('^', "");
                        }
                    }
                    "default" => st.menu_default = st.entries.len().checked_sub(1),
                    "hide" => {
                        if let Some(e) = st.entries.last_mut() {
                            e.hidden = true;
                        }
                    }
                    "begin" => st.submenu_depth += 1,
                    "end" => st.submenu_depth = st.submenu_depth.saturating_sub(1),
                    "include" => {
                        let file = split_word(arg).0;
                        include(iso, st, path, file, depth)?;
                    }
                    _ => {}
                }
            }
            "include" => {
                let file = split_word(rest).0;
                include(iso, st, path, file, depth)?;
            }
            "text" => st.in_text = true,
            "default" => st.default_label = Some(rest.to_string()),
            "ontimeout" => st.ontimeout = Some(rest.to_string()),
            "label" => {
                if st.entries.len() >= MAX_ENTRIES {
                    return Err(iso.corrupt(format!("{path}: more than {MAX_ENTRIES} labels")));
                }
                st.entries.push(MenuEntry {
                    label: rest.to_string(),
                    title: rest.to_string(),
                    in_submenu: st.submenu_depth > 0,
                    ..Default::default()
                });
                st.has_append.push(false);
            }
            "kernel" | "linux" => {
                let cwd = st.cwd.clone();
                if let Some(e) = st.entries.last_mut() {
                    let file = split_word(rest).0;
                    let lower = file.to_ascii_lowercase();
                    let linux = kw == "linux" || !NON_LINUX_EXT.iter().any(|x| lower.ends_with(x));
                    e.kernel = linux.then(|| resolve(&cwd, file));
                }
            }
            "localboot" | "com32" | "boot" | "bss" | "pxe" | "fdimage" | "comboot" | "config" => {
                if let Some(e) = st.entries.last_mut() {
                    e.kernel = None;
                }
            }
            "append" => {
                let value = if rest == "-" { "" } else { rest };
                let cwd = st.cwd.clone();
                match st.entries.last_mut() {
                    Some(e) => {
                        e.cmdline = value.to_string();
                        e.initrds
                            .extend(initrds_in(value).map(|p| resolve(&cwd, p)));
                        if let Some(h) = st.has_append.last_mut() {
                            *h = true;
                        }
                    }
                    None => st.global_append = Some(value.to_string()),
                }
            }
            "initrd" => {
                let cwd = st.cwd.clone();
                if let Some(e) = st.entries.last_mut() {
                    let list = split_word(rest).0;
                    e.initrds.extend(
                        list.split(',')
                            .filter(|p| !p.is_empty())
                            .map(|p| resolve(&cwd, p)),
                    );
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn include(iso: &Iso, st: &mut State, from: &str, file: &str, depth: usize) -> Result<()> {
    if file.is_empty() {
        return Ok(());
    }
    if depth >= MAX_INCLUDE_DEPTH {
        return Err(iso.corrupt(format!(
            "{from}: includes nested deeper than {MAX_INCLUDE_DEPTH} (include loop?)"
        )));
    }
    st.includes += 1;
    if st.includes > MAX_INCLUDES {
        return Err(iso.corrupt(format!(
            "{from}: more than {MAX_INCLUDES} included files (include loop?)"
        )));
    }
    let path = resolve(&st.cwd, file);
    match read_config(iso, &path)? {
        Some(text) => parse_into(iso, st, &path, &text, depth + 1),
        None => {
            log::warn!("{}: {from} includes {path}, which is missing", iso.name());
            Ok(())
        }
    }
}
