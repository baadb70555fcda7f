//! Parsing of qemu-img style sizes (`10G`, `512k`) and `-o key=value,…` option lists.

use anyhow::{bail, Result};

/// Parse a size with an optional k/M/G/T/P/E suffix (powers of 1024; `b` or none for bytes).
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_lowercase() {
                'b' => 1,
                'k' => 1 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                't' => 1 << 40,
                'p' => 1 << 50,
                'e' => 1 << 60,
                _ => bail!("invalid size suffix in '{s}' (use k, M, G, T, P or E)"),
            };
            (&s[..s.len() - 1], m)
        }
        _ => (s, 1),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid size '{s}'"))?;
    if v.is_nan() || v < 0.0 || v * mult as f64 > 9.2e18 {
        bail!("invalid size '{s}': must be between 0 and 8 EiB");
    }
    Ok((v * mult as f64).round() as u64)
}

/// Split `-o` option strings into key/value pairs (a bare key means `on`; `,,` escapes a comma).
pub fn parse_opts(list: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for o in list {
        let mut cur = String::new();
        let mut parts = Vec::new();
        let mut chars = o.chars().peekable();
        while let Some(c) = chars.next() {
            if c == ',' {
                if chars.peek() == Some(&',') {
                    chars.next();
                    cur.push(',');
                } else {
                    parts.push(std::mem::take(&mut cur));
                }
            } else {
                cur.push(c);
            }
        }
        parts.push(cur);
        for p in parts.into_iter().filter(|p| !p.is_empty()) {
            match p.split_once('=') {
                Some((k, v)) => out.push((k.to_string(), v.to_string())),
                None => out.push((p, "on".to_string())),
            }
        }
    }
    Ok(out)
}

/// Parse an on/off flag value.
pub fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => bail!("parameter '{key}' expects 'on' or 'off', not '{v}'"),
    }
}

/// Human-readable size as qemu prints it ("1 GiB", "196 KiB", "1.5 MiB").
pub fn human_size(v: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut i = 0;
    let mut d = 1u64;
    while i + 1 < UNITS.len() && v >= d.saturating_mul(1000) {
        d = d.saturating_mul(1024);
        i += 1;
    }
    let x = v as f64 / d as f64;
    // %0.3g: three significant digits, no trailing zeroes.
    let s = if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s} {}", UNITS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_options() {
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("1.5M").unwrap(), 3 << 19);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12x").is_err());
        assert!(parse_size("-1").is_err());
        let o = parse_opts(&[
            "cluster_size=4k,lazy_refcounts".into(),
            "backing_file=a,,b".into(),
        ])
        .unwrap();
        assert_eq!(
            o,
            vec![
                ("cluster_size".into(), "4k".into()),
                ("lazy_refcounts".into(), "on".into()),
                ("backing_file".into(), "a,b".into())
            ]
        );
        assert_eq!(human_size(1 << 30), "1 GiB");
        assert_eq!(human_size(200704), "196 KiB");
        assert_eq!(human_size(3 << 19), "1.5 MiB");
        assert_eq!(human_size(0), "0 B");
    }
}
