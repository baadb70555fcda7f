//! Integration test support: builds the purpose-built guest kernels in `tests/guests/` (see
//! `build.rs` and `tests/guests/README.md`) and runs `rvmm` — or QEMU as an oracle — on them
//! with a timeout, capturing the guest's serial output and the exit status. The tests themselves
//! live in `tests/tests/`.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// Debug-exit value a guest writes to port 0xf4 when all its checks passed.
pub const EXIT_PASS: i32 = 0x10;
/// Debug-exit value for "some check failed" (the serial output has `FAIL:` lines).
pub const EXIT_FAIL: i32 = 0x11;
/// Debug-exit value for an unexpected CPU exception in the guest.
pub const EXIT_CRASH: i32 = 0x12;

/// Image formats a guest can be built in (declared in `tests/guests/<name>/formats`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// bzImage: 64-bit entry at +0x200 (rvmm), real-mode setup + code32_start (QEMU -kernel).
    BzImage,
    /// ELF with the Xen PVH note (32-bit entry, hvm_start_info).
    Pvh,
    /// Plain 64-bit ELF without the PVH note (64-bit entry at e_entry, boot_params).
    Elf64,
    /// Relocatable bzImage linked at 16 MiB with `pref_address` = 16 MiB (rvmm only: QEMU's
    /// -kernel always loads at 1 MiB).
    BzImageReloc,
}

impl Format {
    fn key(self) -> &'static str {
        match self {
            Format::BzImage => "bzimage",
            Format::Pvh => "pvh",
            Format::Elf64 => "elf64",
            Format::BzImageReloc => "bzimage-reloc",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Format::BzImage => "bzImage",
            Format::Pvh => "pvh.elf",
            Format::Elf64 => "elf",
            Format::BzImageReloc => "reloc.bzImage",
        }
    }
}

fn guest_entry(name: &str) -> &'static [&'static str] {
    GUESTS.iter().find(|g| g.0 == name).map(|g| g.1).unwrap_or_else(|| {
        let known: Vec<&str> = GUESTS.iter().map(|g| g.0).collect();
        panic!("no test guest `{name}` (built: {known:?}); add tests/guests/{name}/ with a `formats` file")
    })
}

/// Path of guest `name` in the first format its `formats` file lists.
pub fn guest(name: &str) -> PathBuf {
    let first = guest_entry(name)[0];
    let fmt = [
        Format::BzImage,
        Format::Pvh,
        Format::Elf64,
        Format::BzImageReloc,
    ]
    .into_iter()
    .find(|f| f.key() == first)
    .unwrap_or(Format::BzImage);
    guest_image(name, fmt)
}

/// Path of guest `name` built in `format`; panics when the guest does not declare that format.
pub fn guest_image(name: &str, format: Format) -> PathBuf {
    if !guest_entry(name).contains(&format.key()) {
        panic!(
            "test guest `{name}` is not built as {format:?}; add `{}` to its formats file",
            format.key()
        );
    }
    Path::new(env!("OUT_DIR"))
        .join("guests")
        .join(format!("{name}.{}", format.suffix()))
}

/// Directory holding the workspace's built binaries (the test executable's profile directory,
/// so `CARGO_TARGET_DIR` and the profile are respected).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of the `rvmm` binary: `$RVMM_BIN` if set, else beside the test executable. Panics with
/// a hint when it is not built (scripts/test.sh builds all binaries before `cargo test`).
pub fn rvmm_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RVMM_BIN") {
        return PathBuf::from(p);
    }
    let p = bin_dir().join("rvmm");
    if !p.is_file() {
        panic!(
            "rvmm binary not found at {}: build it first with `cargo build -p vmm --bin rvmm` \
             (same CARGO_TARGET_DIR and profile as the tests), or set RVMM_BIN",
            p.display()
        );
    }
    p
}

