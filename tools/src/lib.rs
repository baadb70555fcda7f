//! Administration tools shipped with rvmm: `rvmm-img` (a qemu-img compatible image tool on the
//! `qcow` engine), `rvmm-vhost` (vhost-user backends serving rvmm's virtio devices) and
//! `rvmm-host-check`.

pub mod img;
pub mod vhost;
