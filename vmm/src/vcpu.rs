//! vCPUs: initial state (CPUID, MSRs, FPU, LAPIC, boot registers) and the run loop that
//! dispatches exits to the buses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use kvm_bindings::{kvm_mp_state, CpuId, Msrs, KVM_MP_STATE_UNINITIALIZED};
use kvm_ioctls::{VcpuExit, VcpuFd};

use arch::cpuid::{CpuModel, CpuidConfig};
use devices::bus::Bus;

use crate::boot::BootEntry;
use crate::exit::{EventSender, VmEvent};

/// The port-I/O and MMIO buses every vCPU dispatches to. Write-locked only to (re)map a
/// device, for example when the guest moves a PCI BAR.
#[derive(Default)]
pub struct Buses {
    /// Port I/O.
    pub pio: RwLock<Bus>,
    /// Memory-mapped I/O (everything that is not RAM).
    pub mmio: RwLock<Bus>,
}

impl Buses {
    fn pio(&self) -> std::sync::RwLockReadGuard<'_, Bus> {
        self.pio.read().unwrap_or_else(|p| p.into_inner())
    }
    fn mmio(&self) -> std::sync::RwLockReadGuard<'_, Bus> {
        self.mmio.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Static inputs for configuring one vCPU.
pub struct VcpuSetup<'a> {
    /// Index = APIC ID.
    pub index: u32,
    /// vCPUs in the VM.
    pub cpus: u32,
    /// CPU model.
    pub model: CpuModel,
    /// KVM's supported CPUID.
    pub supported: &'a CpuId,
    /// KVM emulates the TSC-deadline timer.
    pub tsc_deadline: bool,
    /// Boot entry for the BSP; `None` for APs, which wait for INIT-SIPI.
    pub boot: Option<BootEntry>,
}

/// Set the initial state of `fd`.
pub fn configure(fd: &VcpuFd, s: &VcpuSetup<'_>) -> Result<()> {
    let i = s.index;
    let entries = arch::cpuid::vcpu_cpuid(
        s.supported.as_slice(),
        &CpuidConfig {
            cpu_index: i,
            cpus: s.cpus,
            model: s.model,
            tsc_deadline: s.tsc_deadline,
        },
    );
    let cpuid = CpuId::from_entries(&entries)
        .map_err(|e| anyhow::anyhow!("vCPU {i}: cannot build CPUID ({e:?})"))?;
    fd.set_cpuid2(&cpuid)
        .with_context(|| format!("vCPU {i}: KVM_SET_CPUID2 failed"))?;

    let msrs = arch::regs::boot_msrs();
    let wrapped = Msrs::from_entries(&msrs)
        .map_err(|e| anyhow::anyhow!("vCPU {i}: cannot build the MSR list ({e:?})"))?;
    let n = fd
        .set_msrs(&wrapped)
        .with_context(|| format!("vCPU {i}: KVM_SET_MSRS failed"))?;
    if n != msrs.len() {
        // Some hosts (nested, software-assisted) refuse a few; the guest copes without them.
        log::warn!(
            "vCPU {i}: KVM accepted only {n} of {} boot MSRs (first refused: {:#x})",
            msrs.len(),
            msrs[n].index
        );
    }
    fd.set_fpu(&arch::regs::boot_fpu())
        .with_context(|| format!("vCPU {i}: KVM_SET_FPU failed"))?;
    let mut lapic = fd
        .get_lapic()
        .with_context(|| format!("vCPU {i}: KVM_GET_LAPIC failed"))?;
    arch::regs::setup_lint(&mut lapic);
    fd.set_lapic(&lapic)
        .with_context(|| format!("vCPU {i}: KVM_SET_LAPIC failed"))?;

    match s.boot {
        Some(b) => {
            let mut sregs = fd
                .get_sregs()
                .with_context(|| format!("vCPU {i}: KVM_GET_SREGS failed"))?;
            arch::regs::setup_sregs(&mut sregs, b.mode);
            fd.set_sregs(&sregs)
                .with_context(|| format!("vCPU {i}: KVM_SET_SREGS failed"))?;
            fd.set_regs(&arch::regs::boot_regs(b.mode, b.entry, b.info_addr))
                .with_context(|| format!("vCPU {i}: KVM_SET_REGS failed"))?;
        }
        None => {
            let st = kvm_mp_state {
                mp_state: KVM_MP_STATE_UNINITIALIZED,
            };
            if let Err(e) = fd.set_mp_state(st) {
                log::warn!("vCPU {i}: cannot put the AP in wait-for-SIPI: {e}");
            }
        }
    }
    Ok(())
}