/// What a finished (or killed) VM run produced.
#[derive(Debug)]
pub struct Outcome {
    /// Process exit code; `None` when killed by a signal.
    pub status: Option<i32>,
    /// Signal that ended the process, if any.
    pub signal: Option<i32>,
    /// The run hit its timeout and was killed.
    pub timed_out: bool,
    /// The run was stopped because the `stop_when` condition was met.
    pub stopped: bool,
    /// Guest serial output (stdout), with `\r` removed.
    pub serial: String,
    /// The monitor's own messages (stderr).
    pub stderr: String,
    /// Wall time of the run.
    pub elapsed: Duration,
    qemu: bool,
}

impl Outcome {
    /// The value the guest wrote to the debug-exit port, decoded for QEMU's `(v << 1) | 1`.
    pub fn guest_exit(&self) -> Option<i32> {
        let s = self.status?;
        if self.qemu {
            (s & 1 == 1).then_some(s >> 1)
        } else {
            Some(s)
        }
    }

    /// Serial output lines.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.serial.lines()
    }

    /// First serial line starting with `prefix`, without the prefix.
    pub fn line(&self, prefix: &str) -> Option<&str> {
        self.lines().find_map(|l| l.strip_prefix(prefix))
    }

    /// Value of the first `key=value` field (space separated) on a serial line starting with
    /// `prefix`; lines with that prefix but without the key are skipped.
    pub fn field(&self, prefix: &str, key: &str) -> Option<&str> {
        self.lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .find_map(|rest| {
                rest.split_whitespace()
                    .find_map(|f| f.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            })
    }

    /// Numeric `key=value` field (decimal or 0x hex).
    pub fn field_u64(&self, prefix: &str, key: &str) -> Option<u64> {
        parse_num(self.field(prefix, key)?)
    }

    /// A readable dump for assertion messages.
    pub fn report(&self) -> String {
        format!(
            "status={:?} signal={:?} timed_out={} stopped={} elapsed={:?}\n--- serial ---\n{}\n--- stderr ---\n{}",
            self.status, self.signal, self.timed_out, self.stopped, self.elapsed, self.serial, self.stderr
        )
    }

    /// Panic with the report unless the guest ended with `RESULT: PASS` and [`EXIT_PASS`].
    pub fn assert_pass(&self) {
        assert!(!self.timed_out, "run timed out\n{}", self.report());
        assert!(
            self.serial.lines().any(|l| l == "RESULT: PASS"),
            "guest did not report RESULT: PASS\n{}",
            self.report()
        );
        assert_eq!(
            self.guest_exit(),
            Some(EXIT_PASS),
            "wrong exit status\n{}",
            self.report()
        );
    }
}

/// Parse `123` or `0x7b`.
pub fn parse_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

type StopFn = Box<dyn Fn(&str) -> bool + Send>;

/// Something done to a running monitor once the serial output contains a trigger.
enum Action {
    Send(Vec<u8>),
    Signal(i32),
}

/// A monitor invocation (rvmm or QEMU) with a timeout; build with [`rvmm`] or [`qemu`].
pub struct Vm {
    program: PathBuf,
    args: Vec<OsString>,
    timeout: Duration,
    stop_when: Option<StopFn>,
    actions: Vec<(String, Action)>,
    serial: Option<String>,
    qemu: bool,
}

/// Any other program run with the same harness (no implied arguments), e.g. `script` to give
/// rvmm a terminal.
pub fn command(program: impl Into<PathBuf>) -> Vm {
    Vm {
        program: program.into(),
        args: Vec::new(),
        timeout: Duration::from_secs(30),
        stop_when: None,
        actions: Vec::new(),
        serial: None,
        qemu: false,
    }
}

/// An rvmm run with `--serial stdio` (serial on stdout, logs on stderr; see [`Vm::serial`]).
pub fn rvmm() -> Vm {
    Vm {
        program: rvmm_bin(),
        args: Vec::new(),
        timeout: Duration::from_secs(30),
        stop_when: None,
        actions: Vec::new(),
        serial: Some("stdio".into()),
        qemu: false,
    }
}

