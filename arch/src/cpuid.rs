//! The CPUID each vCPU sees: KVM's supported set with this VM's topology (one socket, one
//! thread per core, APIC ID = vCPU index), the hypervisor bit and an optional baseline model.

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// Which CPU features the guest sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuModel {
    /// Everything KVM supports on this host.
    #[default]
    Host,
    /// A conservative set without the xsave family, cmpxchg16b, AVX and TSX, for portability
    /// and for nested/software-assisted KVM.
    Baseline,
}

/// Per-vCPU CPUID inputs.
#[derive(Debug, Clone, Copy)]
pub struct CpuidConfig {
    /// Index (and APIC ID) of this vCPU.
    pub cpu_index: u32,
    /// Number of vCPUs in the VM.
    pub cpus: u32,
    /// Feature model.
    pub model: CpuModel,
    /// Whether KVM emulates the TSC-deadline timer (KVM_CAP_TSC_DEADLINE_TIMER).
    pub tsc_deadline: bool,
}

const LEAF1_ECX_FMA: u32 = 1 << 12;
const LEAF1_ECX_CX16: u32 = 1 << 13;
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
const LEAF1_ECX_XSAVE: u32 = 1 << 26;
const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
const LEAF1_ECX_AVX: u32 = 1 << 28;
const LEAF1_ECX_F16C: u32 = 1 << 29;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Leaf 7.0 EBX: HLE, AVX2, RTM and the AVX-512 family.
const LEAF7_EBX_BASELINE_CLEAR: u32 = (1 << 4)
    | (1 << 5)
    | (1 << 11)
    | (1 << 16)
    | (1 << 17)
    | (1 << 21)
    | (1 << 26)
    | (1 << 27)
    | (1 << 28)
    | (1 << 30)
    | (1 << 31);
/// Leaf 7.0 ECX: AVX-512 VBMI/VBMI2/VNNI/BITALG/VPOPCNTDQ, VAES, VPCLMULQDQ.
const LEAF7_ECX_BASELINE_CLEAR: u32 =
    (1 << 1) | (1 << 6) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12) | (1 << 14);
/// Leaf 7.0 EDX: AVX-512 4VNNIW/4FMAPS/VP2INTERSECT/FP16 and AMX.
const LEAF7_EDX_BASELINE_CLEAR: u32 =
    (1 << 2) | (1 << 3) | (1 << 8) | (1 << 22) | (1 << 23) | (1 << 24) | (1 << 25);
/// Leaf 7.1 EAX: AVX-VNNI, AVX512-BF16.
const LEAF7_1_EAX_BASELINE_CLEAR: u32 = (1 << 4) | (1 << 5);
/// Leaf 0x80000001 ECX: XOP, FMA4, TBM.
const LEAF_EXT1_ECX_BASELINE_CLEAR: u32 = (1 << 11) | (1 << 16) | (1 << 21);

