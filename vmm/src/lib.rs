//! The rvmm VMM: command line → validated `VmConfig` → VM build-up (memory, vCPUs, buses,
//! devices) → run loop. It owns the threads, signals and (later) the control socket; devices and
//! boot layout live in the `devices` and `arch` crates.
