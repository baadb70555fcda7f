//! `rvmm-vhost`: vhost-user backends serving the virtio devices of `devices/`.
