//! rvmm's CMOS RTC tells the guest the host's UTC time.

use rvmm_tests::{guest, rvmm};

/// Seconds since the Unix epoch for a proleptic Gregorian UTC date and time.
fn unix_time(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> i64 {
    let (y, mo) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) * 86_400 + h * 3600 + mi * 60 + s
}

/// Parse `YYYY-MM-DDTHH:MM:SS` into Unix seconds.
fn parse_time(t: &str) -> Option<i64> {
    let n: Vec<i64> = t
        .split(['-', 'T', ':'])
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    (n.len() == 6).then(|| unix_time(n[0], n[1], n[2], n[3], n[4], n[5]))
}

#[test]
fn epoch_arithmetic() {
    assert_eq!(unix_time(1970, 1, 1, 0, 0, 0), 0);
    assert_eq!(parse_time("2000-03-01T00:00:00"), Some(951_868_800));
    assert_eq!(parse_time("2026-12-01T08:11:16"), Some(1_796_112_676));
}

#[test]
fn rtc_matches_host_utc() {
    let out = rvmm().kernel(guest("rtc")).run();
    out.assert_pass();
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let guest = out.field("rtc: ", "time").and_then(parse_time);
    assert!(
        guest.is_some_and(|g| (g - host).abs() <= 10),
        "guest RTC differs from host UTC ({host})\n{}",
        out.report()
    );
    assert_eq!(
        out.field("rtc: ", "bcd"),
        Some("1"),
        "the contract says BCD by default\n{}",
        out.report()
    );
}
