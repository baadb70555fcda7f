//! `rvmm-vhost net`: a tap (new port on a bridge, or an existing tap) served as a
//! vhost-user-net device.
//!
//! The frontend (QEMU's `-netdev vhost-user`) owns the virtqueues in shared guest memory; this
//! backend moves frames with the very queue handlers rvmm's own virtio-net uses
//! ([`devices::virtio::net::NetQueuePair`], [`NetControl`]). The tap is not persistent, so it
//! disappears with this process on every exit path: frontend disconnect, Ctrl-C, SIGKILL.

use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::Listener;
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::GuestAddressSpace;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use devices::virtio::net::features::{self, F_MQ, F_MRG_RXBUF};
use devices::virtio::net::{self as vnet, NetControl, NetCounters, NetQueuePair};
use devices::GuestMemoryAtomic;
use net::{MacAddr, NetBackendConfig, NetConfig, Tap};

/// Flags of `rvmm-vhost net`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("backend").required(true).args(["bridge", "tap"])))]
pub struct Args {
    /// Path of the vhost-user UNIX socket to listen on (replaced if it exists).
    #[arg(long)]
    pub socket: PathBuf,
    /// Create a tap and add it to this bridge (needs CAP_NET_ADMIN).
    #[arg(long)]
    pub bridge: Option<String>,
    /// Use this existing tap (no privileges needed when you own it).
    #[arg(long)]
    pub tap: Option<String>,
    /// The guest's MAC (the frontend's `mac=`); the tap gets it with an 0xFE first byte.
    /// Default: derived from the socket path.
    #[arg(long)]
    pub mac: Option<MacAddr>,
    /// Number of rx/tx queue pairs (multi-queue tap when more than one).
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
}

/// The vhost-user-net backend: one handler per queue pair, plus the control queue.
pub struct NetBackend {
    tap: Tap,
    mac: MacAddr,
    mtu: Option<u16>,
    pairs: u16,
    acked: u64,
    counters: Arc<NetCounters>,
    control: NetControl,
    handlers: Vec<NetQueuePair>,
    mem: Option<GuestMemoryAtomic>,
}

type Vring = VringRwLock<GuestMemoryAtomic>;

impl NetBackend {
    /// A backend on `tap` (one queue pair per tap queue) for a guest NIC with address `mac`.
    pub fn new(tap: Tap, mac: MacAddr) -> anyhow::Result<Self> {
        let pairs = u16::try_from(tap.queues().len()).context("too many tap queues")?;
        let mtu = tap
            .mtu()
            .ok()
            .and_then(|m| u16::try_from(m).ok())
            .filter(|&m| m >= 68);
        let control = NetControl::new(mac, pairs);
        let mut b = NetBackend {
            tap,
            mac,
            mtu,
            pairs,
            acked: 0,
            counters: Arc::new(NetCounters::default()),
            control,
            handlers: Vec::new(),
            mem: None,
        };
        b.rebuild_handlers();
        Ok(b)
    }

    /// The traffic counters.
    pub fn counters(&self) -> Arc<NetCounters> {
        self.counters.clone()
    }

    /// The event number a tap queue's readiness is reported with (after the queues' numbers
    /// and the exit event, which the library reserves).
    pub fn tap_event(&self, pair: usize) -> u16 {
        (self.num_queues() + 1 + pair) as u16
    }

    fn rebuild_handlers(&mut self) {
        let mrg = self.acked & F_MRG_RXBUF != 0;
        self.handlers = self
            .tap
            .queues()
            .iter()
            .map(|q| {
                NetQueuePair::new(
                    q.clone(),
                    self.counters.clone(),
                    self.control.filter.clone(),
                    mrg,
                )
            })
            .collect();
    }

    fn ctrl_index(&self) -> usize {
        usize::from(vnet::ctrl_queue_index(self.acked, self.pairs))
    }

    fn run_rx(&mut self, pair: usize, vrings: &[Vring]) -> std::io::Result<()> {
        let (Some(vring), Some(mem)) = (vrings.get(2 * pair), self.mem.as_ref()) else {
            return Ok(());
        };
        let Some(handler) = self.handlers.get_mut(pair) else {
            return Ok(());
        };
        let mem = mem.memory();
        loop {
            let mut state = vring.get_mut();
            if !state.get_queue().ready() || !state.is_enabled() {
                return Ok(());
            }
            let out = handler.process_rx(&mem, state.get_queue_mut());
            if out.notify {
                state.signal_used_queue()?;
            }
            // The tap is edge-triggered: keep going until it is empty or buffers run out.
            if !out.more {
                return Ok(());
            }
        }
    }

