//! Building and running one VM: KVM set-up, memory, the legacy PC devices, vCPUs, and the
//! loop that waits for the event that ends the VM.
//!
//! # Adding a device
//! Between [`Vm::build`] and [`Vm::run`] (see `crate::run`), with the config's new fields:
//! - port I/O or MMIO: `vm.buses.pio` / `vm.buses.mmio` (`write()` the lock, then
//!   `insert(device, base, len)`); exits in that range reach the device from any vCPU thread;
//! - a legacy interrupt: `vm.irq.irqfd(gsi)` gives an eventfd wired to IOAPIC pin `gsi`;
//! - PCI: build the device with [`crate::pci::KvmMsi`] (`KvmMsi::new(vm.irq.clone(), n)`),
//!   [`crate::pci::KvmIntx`] and [`crate::pci::KvmIoEvents`], then
//!   `vm.pci.lock().add_device(dev)` assigns its slot and BARs;
//! - memory outside RAM (VRAM): `vm.slots.add_region(addr, size, true)` maps it (hand
//!   `region.mapping` to the device), `vm.slots.dirty_source(&region)` is a closure giving the
//!   byte ranges the guest wrote since the last call, and a clone of `vm.slots` can
//!   `move_region` when the guest moves the BAR.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use vmm_sys_util::signal::Killable;

use arch::layout;
use devices::bus::{BusDevice, SharedDevice};
use devices::GuestMemoryMmap;

use crate::config::{HostLimits, SerialMode, VmConfig};
use crate::exit::{EventSender, VmEvent};
use crate::irq::IrqRouter;
use crate::memory::MemorySlots;
use crate::vcpu::{Buses, VcpuSetup};

/// Open the KVM device, turning the usual failures into instructions.
pub fn open_kvm(path: &std::path::Path) -> Result<Kvm> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .context("KVM device path contains a NUL byte")?;
    Kvm::new_with_path(&c).map_err(|e| {
        let p = path.display();
        match e.errno() {
            libc::ENOENT => anyhow!(
                "{p} does not exist: KVM is not available. Load the module (modprobe kvm_intel \
                 or modprobe kvm_amd) and enable virtualization (VT-x/AMD-V) in the BIOS/UEFI \
                 setup; run rvmm-host-check for details"
            ),
            libc::EACCES | libc::EPERM => anyhow!(
                "no permission to open {p}: add your user to the kvm group \
                 (sudo usermod -aG kvm $USER, then log in again) or run rvmm as root"
            ),
            _ => anyhow!("cannot open {p}: {e}; run rvmm-host-check for details"),
        }
    })
}

/// Where COM1's output goes, opened once for the life of rvmm (so it survives reboots).
pub enum SerialSink {
    /// Process stdout.
    Stdout,
    /// A file.
    File(File),
    /// Nowhere.
    Null,
}

impl SerialSink {
    /// Open the sink `mode` names.
    pub fn open(mode: &SerialMode) -> Result<Self> {
        Ok(match mode {
            SerialMode::Stdio => SerialSink::Stdout,
            SerialMode::None => SerialSink::Null,
            SerialMode::File(p) => SerialSink::File(
                File::create(p)
                    .with_context(|| format!("cannot create serial log {}", p.display()))?,
            ),
        })
    }

    fn writer(&self) -> Result<Box<dyn Write + Send>> {
        Ok(match self {
            SerialSink::Stdout => Box::new(std::io::stdout()),
            SerialSink::Null => Box::new(std::io::sink()),
            SerialSink::File(f) => Box::new(f.try_clone().context("cannot reopen the serial log")?),
        })
    }
}

/// A VM that has been built and is ready to run.
pub struct Vm {
    /// The KVM system handle.
    pub kvm: Kvm,
    /// The VM handle.
    pub fd: Arc<VmFd>,
    /// Guest RAM.
    pub memory: GuestMemoryMmap,
    /// PIO and MMIO buses.
    pub buses: Arc<Buses>,
    /// GSI routing, irqfds, ioeventfds.
    pub irq: IrqRouter,
    /// KVM memory slots (RAM is registered; extra regions go here).
    pub slots: MemorySlots,
    /// COM1.
    pub serial: Arc<Mutex<devices::serial::Serial>>,
    /// The PCI root bus (devices are added with `PciRoot::add_device`).
    pub pci: Arc<Mutex<devices::pci::PciRoot>>,
    /// The PS/2 controller (keyboard and mouse input goes here).
    pub i8042: Arc<Mutex<devices::i8042::I8042>>,
    vcpus: Vec<VcpuFd>,
    events: EventSender,
    events_rx: mpsc::Receiver<VmEvent>,
    config: VmConfig,
}

