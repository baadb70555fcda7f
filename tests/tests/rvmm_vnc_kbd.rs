//! VNC key presses and pointer moves (vncdotool) reach a guest's i8042: set-1 scancodes on
//! IRQ 1 and relative PS/2 mouse packets on IRQ 12.

mod vnc_input_common;
use vnc_input_common::run_with_vncdo;

#[test]
fn vncdotool_key_presses_arrive_as_scancodes() {
    let out = run_with_vncdo(
        "kbd",
        "kbd: ready",
        &[
            "move", "100", "100", "pause", "0.2", "move", "110", "95", "pause", "0.2", "type",
            "ab", "key", "enter",
        ],
    );
    let codes: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("kbd: scancode="))
        .collect();
    // a down/up, b down/up, Enter down/up.
    assert_eq!(
        codes,
        ["0x1e", "0x9e", "0x30", "0xb0", "0x1c", "0x9c"],
        "{}",
        out.report()
    );
    // The pointer went 10 right and 5 up (PS/2 y grows upwards), no button held.
    let (mut dx, mut dy, mut n) = (0, 0, 0);
    for l in out.lines().filter(|l| l.starts_with("kbd: mouse ")) {
        let f = |k: &str| {
            l.split(' ')
                .find_map(|w| w.strip_prefix(k))
                .and_then(|v| v.parse::<i32>().ok())
                .unwrap()
        };
        assert_eq!((f("buttons="), f("sync=")), (0, 1), "{l}");
        dx += f("dx=");
        dy += f("dy=");
        n += 1;
    }
    assert!(n >= 1, "no mouse packet\n{}", out.report());
    assert_eq!((dx, dy), (10, 5), "{}", out.report());
    assert!(
        out.field_u64("kbd: irqs=", "mouse_irqs") > Some(0),
        "{}",
        out.report()
    );
}
