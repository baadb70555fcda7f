#!/usr/bin/env bash
# Run every rvmm test: setup, format and lint checks, then the whole workspace test suite
# (unit tests, image interop tests against qemu-img, and KVM integration tests booting the
# purpose-built guests). This is exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The KVM integration tests (tests/tests/) boot guests in rvmm and fail without /dev/kvm.
[ -r /dev/kvm ] && [ -w /dev/kvm ] ||
  echo "test.sh: warning: /dev/kvm missing or not accessible: the rvmm integration tests will fail (modprobe kvm_intel or kvm_amd; add yourself to group kvm)" >&2
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Integration tests run the rvmm/rvmm-img binaries: build them first.
cargo build --workspace --bins
cargo test --workspace -- --test-threads=2
# Opt-in, for hosts with hardware virtualization: a stock Debian kernel booted by rvmm itself
# (it cannot boot under the nested, software-assisted KVM of the CI machine).
if [ "${RVMM_REAL_LINUX:-0}" = 1 ]; then
  cargo test -p rvmm-tests --test real_linux -- --ignored --test-threads=1
fi