    fn run_tx(&mut self, pair: usize, vrings: &[Vring]) -> std::io::Result<()> {
        let (Some(vring), Some(mem)) = (vrings.get(2 * pair + 1), self.mem.as_ref()) else {
            return Ok(());
        };
        let Some(handler) = self.handlers.get_mut(pair) else {
            return Ok(());
        };
        let mem = mem.memory();
        let mut state = vring.get_mut();
        if handler.process_tx(&mem, state.get_queue_mut()) {
            state.signal_used_queue()?;
        }
        Ok(())
    }

    fn run_ctrl(&mut self, q: usize, vrings: &[Vring]) -> std::io::Result<()> {
        let (Some(vring), Some(mem)) = (vrings.get(q), self.mem.as_ref()) else {
            return Ok(());
        };
        let mem = mem.memory();
        let mut state = vring.get_mut();
        if self.control.process(&mem, state.get_queue_mut()) {
            state.signal_used_queue()?;
        }
        let active = usize::from(self.control.active_pairs);
        for (i, q) in self.tap.queues().iter().enumerate() {
            if let Err(e) = q.set_enabled(i < active) {
                log::warn!("vhost-net: tap {} queue {i}: {e}", self.tap.name());
            }
        }
        Ok(())
    }
}

impl VhostUserBackendMut for NetBackend {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        2 * usize::from(self.pairs) + 1
    }

    fn max_queue_size(&self) -> usize {
        usize::from(vnet::QUEUE_SIZE)
    }

    fn features(&self) -> u64 {
        features::offered(self.pairs, self.mtu) | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn acked_features(&mut self, features: u64) {
        self.acked = features;
        self.rebuild_handlers();
        let offloads = features::tap_offloads(features);
        if let Err(e) = self.tap.set_offloads(offloads) {
            log::warn!("vhost-net: tap offloads {offloads:?}: {e}");
        }
        let mq = features & F_MQ != 0;
        for (i, q) in self.tap.queues().iter().enumerate() {
            if let Err(e) = q.set_enabled(i == 0 || !mq) {
                log::warn!("vhost-net: tap queue {i}: {e}");
            }
        }
        log::info!("vhost-net: driver accepted features {features:#x}");
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // Not CONFIG: QEMU's virtio-net keeps its own config space, and QEMU 7.2 crashes setting
        // up MSI-X notifiers for a vhost-user-net backend that offers it.
        VhostUserProtocolFeatures::MQ
    }

    fn reset_device(&mut self) {
        self.control.reset(self.mac);
        for h in &mut self.handlers {
            h.clear();
        }
    }

    fn set_event_idx(&mut self, _enabled: bool) {
        // The library sets the flag on each queue; the handlers read it from there.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let cfg = vnet::config_space(
            self.control.mac(),
            self.control.status,
            self.pairs,
            self.mtu,
        );
        super::config_slice(&cfg, offset, size)
    }

    fn update_memory(&mut self, mem: GuestMemoryAtomic) -> std::io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[Vring],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        // Never fail for guest mistakes: an error here ends the library's event loop.
        log::trace!("vhost-net: event {device_event} {_evset:?}");
        let ev = usize::from(device_event);
        let nq = self.num_queues();
        let result = if ev < nq {
            if ev == self.ctrl_index() && self.acked & features::F_CTRL_VQ != 0 {
                self.run_ctrl(ev, vrings)
            } else if ev % 2 == 0 {
                self.run_rx(ev / 2, vrings)
            } else {
                self.run_tx(ev / 2, vrings)
            }
        } else if ev > nq {
            self.run_rx(ev - nq - 1, vrings)
        } else {
            Ok(())
        };
        if let Err(e) = result {
            log::warn!("vhost-net: event {device_event}: {e}");
        }
        Ok(())
    }
}