/// A QEMU TCG run (`-M pc`, 512 MiB, serial on stdout, isa-debug-exit at 0xf4, no reboot).
pub fn qemu() -> Vm {
    let args = [
        "-accel",
        "tcg",
        "-M",
        "pc",
        "-m",
        "512",
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x01",
    ];
    Vm {
        program: PathBuf::from("qemu-system-x86_64"),
        args: args.iter().map(OsString::from).collect(),
        timeout: Duration::from_secs(60),
        stop_when: None,
        actions: Vec::new(),
        serial: None,
        qemu: true,
    }
}

impl Vm {
    /// Append one argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    /// Append several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// `--kernel PATH` (rvmm) or `-kernel PATH` (QEMU).
    pub fn kernel(self, p: impl AsRef<Path>) -> Self {
        let flag = if self.qemu { "-kernel" } else { "--kernel" };
        self.arg(flag).arg(p.as_ref())
    }

    /// `--initrd PATH` / `-initrd PATH`.
    pub fn initrd(self, p: impl AsRef<Path>) -> Self {
        let flag = if self.qemu { "-initrd" } else { "--initrd" };
        self.arg(flag).arg(p.as_ref())
    }

    /// `--cmdline STR` / `-append STR`.
    pub fn cmdline(self, c: &str) -> Self {
        let flag = if self.qemu { "-append" } else { "--cmdline" };
        self.arg(flag).arg(c)
    }

    /// `--memory SIZE` / `-m SIZE` (QEMU: the last -m wins).
    pub fn memory(self, m: &str) -> Self {
        let flag = if self.qemu { "-m" } else { "--memory" };
        self.arg(flag).arg(m)
    }

    /// `--cpus N` / `-smp N`.
    pub fn cpus(self, n: u32) -> Self {
        let flag = if self.qemu { "-smp" } else { "--cpus" };
        self.arg(flag).arg(n.to_string())
    }

    /// Kill the run after `t` (default 30 s for rvmm, 60 s for QEMU).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Stop (kill) the run as soon as the serial output so far satisfies `f`.
    pub fn stop_when(mut self, f: impl Fn(&str) -> bool + Send + 'static) -> Self {
        self.stop_when = Some(Box::new(f));
        self
    }

    /// rvmm's `--serial` value (default `stdio`); `None` leaves the flag out.
    pub fn serial(mut self, spec: Option<&str>) -> Self {
        self.serial = spec.map(str::to_owned);
        self
    }

    /// Write `bytes` to the monitor's stdin (the guest's serial input) once the serial output
    /// contains `trigger`. Sends happen in the order given; stdin is closed after the last one.
    pub fn send_when(mut self, trigger: &str, bytes: &[u8]) -> Self {
        self.actions
            .push((trigger.to_owned(), Action::Send(bytes.to_owned())));
        self
    }

    /// Send signal `sig` (e.g. `libc::SIGTERM`) to the monitor once the serial output contains
    /// `trigger` (in order with [`Vm::send_when`] actions).
    pub fn signal_when(mut self, trigger: &str, sig: i32) -> Self {
        self.actions.push((trigger.to_owned(), Action::Signal(sig)));
        self
    }

    /// The program's arguments as run: the caller's, plus `--serial` for rvmm.
    fn command_args(&self) -> Vec<OsString> {
        let mut args = self.args.clone();
        // QEMU uses the first accelerator that works: a caller's own `-accel kvm` after the
        // default `-accel tcg` would silently run under TCG, so the caller's choice replaces it.
        if self.qemu
            && args.first().is_some_and(|a| a == "-accel")
            && args.iter().skip(2).any(|a| a == "-accel")
        {
            args.drain(..2);
        }
        if let Some(spec) = &self.serial {
            args.extend(["--serial".into(), spec.into()]);
        }
        args
    }

