//! `rvmm-img`: a qemu-img compatible image tool on the `qcow` engine.