/// Serve a tap on `args.socket` until the frontend disconnects.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.queues == 0 || args.queues > net::MAX_QUEUE_PAIRS {
        bail!(
            "--queues must be between 1 and {}, not {}",
            net::MAX_QUEUE_PAIRS,
            args.queues
        );
    }
    let backend_cfg = match (&args.bridge, &args.tap) {
        (Some(br), None) => NetBackendConfig::Bridge(br.clone()),
        (None, Some(tap)) => NetBackendConfig::Tap(tap.clone()),
        _ => bail!("give exactly one of --bridge BR and --tap NAME"),
    };
    let cfg = NetConfig {
        backend: backend_cfg,
        mac: args.mac,
        queues: args.queues,
    };
    let mac = cfg.guest_mac(&args.socket.to_string_lossy(), 0);
    let tap = cfg
        .open(mac)
        .with_context(|| format!("setting up the host side for {}", args.socket.display()))?
        .context("no network backend configured")?;
    let tap_name = tap.name().to_string();
    let tap_fds: Vec<i32> = tap.queues().iter().map(|q| q.as_raw_fd()).collect();
    let backend = NetBackend::new(tap, mac)?;
    let events: Vec<u16> = (0..tap_fds.len()).map(|i| backend.tap_event(i)).collect();
    let counters = backend.counters();
    let backend = Arc::new(RwLock::new(backend));
    let mut daemon = super::new_daemon("rvmm-vhost-net", backend.clone())?;
    let handlers = daemon.get_epoll_handlers();
    let epoll = handlers
        .first()
        .context("vhost-user daemon has no worker thread")?;
    for (fd, ev) in tap_fds.iter().zip(&events) {
        epoll
            .register_listener(*fd, EventSet::IN | EventSet::EDGE_TRIGGERED, u64::from(*ev))
            .with_context(|| format!("watching tap {tap_name}"))?;
    }
    log::info!(
        "serving tap {tap_name} (guest mac {mac}) on {}",
        args.socket.display()
    );
    let result = serve_one(&mut daemon, &args.socket);
    let c = counters.snapshot();
    log::info!(
        "tap {tap_name}: rx {} packets {} bytes {} dropped; tx {} packets {} bytes {} dropped",
        c[0],
        c[1],
        c[2],
        c[3],
        c[4],
        c[5]
    );
    // Dropping the daemon and backend closes the tap, which deletes it and its bridge port.
    drop(daemon);
    drop(backend);
    let _ = std::fs::remove_file(&args.socket);
    result
}

/// Accept one frontend on `socket` and serve it through [`compat::relay`] until it disconnects.
fn serve_one(
    daemon: &mut VhostUserDaemon<Arc<RwLock<NetBackend>>>,
    socket: &Path,
) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(socket);
    let outer =
        UnixListener::bind(socket).with_context(|| format!("listening on {}", socket.display()))?;
    // The library gets its end through a private abstract socket.
    let inner_addr =
        SocketAddr::from_abstract_name(format!("rvmm-vhost-net-{}", std::process::id()))
            .context("naming the internal vhost-user socket")?;
    let inner =
        UnixListener::bind_addr(&inner_addr).context("binding the internal vhost-user socket")?;
    let mut inner = Listener::from(inner);
    let (front, _) = outer
        .accept()
        .with_context(|| format!("accepting the frontend on {}", socket.display()))?;
    log::info!("vhost-net: frontend connected on {}", socket.display());
    let back = UnixStream::connect_addr(&inner_addr).context("connecting the internal socket")?;
    let relay = compat::relay(front, back)?;
    daemon
        .start(&mut inner)
        .map_err(|e| anyhow::anyhow!("starting the vhost-user handler: {e:?}"))?;
    let result = daemon
        .wait()
        .map_err(|e| super::connection_failed(socket, e));
    relay.finish();
    match result {
        Err(e)
            if format!("{e}").contains("Disconnected")
                || format!("{e}").contains("PartialMessage") =>
        {
            Ok(())
        }
        other => other,
    }
}

mod compat {
    //! A relay between the frontend and the vhost-user library that works around one frontend
    //! bug: QEMU before 8.1 leaves VHOST_USER_F_PROTOCOL_FEATURES (bit 30) out of SET_FEATURES
    //! for net devices although it negotiated protocol features, and sends SET_VRING_ENABLE
    //! (even before any SET_FEATURES), which the vhost crate then refuses, ending the
    //! connection. The relay sets the bit in SET_FEATURES (harmless when already set), and
    //! before a SET_VRING_ENABLE that precedes every SET_FEATURES it injects a SET_FEATURES of
    //! just that bit. Everything else passes through unchanged, file descriptors included.

    use std::io::{self, Read, Write};
    use std::net::Shutdown;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::net::UnixStream;
    use std::thread::JoinHandle;

    const HDR_LEN: usize = 12;
    const SET_FEATURES: u32 = 2;
    const SET_VRING_ENABLE: u32 = 18;
    const PROTOCOL_FEATURES_BIT: u64 = 1 << 30;
    /// vhost-user messages carry at most 8 fds.
    const MAX_FDS: usize = 8;
    /// Far above any vhost-user payload (memory tables, config space).
    const MAX_PAYLOAD: usize = 1 << 20;

    /// The two pump threads of a relay.
    pub struct Relay {
        front: UnixStream,
        back: UnixStream,
        threads: Vec<JoinHandle<()>>,
    }