/// The legacy devices other parts of rvmm talk to: COM1 and the PS/2 controller.
type LegacyHandles = (
    Arc<Mutex<devices::serial::Serial>>,
    Arc<Mutex<devices::i8042::I8042>>,
);

fn shared<D: BusDevice + 'static>(d: D) -> Arc<Mutex<D>> {
    Arc::new(Mutex::new(d))
}

impl Vm {
    /// Create the VM for `cfg`: KVM objects, RAM, legacy devices and vCPUs, with the kernel
    /// loaded and the BSP at its entry point.
    pub fn build(cfg: &VmConfig, start: Instant, sink: &SerialSink) -> Result<Self> {
        let kvm = open_kvm(&cfg.kvm_device)?;
        let limits = HostLimits {
            max_vcpus: u32::try_from(kvm.get_max_vcpus()).unwrap_or(u32::MAX),
            host_mem: crate::config::host_memory(),
        };
        cfg.check_host(&limits)?;
        for (cap, name) in [
            (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
            (Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
            (Cap::Irqfd, "KVM_CAP_IRQFD"),
            (Cap::IrqRouting, "KVM_CAP_IRQ_ROUTING"),
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (Cap::Pit2, "KVM_CAP_PIT2"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(anyhow!("this host's KVM lacks {name}, which rvmm needs"));
            }
        }
        let fd = Arc::new(kvm.create_vm().context("KVM_CREATE_VM failed")?);
        fd.set_tss_address(layout::KVM_TSS_START as usize)
            .context("KVM_SET_TSS_ADDR failed")?;
        fd.create_irq_chip().context("KVM_CREATE_IRQCHIP failed")?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).context("KVM_CREATE_PIT2 failed")?;
        let irq = IrqRouter::new(fd.clone())?;

        let memory = crate::memory::create_guest_memory(cfg.mem_size, cfg.hugepages)?;
        let max_slots = u32::try_from(kvm.get_nr_memslots()).unwrap_or(32);
        let slots = MemorySlots::new(fd.clone(), max_slots);
        slots.register_ram(&memory)?;

        let (events, events_rx) = mpsc::channel();
        let buses = Arc::new(Buses::default());
        let (serial, i8042) = Self::add_legacy_devices(cfg, &buses, &irq, &events, start, sink)?;

        // PCI root complex: config space, MMIO windows, MCFG and the root bridge AML.
        let (pci, acpi_extras) = crate::pci::setup(&buses, arch::e820::ram_end(cfg.mem_size))?;
        let boot = crate::boot::load(&memory, cfg, &acpi_extras)?;
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .context("KVM_GET_SUPPORTED_CPUID failed")?;
        let tsc_deadline = kvm.check_extension(Cap::TscDeadlineTimer);
        let mut vcpus = Vec::new();
        for i in 0..cfg.cpus {
            let v = fd
                .create_vcpu(u64::from(i))
                .with_context(|| format!("cannot create vCPU {i}"))?;
            crate::vcpu::configure(
                &v,
                &VcpuSetup {
                    index: i,
                    cpus: cfg.cpus,
                    model: cfg.cpu_model,
                    supported: &supported,
                    tsc_deadline,
                    boot: (i == 0).then_some(boot),
                },
            )?;
            vcpus.push(v);
        }
        log::debug!("VM built in {:?}: {boot:x?}", start.elapsed());
        Ok(Self {
            kvm,
            fd,
            memory,
            buses,
            irq,
            slots,
            serial,
            pci,
            i8042,
            vcpus,
            events,
            events_rx,
            config: cfg.clone(),
        })
    }

    fn add_legacy_devices(
        cfg: &VmConfig,
        buses: &Buses,
        irq: &IrqRouter,
        events: &EventSender,
        start: Instant,
        sink: &SerialSink,
    ) -> Result<LegacyHandles> {
        use devices::*;
        let mut pio = buses.pio.write().unwrap_or_else(|p| p.into_inner());
        let mut add = |dev: SharedDevice, base: u64, len: u64, what: &str| {
            pio.insert(dev, base, len)
                .with_context(|| format!("cannot map {what} at port {base:#x}"))
        };

        let com1_irq = Arc::new(irq.irqfd(serial::COM1_IRQ)?);
        let serial = shared(serial::Serial::new(com1_irq, sink.writer()?));
        add(
            serial.clone(),
            serial::COM1_BASE,
            serial::UART_PORTS,
            "COM1",
        )?;

        let kbd_irq = Arc::new(irq.irqfd(i8042::KBD_IRQ)?);
        let ev = events.clone();
        let kbd = i8042::I8042::new(
            Some(kbd_irq),
            Box::new(move || {
                let _ = ev.send(VmEvent::Reset);
            }),
        )
        .with_aux_irq(Arc::new(irq.irqfd(i8042::AUX_IRQ)?));
        let kbd = shared(kbd);
        add(kbd.clone(), i8042::I8042_BASE, i8042::I8042_PORTS, "i8042")?;

        let low = arch::e820::low_ram_end(cfg.mem_size);
        let high = cfg.mem_size - low;
        add(
            shared(cmos::Cmos::new(low, high)),
            cmos::CMOS_BASE,
            cmos::CMOS_PORTS,
            "CMOS/RTC",
        )?;

        let ev = events.clone();
        let pm = acpi_pm::AcpiPm::new(
            layout::ACPI_S5_SLP_TYP,
            layout::ACPI_RESET_VALUE,
            Box::new(move |e| {
                let _ = ev.send(match e {
                    acpi_pm::PowerEvent::PowerOff => VmEvent::PowerOff,
                    acpi_pm::PowerEvent::Reset => VmEvent::Reset,
                });
            }),
        );
        add(
            shared(pm),
            u64::from(layout::ACPI_PM1A_EVT),
            u64::from(layout::ACPI_PM_LEN),
            "ACPI PM",
        )?;

        let ev = events.clone();
        let dbg = debug_port::DebugExit::new(Box::new(move |v| {
            let _ = ev.send(VmEvent::DebugExit(v));
        }));
        add(shared(dbg), debug_port::DEBUG_EXIT_PORT, 1, "debug exit")?;
        add(
            shared(debug_port::BootMarker::new(start)),
            debug_port::BOOT_MARKER_PORT,
            1,
            "boot marker",
        )?;
        Ok((serial, kbd))
    }

    /// Run until something ends the VM; returns that event. `signal` is polled for SIGINT /
    /// SIGTERM (it holds the signal number once one arrived).
    pub fn run(self, signal: &AtomicUsize, start: Instant) -> Result<VmEvent> {
        crate::signals::install_kick_handler()?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        // Guest RAM and the VM fd must outlive the vCPU threads: keep them bound until the
        // threads are joined at the end of this function.
        let Vm {
            vcpus,
            buses,
            events,
            events_rx,
            serial,
            config,
            memory: _memory,
            fd: _vm_fd,
            ..
        } = self;
        for (i, fd) in vcpus.into_iter().enumerate() {
            let (b, e, s) = (buses.clone(), events.clone(), stop.clone());
            let h = std::thread::Builder::new()
                .name(format!("rvmm-vcpu{i}"))
                .spawn(move || crate::vcpu::run(fd, i as u32, b, e, s))
                .with_context(|| format!("cannot start the thread of vCPU {i}"))?;
            threads.push(h);
        }
        log::debug!("vCPUs started at {:?}", start.elapsed());
        let tty = crate::terminal::stdin_is_tty();
        let background = tty && !crate::terminal::stdin_is_foreground_tty();
        if background && config.serial == SerialMode::Stdio {
            log::warn!("running in the background: console input is not read");
        }
        let stdin = if config.serial == SerialMode::Stdio && !background {
            Some(
                crate::terminal::spawn_stdin_reader(
                    serial.clone(),
                    events.clone(),
                    stop.clone(),
                    tty,
                )
                .context("cannot start the console input thread")?,
            )
        } else {
            None
        };
        let event = loop {
            // Checked before every wait, not only on timeouts: a guest that resets faster
            // than the timeout would otherwise keep a SIGTERM from ever being seen.
            let s = signal.load(Ordering::Acquire);
            if s != 0 {
                break VmEvent::Signal(s as i32);
            }
            match events_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(e) => break e,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break VmEvent::Fatal("every vCPU thread ended".into())
                }
            }
        };
        stop.store(true, Ordering::Release);
        for h in threads {
            // Kick the vCPU out of KVM_RUN until its thread has seen `stop`.
            while !h.is_finished() {
                let _ = h.kill(crate::signals::kick_signal());
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = h.join();
        }
        if let Some(h) = stdin {
            let _ = h.join();
        }
        Ok(event)
    }
}
