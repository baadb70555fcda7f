//! A VNC pointer reaches the virtio-input tablet (absolute, exact) of a guest that drives it.

mod vnc_input_common;
use vnc_input_common::run_with_vncdo;

#[test]
fn vncdotool_clicks_arrive_as_absolute_tablet_events() {
    let out = run_with_vncdo(
        "tablet",
        "tablet: ready",
        &["move", "512", "384", "click", "1"],
    );
    assert_eq!(
        out.line("tablet: ready "),
        Some("name=\"rvmm virtio tablet\" abs_size=20 abs_max=32767 abs_bits=0x3"),
        "{}",
        out.report()
    );
    let events: Vec<(u32, u32, u32)> = out
        .lines()
        .filter(|l| l.starts_with("tablet: event "))
        .map(|l| {
            let f = |k: &str| {
                l.split(' ')
                    .find_map(|w| w.strip_prefix(k))
                    .and_then(rvmm_tests::parse_num)
                    .unwrap() as u32
            };
            assert_eq!(f("len="), 8, "{l}");
            (f("type="), f("code="), f("value="))
        })
        .collect();
    // The 1024x768 screen maps onto 0..=32767 on both axes.
    let (x, y) = (512 * 32767 / 1023, 384 * 32767 / 767);
    assert!(events.contains(&(3, 0, x)), "ABS_X {x}: {events:?}");
    assert!(events.contains(&(3, 1, y)), "ABS_Y {y}: {events:?}");
    let press = events.iter().position(|e| *e == (1, 0x110, 1));
    let release = events.iter().position(|e| *e == (1, 0x110, 0));
    assert!(press.is_some() && release > press, "{events:?}");
    assert!(events.contains(&(0, 0, 0)), "SYN_REPORT: {events:?}");
}