    impl Relay {
        /// Close both connections and wait for the pumps.
        pub fn finish(self) {
            let _ = self.front.shutdown(Shutdown::Both);
            let _ = self.back.shutdown(Shutdown::Both);
            for t in self.threads {
                let _ = t.join();
            }
        }
    }

    /// Relay between `front` (the frontend) and `back` (the library) until either side closes.
    pub fn relay(front: UnixStream, back: UnixStream) -> io::Result<Relay> {
        let (f1, b1) = (front.try_clone()?, back.try_clone()?);
        let (f2, b2) = (front.try_clone()?, back.try_clone()?);
        let t1 = std::thread::Builder::new()
            .name("vhost-net-relay-in".into())
            .spawn(move || {
                if let Err(e) = frontend_to_backend(&f1, &b1) {
                    log::warn!("vhost-net: frontend connection: {e}");
                }
                let _ = b1.shutdown(Shutdown::Both);
                let _ = f1.shutdown(Shutdown::Both);
            })?;
        let t2 = std::thread::Builder::new()
            .name("vhost-net-relay-out".into())
            .spawn(move || {
                let _ = io::copy(&mut (&b2), &mut (&f2));
                let _ = f2.shutdown(Shutdown::Both);
                let _ = b2.shutdown(Shutdown::Both);
            })?;
        Ok(Relay {
            front,
            back,
            threads: vec![t1, t2],
        })
    }

    fn frontend_to_backend(from: &UnixStream, to: &UnixStream) -> io::Result<()> {
        let mut features_set = false;
        loop {
            let mut hdr = [0u8; HDR_LEN];
            let (n, fds) = recv_with_fds(from, &mut hdr)?;
            if n == 0 {
                return Ok(());
            }
            (&*from).read_exact(&mut hdr[n..])?;
            let req = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
            let size = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) as usize;
            if size > MAX_PAYLOAD {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("message {req} with a {size}-byte payload"),
                ));
            }
            let mut msg = vec![0u8; HDR_LEN + size];
            msg[..HDR_LEN].copy_from_slice(&hdr);
            (&*from).read_exact(&mut msg[HDR_LEN..])?;
            if req == SET_VRING_ENABLE && !features_set {
                log::debug!("vhost-net: SET_VRING_ENABLE before SET_FEATURES; acking bit 30 first");
                let mut m = Vec::with_capacity(HDR_LEN + 8);
                m.extend_from_slice(&SET_FEATURES.to_le_bytes());
                m.extend_from_slice(&1u32.to_le_bytes()); // version 1, no reply wanted
                m.extend_from_slice(&8u32.to_le_bytes());
                m.extend_from_slice(&PROTOCOL_FEATURES_BIT.to_le_bytes());
                (&*to).write_all(&m)?;
                features_set = true;
            }
            if req == SET_FEATURES && size == 8 {
                features_set = true;
                let mut v = [0u8; 8];
                v.copy_from_slice(&msg[HDR_LEN..]);
                let f = u64::from_le_bytes(v) | PROTOCOL_FEATURES_BIT;
                msg[HDR_LEN..].copy_from_slice(&f.to_le_bytes());
            }
            send_with_fds(to, &msg, &fds)?;
        }
    }

    /// recvmsg into `buf`, collecting any SCM_RIGHTS descriptors.
    fn recv_with_fds(sock: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        let mut cbuf = [0u64; 8]; // 64 bytes: room for CMSG_SPACE(8 * 4), 8-byte aligned
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; all-zero is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        // SAFETY: msg points at a valid iovec and control buffer that outlive the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut fds = Vec::new();
        // SAFETY: the kernel filled msg_control with msg_controllen bytes of cmsgs; the CMSG_*
        // helpers walk exactly that buffer.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c).cast::<RawFd>();
                    let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                        / std::mem::size_of::<RawFd>();
                    for i in 0..count {
                        fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frontend sent more file descriptors than vhost-user allows",
            ));
        }
        Ok((n as usize, fds))
    }

    /// sendmsg all of `buf` with `fds` attached to its first byte.
    fn send_with_fds(sock: &UnixStream, buf: &[u8], fds: &[OwnedFd]) -> io::Result<()> {
        if fds.is_empty() {
            return (&*sock).write_all(buf);
        }
        if fds.len() > MAX_FDS {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "too many fds"));
        }
        let mut cbuf = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let fd_bytes = std::mem::size_of_val(fds) as u32;
        // SAFETY: as in recv_with_fds; the control buffer holds CMSG_SPACE(8 fds) bytes, and we
        // write one cmsg of CMSG_LEN(fd_bytes) into it.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(fd_bytes) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(fd_bytes) as usize;
            let data = libc::CMSG_DATA(c).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
            libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        (&*sock).write_all(&buf[n as usize..])
    }
}
