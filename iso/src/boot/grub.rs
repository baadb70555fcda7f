//! GRUB 2 configuration: `menuentry`/`submenu` blocks with `linux`/`linuxefi`/`linux16` and
//! `initrd`/`initrdefi`/`initrd16`, `set default=` (index, title, id or `submenu>entry` path),
//! `set var=value` for `$var` in command lines, and `source`/`configfile` includes. Functions
//! are skipped; both branches of `if` blocks are read (installer menus rarely depend on them).

use std::collections::HashMap;

use super::{read_config, resolve, Menu, MenuEntry, MAX_ENTRIES, MAX_INCLUDES, MAX_INCLUDE_DEPTH};
use crate::error::Result;
use crate::image::Iso;

/// GRUB configurations of installer ISOs, tried in order (BIOS `boot/grub` first).
const CONFIGS: &[&str] = &[
    "/boot/grub/grub.cfg",
    "/EFI/BOOT/grub.cfg",
    "/boot/grub2/grub.cfg",
];

/// menuentry options that take an argument.
const OPTS_WITH_ARG: &[&str] = &["--class", "--users", "--hotkey", "--id", "--source"];

/// Parse every GRUB configuration present.
pub(super) fn find(iso: &Iso) -> Result<Vec<Menu>> {
    let mut out = Vec::new();
    for path in CONFIGS {
        if let Some(text) = read_config(iso, path)? {
            out.push(parse(iso, path, &text)?);
        }
    }
    Ok(out)
}

/// What a `{ … }` block being read is.
enum Block {
    Entry,
    Submenu,
    /// A function body or unknown braces: contents ignored.
    Skip,
}

#[derive(Default)]
struct State {
    entries: Vec<MenuEntry>,
    /// (title, id, index of first entry, index after last) of each top-level item, in order:
    /// GRUB numbers top-level menuentries and submenus together.
    top: Vec<TopItem>,
    stack: Vec<Block>,
    vars: HashMap<String, String>,
    default: Option<String>,
    /// A block whose `{` is on the next line.
    pending: Option<Block>,
    /// Files sourced so far.
    includes: usize,
}

struct TopItem {
    title: String,
    id: Option<String>,
    first: usize,
    is_submenu: bool,
}

/// Split a GRUB command into words, honouring quotes and backslashes; quotes are removed.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    cur.push(q);
                }
            }
            '"' => {
                in_word = true;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                cur.push(n);
                            }
                        }
                        _ => cur.push(q),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() || c == ';' => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// Replace `$name` and `${name}` with variables set earlier; unknown ones are left as written.
fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match vars.get(name) {
            Some(v) if !name.is_empty() => {
                out.push_str(v);
                rest = &after[len..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Strip a GRUB device prefix: `($root)/images/x` and `(cd0)/x` are both `/x` on this image.
fn strip_device(path: &str) -> &str {
    if path.starts_with('(') {
        if let Some(i) = path.find(')') {
            return &path[i + 1..];
        }
    }
    path
}

/// Command line after the kernel path, exactly as written (escapes such as `\x20` kept).
fn raw_args<'a>(line: &'a str, kw: &str) -> (&'a str, &'a str) {
    let after_kw = line[kw.len()..].trim_start();
    let end = after_kw
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(after_kw.len());
    (&after_kw[..end], after_kw[end..].trim())
}

/// Title and `--id` of a menuentry/submenu command.
fn entry_header(line: &str, vars: &HashMap<String, String>) -> (String, Option<String>) {
    let w = words(&expand(line, vars));
    let mut title = None;
    let mut id = None;
    let mut i = 1;
    while i < w.len() {
        let a = &w[i];
        if a == "{" {
            break;
        }
        if let Some((opt, val)) = a.split_once('=').filter(|(o, _)| o.starts_with("--")) {
            if opt == "--id" {
                id = Some(val.to_string());
            }
        } else if OPTS_WITH_ARG.contains(&a.as_str()) {
            if a == "--id" {
                id = w.get(i + 1).cloned();
            }
            i += 1;
        } else if a.starts_with("--") {
        } else if title.is_none() {
            title = Some(a.clone());
        }
        i += 1;
    }
    (title.unwrap_or_default(), id)
}

/// Parse one configuration (and what it sources).
pub(super) fn parse(iso: &Iso, path: &str, text: &str) -> Result<Menu> {
    let mut st = State::default();
    parse_into(iso, &mut st, path, text, 0)?;
    let default = st
        .default
        .as_deref()
        .map(|d| expand(d, &st.vars))
        .and_then(|d| resolve_default(&st, &d));
    let default = default.or(if st.entries.is_empty() { None } else { Some(0) });
    Ok(Menu {
        entries: st.entries,
        default,
        config: path.to_string(),
    })
}

/// Entry index GRUB's `default` names: a top-level number, a title or id, or `a>b` paths.
fn resolve_default(st: &State, d: &str) -> Option<usize> {
    let first = d.split('>').next().unwrap_or(d);
    let item = match first.parse::<usize>() {
        Ok(n) => st.top.get(n),
        Err(_) => st
            .top
            .iter()
            .find(|t| t.title == first || t.id.as_deref() == Some(first)),
    }?;
    if !item.is_submenu {
        return Some(item.first);
    }
    // Inside a submenu: the part after '>' (number, title or id) or its first entry.
    let inner = d.split_once('>').map(|(_, r)| r);
    let end = st
        .top
        .iter()
        .find(|t| t.first > item.first)
        .map_or(st.entries.len(), |t| t.first);
    let members = item.first..end;
    match inner {
        None => (item.first < end).then_some(item.first),
        Some(name) => match name.parse::<usize>() {
            Ok(n) => members.clone().nth(n),
            Err(_) => members
                .clone()
                .find(|&i| st.entries[i].title == name || st.entries[i].label == name),
        },
    }
}

/// Enter `block`: now when `line` opens it with `{`, else when the next line is `{`. A
/// one-line body ("menuentry 'x' { linux … }") is rare; it is entered and left at once.
fn open(st: &mut State, line: &str, block: Block) {
    if line.ends_with('{') {
        st.stack.push(block);
    } else if !line.contains('{') {
        st.pending = Some(block);
    }
}

fn parse_into(iso: &Iso, st: &mut State, path: &str, text: &str, depth: usize) -> Result<()> {
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let kw = line.split_whitespace().next().unwrap_or("");
        let skipping = st.stack.iter().any(|b| matches!(b, Block::Skip));
        if line == "}" || kw == "}" {
            st.stack.pop();
            continue;
        }
        if line == "{" {
            let block = st.pending.take().unwrap_or(Block::Skip);
            st.stack.push(block);
            continue;
        }
        st.pending = None;
        if skipping {
            // Track nested braces inside a skipped body.
            if line.ends_with('{') {
                st.stack.push(Block::Skip);
            }
            continue;
        }
        match kw {
            "menuentry" | "submenu" => {
                if st.entries.len() >= MAX_ENTRIES {
                    return Err(iso.corrupt(format!("{path}: more than {MAX_ENTRIES} entries")));
                }
                let (title, id) = entry_header(line, &st.vars);
                let in_sub = st.stack.iter().any(|b| matches!(b, Block::Submenu));
                let nested_entry = st.stack.iter().any(|b| matches!(b, Block::Entry));
                if nested_entry {
                    // A menuentry inside a menuentry is not a menu item GRUB shows.
                    open(st, line, Block::Skip);
                    continue;
                }
                if !in_sub {
                    st.top.push(TopItem {
                        title: title.clone(),
                        id: id.clone(),
                        first: st.entries.len(),
                        is_submenu: kw == "submenu",
                    });
                }
                if kw == "submenu" {
                    open(st, line, Block::Submenu);
                } else {
                    st.entries.push(MenuEntry {
                        label: id.unwrap_or_else(|| title.clone()),
                        title,
                        in_submenu: in_sub,
                        ..Default::default()
                    });
                    open(st, line, Block::Entry);
                }
            }
            "function" => open(st, line, Block::Skip),
            "linux" | "linuxefi" | "linux16" | "linuxx64" => {
                if let (Some(Block::Entry), Some(e)) = (st.stack.last(), st.entries.last_mut()) {
                    let (file, args) = raw_args(line, kw);
                    let file = expand(file, &st.vars);
                    e.kernel = Some(resolve("/", strip_device(&file)));
                    e.cmdline = expand(args, &st.vars);
                }
            }
            "initrd" | "initrdefi" | "initrd16" => {
                if let (Some(Block::Entry), Some(e)) = (st.stack.last(), st.entries.last_mut()) {
                    for w in words(&expand(line, &st.vars)).iter().skip(1) {
                        e.initrds.push(resolve("/", strip_device(w)));
                    }
                }
            }
            "set" | "export" if st.stack.is_empty() || kw == "set" => {
                let w = words(line);
                if let Some((name, value)) = w.get(1).and_then(|a| a.split_once('=')) {
                    let value = expand(value, &st.vars);
                    if name == "default" && st.stack.is_empty() {
                        st.default = Some(value.clone());
                    }
                    st.vars.insert(name.to_string(), value);
                }
            }
            "source" | "configfile" => {
                if let Some(file) = words(&expand(line, &st.vars)).get(1) {
                    let file = resolve("/", strip_device(file));
                    st.includes += 1;
                    if depth >= MAX_INCLUDE_DEPTH || st.includes > MAX_INCLUDES {
                        return Err(iso.corrupt(format!(
                            "{path}: sources nested deeper than {MAX_INCLUDE_DEPTH} or more than \
                             {MAX_INCLUDES} files (loop?)"
                        )));
                    }
                    if file != path {
                        if let Some(t) = read_config(iso, &file)? {
                            parse_into(iso, st, &file, &t, depth + 1)?;
                        }
                    }
                }
            }
            _ => {
                if line.ends_with('{') {
                    st.stack.push(Block::Skip);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_unquote_and_split() {
        assert_eq!(
            words(r#"menuentry --hotkey=g 'Graphical install' "a \"b\"" x\ y"#),
            vec![
                "menuentry",
                "--hotkey=g",
                "Graphical install",
                "a \"b\"",
                "x y"
            ]
        );
    }

    #[test]
    fn expand_known_variables_only() {
        let mut vars = HashMap::new();
        vars.insert("lbl".to_string(), "CentOS\\x207".to_string());
        assert_eq!(
            expand("a=$lbl b=${lbl} c=$nope", &vars),
            "a=CentOS\\x207 b=CentOS\\x207 c=$nope"
        );
        assert_eq!(expand("${unclosed", &vars), "${unclosed");
    }

    #[test]
    fn raw_args_keep_escapes() {
        let line =
            r"linuxefi /images/pxeboot/vmlinuz inst.stage2=hd:LABEL=CentOS\x207\x20x86_64 quiet";
        assert_eq!(
            raw_args(line, "linuxefi"),
            (
                "/images/pxeboot/vmlinuz",
                r"inst.stage2=hd:LABEL=CentOS\x207\x20x86_64 quiet"
            )
        );
    }
}