    /// Run to completion, timeout or stop condition; never hangs. Panics only when the program
    /// cannot be started.
    pub fn run(self) -> Outcome {
        let start = Instant::now();
        let mut sends_left = self
            .actions
            .iter()
            .filter(|a| matches!(a.1, Action::Send(_)))
            .count();
        let args = self.command_args();
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(&self.program)
            .args(&args)
            // Own process group, so that helpers the program starts are cleaned up with it.
            .process_group(0)
            .stdin(if sends_left > 0 {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        let serial = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = [
            spawn_reader(
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
                &serial,
            ),
            spawn_reader(
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
                &stderr,
            ),
        ];
        let mut stdin = child.stdin.take();
        let mut actions = self.actions.into_iter().peekable();
        let (mut timed_out, mut stopped) = (false, false);
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) => {}
                Err(_) => break None,
            }
            if start.elapsed() > self.timeout {
                timed_out = true;
            } else if self.stop_when.is_some() || actions.peek().is_some() {
                let text = clean(&serial.lock().map(|s| s.clone()).unwrap_or_default());
                if let Some(f) = &self.stop_when {
                    stopped = f(&text);
                }
                if actions
                    .peek()
                    .is_some_and(|(trigger, _)| text.contains(trigger.as_str()))
                {
                    match actions.next().map(|a| a.1) {
                        Some(Action::Send(bytes)) => {
                            sends_left -= 1;
                            if let Some(pipe) = stdin.as_mut() {
                                use std::io::Write;
                                // A monitor that stopped reading must not fail the harness.
                                let _ = pipe.write_all(&bytes).and_then(|_| pipe.flush());
                            }
                        }
                        Some(Action::Signal(sig)) => {
                            // SAFETY: kill(2) on our own child's pid; no memory is involved.
                            unsafe { libc::kill(child.id() as libc::pid_t, sig) };
                        }
                        None => {}
                    }
                    if sends_left == 0 {
                        stdin = None;
                    }
                }
            }
            if timed_out || stopped {
                kill_group(child.id());
                break child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // Leftover processes of the group would keep the pipes open: end them, then give the
        // readers a bounded time to drain.
        kill_group(child.id());
        let drain = Instant::now() + Duration::from_secs(2);
        while readers.iter().any(|r| !r.is_finished()) && Instant::now() < drain {
            std::thread::sleep(Duration::from_millis(5));
        }
        use std::os::unix::process::ExitStatusExt;
        let text =
            |b: &Arc<Mutex<Vec<u8>>>| clean(&b.lock().map(|s| s.clone()).unwrap_or_default());
        Outcome {
            status: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            timed_out,
            stopped,
            serial: text(&serial),
            stderr: text(&stderr),
            elapsed: start.elapsed(),
            qemu: self.qemu,
        }
    }
}

/// SIGKILL the process group led by `pid` (the run's child and anything it started).
fn kill_group(pid: u32) {
    // SAFETY: kill(2) with a negative pid signals the process group we created; no memory is
    // involved, and a group that is already gone just returns ESRCH.
    unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
}

fn clean(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace('\r', "")
}

fn spawn_reader(
    src: Option<Box<dyn Read + Send>>,
    buf: &Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    let buf = Arc::clone(buf);
    std::thread::spawn(move || {
        let Some(mut src) = src else { return };
        let mut chunk = [0u8; 4096];
        while let Ok(n) = src.read(&mut chunk) {
            if n == 0 {
                break;
            }
            if let Ok(mut b) = buf.lock() {
                b.extend_from_slice(&chunk[..n]);
            }
        }
    })
}

/// FNV-1a 32-bit hash, as the guests compute it (to check initrd contents).
pub fn fnv1a32(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

/// True when QEMU (the oracle) is installed.
pub fn have_qemu() -> bool {
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok()
}

/// Run `qemu-img` (the image oracle) with `args`; panics with its output unless it succeeds.
/// Returns its stdout.
pub fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("run qemu-img");
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kills the child on drop, so a failed assertion leaves nothing running.
pub struct Reap(pub Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A VNC display number whose port (5900 + N) is free now, N >= 50.
pub fn free_display() -> u16 {
    for _ in 0..200 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().unwrap().port();
        if port >= 5950 {
            return port - 5900;
        }
    }
    panic!("no free TCP port above 5950");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vm {
        command("sh")
            .args(["-c", script])
            .timeout(Duration::from_secs(10))
    }

    #[test]
    fn timeout_kills_and_never_hangs() {
        let out = sh("echo started; sleep 100")
            .timeout(Duration::from_millis(300))
            .run();
        assert!(out.timed_out, "{}", out.report());
        assert!(out.elapsed < Duration::from_secs(5), "{}", out.report());
        assert_eq!(out.serial, "started\n");
        assert_eq!(out.signal, Some(libc::SIGKILL));
    }

    #[test]
    fn exit_status_stdout_and_stderr_are_separate() {
        let out = sh("printf 'a\\r\\nb\\n'; echo oops >&2; exit 3").run();
        assert_eq!(out.status, Some(3));
        assert_eq!(out.guest_exit(), Some(3));
        assert_eq!(out.serial, "a\nb\n", "\\r is dropped");
        assert_eq!(out.stderr, "oops\n");
        assert!(!out.timed_out && !out.stopped);
    }

    #[test]
    fn stop_when_ends_the_run_early() {
        let out = sh("echo one; echo two; sleep 100")
            .stop_when(|s| s.contains("two"))
            .run();
        assert!(out.stopped && !out.timed_out, "{}", out.report());
        assert!(out.elapsed < Duration::from_secs(5));
    }

    #[test]
    fn send_when_feeds_stdin_after_the_trigger() {
        let out = sh("echo ready; read x; echo got=$x")
            .send_when("ready", b"hello\n")
            .run();
        assert_eq!(out.status, Some(0), "{}", out.report());
        assert_eq!(out.line("got="), Some("hello"));
    }

    #[test]
    fn signal_when_delivers_the_signal() {
        let out = sh("trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done")
            .signal_when("ready", libc::SIGTERM)
            .run();
        assert_eq!(out.status, Some(7), "{}", out.report());
    }

    #[test]
    fn a_callers_accelerator_replaces_qemus_default_tcg() {
        let default = qemu().command_args();
        assert_eq!(&default[..2], &["-accel", "tcg"]);
        let kvm = qemu().args(["-accel", "kvm"]).command_args();
        assert_eq!(kvm.iter().filter(|a| *a == "-accel").count(), 1);
        assert!(!kvm.iter().any(|a| a == "tcg"));
        assert_eq!(&kvm[kvm.len() - 2..], &["-accel", "kvm"]);
    }

    #[test]
    fn qemu_exit_codes_decode_debug_exit() {
        let mut out = sh("exit 33").run();
        out.qemu = true;
        assert_eq!(out.guest_exit(), Some(0x10));
        out.status = Some(0);
        assert_eq!(
            out.guest_exit(),
            None,
            "an even status is QEMU's own, not the guest's"
        );
    }

    #[test]
    fn fields_and_numbers() {
        let out = sh("echo 'x: a=1'; echo 'e820: entries=4 ram=0x1ff top=7'").run();
        assert_eq!(out.field_u64("e820: ", "ram"), Some(0x1ff));
        assert_eq!(out.field_u64("e820: ", "top"), Some(7));
        assert_eq!(out.field("e820: ", "missing"), None);
        assert_eq!(out.field("x: ", "a"), Some("1"));
        assert_eq!(parse_num("0x10"), Some(16));
        assert_eq!(parse_num("zz"), None);
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn every_declared_guest_image_exists() {
        assert!(!GUESTS.is_empty());
        for (name, formats) in GUESTS {
            assert!(guest(name).is_file(), "{name}");
            for f in [
                Format::BzImage,
                Format::Pvh,
                Format::Elf64,
                Format::BzImageReloc,
            ] {
                if formats.contains(&f.key()) {
                    assert!(guest_image(name, f).is_file(), "{name} {f:?}");
                }
            }
        }
    }
}
