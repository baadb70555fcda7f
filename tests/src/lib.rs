//! Integration test support: builds the purpose-built guest kernels in `tests/guests/` and runs
//! `rvmm` (and QEMU as an oracle) on them. The tests themselves live in `tests/tests/`.