/// A readable dump of the vCPU's registers, for fatal errors.
pub fn dump_registers(fd: &VcpuFd) -> String {
    let mut s = String::new();
    match fd.get_regs() {
        Ok(r) => {
            s += &format!(
                "rip={:#018x} rsp={:#018x} rflags={:#010x}\n\
             rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}\n\
             rsi={:#018x} rdi={:#018x} rbp={:#018x}\n\
             r8 ={:#018x} r9 ={:#018x} r10={:#018x} r11={:#018x}\n\
             r12={:#018x} r13={:#018x} r14={:#018x} r15={:#018x}\n",
                r.rip,
                r.rsp,
                r.rflags,
                r.rax,
                r.rbx,
                r.rcx,
                r.rdx,
                r.rsi,
                r.rdi,
                r.rbp,
                r.r8,
                r.r9,
                r.r10,
                r.r11,
                r.r12,
                r.r13,
                r.r14,
                r.r15
            )
        }
        Err(e) => s += &format!("(registers unavailable: {e})\n"),
    }
    match fd.get_sregs() {
        Ok(r) => {
            s += &format!(
                "cs={:#06x} base={:#x} l={} db={}  ss={:#06x} ds={:#06x}\n\
             cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}\n\
             gdt={:#x}/{:#x} idt={:#x}/{:#x}",
                r.cs.selector,
                r.cs.base,
                r.cs.l,
                r.cs.db,
                r.ss.selector,
                r.ds.selector,
                r.cr0,
                r.cr2,
                r.cr3,
                r.cr4,
                r.efer,
                r.gdt.base,
                r.gdt.limit,
                r.idt.base,
                r.idt.limit
            )
        }
        Err(e) => s += &format!("(segment registers unavailable: {e})"),
    }
    s
}

/// Describe a KVM_EXIT_INTERNAL_ERROR from the suberror KVM reports.
fn internal_error(fd: &mut VcpuFd) -> String {
    let run = fd.get_kvm_run();
    // SAFETY: after KVM_EXIT_INTERNAL_ERROR the `internal` member of the exit union is the
    // one KVM filled in.
    let (sub, n, data) = unsafe {
        let i = &run.__bindgen_anon_1.internal;
        (i.suberror, i.ndata, i.data)
    };
    let what = match sub {
        kvm_bindings::KVM_INTERNAL_ERROR_EMULATION => "instruction emulation failed",
        kvm_bindings::KVM_INTERNAL_ERROR_SIMUL_EX => "exception while delivering an exception",
        kvm_bindings::KVM_INTERNAL_ERROR_DELIVERY_EV => "event delivery failed",
        _ => "unknown suberror",
    };
    let n = (n as usize).min(data.len());
    format!("KVM internal error {sub} ({what}), data {:x?}", &data[..n])
}

/// Rate-limits "unhandled access" logs so a probing guest cannot flood stderr.
#[derive(Default)]
struct Unhandled {
    count: u64,
}

impl Unhandled {
    fn note(&mut self, what: std::fmt::Arguments<'_>) {
        self.count += 1;
        if self.count <= 20 {
            log::debug!("unhandled {what}");
        }
    }
}

/// Run `fd` until `stop` is set or the guest does something that ends the VM.
pub fn run(
    mut fd: VcpuFd,
    index: u32,
    buses: Arc<Buses>,
    events: EventSender,
    stop: Arc<AtomicBool>,
) {
    let mut unhandled = Unhandled::default();
    let fatal = |fd: &VcpuFd, why: String| {
        let regs = dump_registers(fd);
        let _ = events.send(VmEvent::Fatal(format!("vCPU {index}: {why}\n{regs}")));
    };
    log::debug!("vCPU {index}: entering the guest");
    while !stop.load(Ordering::Acquire) {
        let exit = match fd.run() {
            Ok(e) => e,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => {
                fatal(&fd, format!("KVM_RUN failed: {e}"));
                return;
            }
        };
        match exit {
            VcpuExit::IoIn(port, data) => {
                if !buses.pio().read(u64::from(port), data) {
                    data.fill(0xff);
                    unhandled.note(format_args!("port read {port:#x}"));
                }
            }
            VcpuExit::IoOut(port, data) => {
                if !buses.pio().write(u64::from(port), data) {
                    unhandled.note(format_args!("port write {port:#x} = {data:x?}"));
                }
            }
            VcpuExit::MmioRead(addr, data) => {
                if !buses.mmio().read(addr, data) {
                    data.fill(0xff);
                    unhandled.note(format_args!("MMIO read {addr:#x}"));
                }
            }
            VcpuExit::MmioWrite(addr, data) => {
                if !buses.mmio().write(addr, data) {
                    unhandled.note(format_args!("MMIO write {addr:#x} = {data:x?}"));
                }
            }
            // With the in-kernel LAPIC, HLT is handled by KVM; an exit here is harmless.
            VcpuExit::Hlt => {}
            VcpuExit::Shutdown => {
                log::info!("vCPU {index}: triple fault (shutdown); resetting the machine");
                let _ = events.send(VmEvent::Reset);
                return;
            }
            VcpuExit::SystemEvent(kind, _) => {
                let ev = match kind {
                    kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => VmEvent::PowerOff,
                    kvm_bindings::KVM_SYSTEM_EVENT_RESET => VmEvent::Reset,
                    k => VmEvent::Fatal(format!("vCPU {index}: guest crash system event {k}")),
                };
                let _ = events.send(ev);
                return;
            }
            VcpuExit::InternalError => {
                let why = internal_error(&mut fd);
                fatal(&fd, why);
                return;
            }
            VcpuExit::FailEntry(reason, cpu) => {
                fatal(
                    &fd,
                    format!("VM entry failed: hardware reason {reason:#x} on CPU {cpu}"),
                );
                return;
            }
            VcpuExit::Intr => {}
            other => {
                let why = format!("unhandled KVM exit {other:?}");
                fatal(&fd, why);
                return;
            }
        }
    }
    if log::log_enabled!(log::Level::Debug) {
        log::debug!("vCPU {index} stopped:\n{}", dump_registers(&fd));
    }
}