/// Number of APIC-ID bits needed to number `n` items.
pub fn id_bits(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

fn is_intel(entries: &[kvm_cpuid_entry2]) -> bool {
    entries
        .iter()
        .find(|e| e.function == 0)
        .is_some_and(|e| e.ebx == u32::from_le_bytes(*b"Genu"))
}

fn topology_leaf(function: u32, index: u32, cfg: &CpuidConfig) -> kvm_cpuid_entry2 {
    let apic_id = cfg.cpu_index;
    let (eax, ebx, ecx) = match index {
        // SMT level: one thread per core.
        0 => (0, 1, (1 << 8) | index),
        // Core level: every vCPU is a core of the one package.
        1 => (id_bits(cfg.cpus), cfg.cpus, (2 << 8) | index),
        _ => (0, 0, index),
    };
    kvm_cpuid_entry2 {
        function,
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax,
        ebx,
        ecx,
        edx: apic_id,
        ..Default::default()
    }
}

/// The CPUID entries for one vCPU, from KVM's supported list.
pub fn vcpu_cpuid(supported: &[kvm_cpuid_entry2], cfg: &CpuidConfig) -> Vec<kvm_cpuid_entry2> {
    let intel = is_intel(supported);
    let max_basic = supported
        .iter()
        .find(|e| e.function == 0)
        .map_or(0, |e| e.eax);
    let cpus = cfg.cpus.max(1);
    let mut out: Vec<kvm_cpuid_entry2> = supported
        .iter()
        .filter(|e| e.function != 0xb && e.function != 0x1f)
        .copied()
        .collect();
    for e in out.iter_mut() {
        match (e.function, e.index) {
            (1, _) => {
                e.ebx = (e.ebx & 0x0000_ffff) | (cfg.cpu_index << 24) | (cpus.min(255) << 16);
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                if cfg.tsc_deadline {
                    e.ecx |= LEAF1_ECX_TSC_DEADLINE;
                }
                if cpus > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
            }
            (4, _) if intel => {
                let cache_level = (e.eax >> 5) & 0x7;
                let sharing = if cache_level >= 3 { cpus - 1 } else { 0 };
                e.eax =
                    (e.eax & 0x3fff) | ((sharing.min(0xfff)) << 14) | (((cpus - 1).min(63)) << 26);
            }
            (0x8000_0008, _) if !intel => {
                e.ecx = (e.ecx & !0xf0ff) | (id_bits(cpus) << 12) | ((cpus - 1) & 0xff);
            }
            (0x8000_001e, _) if !intel => {
                e.eax = cfg.cpu_index;
                e.ebx = cfg.cpu_index & 0xff;
                e.ecx = 0;
            }
            _ => {}
        }
    }
    if intel || max_basic >= 0xb {
        for i in 0..3 {
            out.push(topology_leaf(0xb, i, cfg));
        }
    }
    if max_basic >= 0x1f && supported.iter().any(|e| e.function == 0x1f) {
        for i in 0..3 {
            out.push(topology_leaf(0x1f, i, cfg));
        }
    }
    if cfg.model == CpuModel::Baseline {
        apply_baseline(&mut out);
    }
    out
}

fn apply_baseline(entries: &mut [kvm_cpuid_entry2]) {
    for e in entries.iter_mut() {
        match (e.function, e.index) {
            (1, _) => {
                e.ecx &= !(LEAF1_ECX_FMA
                    | LEAF1_ECX_CX16
                    | LEAF1_ECX_XSAVE
                    | LEAF1_ECX_OSXSAVE
                    | LEAF1_ECX_AVX
                    | LEAF1_ECX_F16C);
            }
            (7, 0) => {
                e.ebx &= !LEAF7_EBX_BASELINE_CLEAR;
                e.ecx &= !LEAF7_ECX_BASELINE_CLEAR;
                e.edx &= !LEAF7_EDX_BASELINE_CLEAR;
            }
            (7, 1) => e.eax &= !LEAF7_1_EAX_BASELINE_CLEAR,
            // XSAVE state enumeration and AMX tile leaves describe nothing without XSAVE.
            (0xd, _) | (0x1d, _) | (0x1e, _) => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            (0x8000_0001, _) => e.ecx &= !LEAF_EXT1_ECX_BASELINE_CLEAR,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        function: u32,
        index: u32,
        eax: u32,
        ebx: u32,
        ecx: u32,
        edx: u32,
    ) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        }
    }

    fn intel_host() -> Vec<kvm_cpuid_entry2> {
        let genu = u32::from_le_bytes(*b"Genu");
        vec![
            entry(
                0,
                0,
                0x1f,
                genu,
                u32::from_le_bytes(*b"ntel"),
                u32::from_le_bytes(*b"ineI"),
            ),
            entry(
                1,
                0,
                0x806f8,
                0x0000_0800,
                !LEAF1_ECX_HYPERVISOR,
                0xffff_ffff,
            ),
            // L1d (level 1, type 1) and L3 (level 3, type 3)
            entry(4, 0, 0x121, 0, 0, 0),
            entry(4, 3, 0x163, 0, 0, 0),
            entry(7, 0, 0, 0xffff_ffff, 0xffff_ffff, 0xffff_ffff),
            entry(7, 1, 0xffff_ffff, 0, 0, 0),
            entry(0xb, 0, 1, 2, 0x100, 7),
            entry(0xd, 0, 0x2e7, 0xa88, 0xa88, 0),
            entry(0xd, 1, 0xf, 0, 0, 0),
            entry(0x1f, 0, 1, 2, 0x100, 7),
            entry(0x4000_0000, 0, 0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d),
            entry(0x8000_0001, 0, 0, 0, 0xffff_ffff, 0),
        ]
    }

    fn cfg(i: u32, n: u32, model: CpuModel) -> CpuidConfig {
        CpuidConfig {
            cpu_index: i,
            cpus: n,
            model,
            tsc_deadline: true,
        }
    }

    fn find(v: &[kvm_cpuid_entry2], f: u32, i: u32) -> kvm_cpuid_entry2 {
        *v.iter().find(|e| e.function == f && e.index == i).unwrap()
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!(
            [1, 2, 3, 4, 5, 8, 9, 255].map(id_bits),
            [0, 1, 2, 2, 3, 3, 4, 8]
        );
    }

    #[test]
    fn leaf1_carries_apic_id_count_and_hypervisor_bit() {
        let v = vcpu_cpuid(&intel_host(), &cfg(3, 4, CpuModel::Host));
        let l1 = find(&v, 1, 0);
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_eq!(l1.ebx & 0xffff, 0x0800, "CLFLUSH size kept");
        assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(l1.edx & LEAF1_EDX_HTT, 0);
        let single = vcpu_cpuid(&intel_host(), &cfg(0, 1, CpuModel::Host));
        assert_eq!(find(&single, 1, 0).edx & LEAF1_EDX_HTT, 0);
    }

    #[test]
    fn extended_topology_leaves_describe_one_package_of_n_cores() {
        let v = vcpu_cpuid(&intel_host(), &cfg(5, 6, CpuModel::Host));
        for f in [0xb, 0x1f] {
            assert_eq!(v.iter().filter(|e| e.function == f).count(), 3);
            let smt = find(&v, f, 0);
            assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 5));
            let core = find(&v, f, 1);
            assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (3, 6, 0x201, 5));
            let end = find(&v, f, 2);
            assert_eq!((end.eax, end.ebx, end.ecx >> 8, end.edx), (0, 0, 0, 5));
            assert_ne!(smt.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0);
        }
    }

    #[test]
    fn cache_leaves_share_l3_across_all_cores() {
        let v = vcpu_cpuid(&intel_host(), &cfg(0, 4, CpuModel::Host));
        let l1d = find(&v, 4, 0);
        assert_eq!(l1d.eax >> 26, 3, "cores per package - 1");
        assert_eq!((l1d.eax >> 14) & 0xfff, 0);
        assert_eq!(l1d.eax & 0x3fff, 0x121);
        let l3 = find(&v, 4, 3);
        assert_eq!((l3.eax >> 14) & 0xfff, 3);
    }

    #[test]
    fn baseline_hides_xsave_cx16_avx_and_tsx() {
        let host = vcpu_cpuid(&intel_host(), &cfg(0, 1, CpuModel::Host));
        let base = vcpu_cpuid(&intel_host(), &cfg(0, 1, CpuModel::Baseline));
        let h1 = find(&host, 1, 0);
        assert_ne!(h1.ecx & LEAF1_ECX_XSAVE, 0);
        let b1 = find(&base, 1, 0);
        for bit in [
            LEAF1_ECX_XSAVE,
            LEAF1_ECX_OSXSAVE,
            LEAF1_ECX_AVX,
            LEAF1_ECX_CX16,
        ] {
            assert_eq!(b1.ecx & bit, 0);
        }
        assert_ne!(b1.ecx & 1, 0, "SSE3 kept");
        let b7 = find(&base, 7, 0);
        assert_eq!(b7.ebx & ((1 << 4) | (1 << 5) | (1 << 11) | (1 << 16)), 0);
        assert_ne!(b7.ebx & 1, 0, "FSGSBASE kept");
        assert_eq!(find(&base, 0xd, 0).eax, 0);
        assert_eq!(find(&base, 0xd, 1).eax, 0);
        assert_eq!(find(&base, 0x8000_0001, 0).ecx & (1 << 16), 0);
        // Hypervisor leaves pass through.
        assert_eq!(find(&base, 0x4000_0000, 0).ebx, 0x4b4d_564b);
    }
}
