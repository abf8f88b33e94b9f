//! The CPUID table (Intel SDM Vol. 2A "CPUID", Tables 3-8 .. 3-20): the single place that says
//! which features rinx implements. A bit is set only when the feature works end to end.
//!
//! **Flipping a feature.** Each advertised feature is a named constant in [`bits`]; the
//! advertised sets are [`LEAF1_EDX`], [`LEAF1_ECX`], [`EXT1_EDX`] and [`EXT1_ECX`]. When your
//! part lands (e.g. SSE3 in `cpu/simd`), add the constant to the set (`| bits::ecx1::SSE3`) and
//! add a test that a guest can use it. Leaf 7 reports only IA32_ARCH_CAPABILITIES (EDX[29],
//! see [`EDX7`]); XSAVE (leaf 0xD) is not reported. CR4 bits that depend on a feature are accepted
//! only when the feature is advertised ([`cr4_reserved`]).
//!
//! **Vendor.** We report "GenuineIntel", family 6 model 15 stepping 1 (a Core 2-class part with
//! no AVX), because guest software (Linux included) follows Intel semantics for SYSCALL in
//! compatibility mode (#UD), SYSENTER in IA-32e mode, and the MSRs rinx implements; the brand
//! string says "rinx virtual CPU" so a human can tell. Change [`VENDOR`] to b"rinxrinxrinx"
//! for a vendor-neutral CPU (Linux then uses its generic "unknown vendor" paths).

use jit::abi::cr;

/// Feature bit names per register (SDM Vol. 2A Tables 3-10, 3-11, 3-20).
pub mod bits {
    /// CPUID.01H:EDX.
    pub mod edx1 {
        pub const FPU: u32 = 1 << 0;
        pub const VME: u32 = 1 << 1;
        pub const DE: u32 = 1 << 2;
        pub const PSE: u32 = 1 << 3;
        pub const TSC: u32 = 1 << 4;
        pub const MSR: u32 = 1 << 5;
        pub const PAE: u32 = 1 << 6;
        pub const MCE: u32 = 1 << 7;
        pub const CX8: u32 = 1 << 8;
        pub const APIC: u32 = 1 << 9;
        pub const SEP: u32 = 1 << 11;
        pub const MTRR: u32 = 1 << 12;
        pub const PGE: u32 = 1 << 13;
        pub const MCA: u32 = 1 << 14;
        pub const CMOV: u32 = 1 << 15;
        pub const PAT: u32 = 1 << 16;
        pub const PSE36: u32 = 1 << 17;
        pub const CLFSH: u32 = 1 << 19;
        pub const MMX: u32 = 1 << 23;
        pub const FXSR: u32 = 1 << 24;
        pub const SSE: u32 = 1 << 25;
        pub const SSE2: u32 = 1 << 26;
        pub const HTT: u32 = 1 << 28;
    }
    /// CPUID.01H:ECX.
    pub mod ecx1 {
        pub const SSE3: u32 = 1 << 0;
        pub const PCLMULQDQ: u32 = 1 << 1;
        pub const MONITOR: u32 = 1 << 3;
        pub const SSSE3: u32 = 1 << 9;
        pub const CX16: u32 = 1 << 13;
        pub const PCID: u32 = 1 << 17;
        pub const SSE41: u32 = 1 << 19;
        pub const SSE42: u32 = 1 << 20;
        pub const X2APIC: u32 = 1 << 21;
        pub const MOVBE: u32 = 1 << 22;
        pub const POPCNT: u32 = 1 << 23;
        pub const XSAVE: u32 = 1 << 26;
        pub const RDRAND: u32 = 1 << 30;
    }
    /// CPUID.(EAX=07H,ECX=0):EDX.
    pub mod edx7 {
        /// The IA32_ARCH_CAPABILITIES MSR (10AH) exists.
        pub const ARCH_CAPABILITIES: u32 = 1 << 29;
    }
    /// CPUID.80000001H:EDX.
    pub mod edx81 {
        pub const SYSCALL: u32 = 1 << 11;
        pub const NX: u32 = 1 << 20;
        pub const PDPE1GB: u32 = 1 << 26;
        pub const RDTSCP: u32 = 1 << 27;
        pub const LM: u32 = 1 << 29;
    }
    /// CPUID.80000001H:ECX.
    pub mod ecx81 {
        pub const LAHF_LM: u32 = 1 << 0;
        pub const ABM: u32 = 1 << 5;
    }
}

use bits::*;

/// Vendor identification string (CPUID.0: EBX, EDX, ECX).
pub const VENDOR: &[u8; 12] = b"GenuineIntel";
/// Processor signature (CPUID.01H:EAX): family 6, model 15, stepping 1.
pub const SIGNATURE: u32 = 0x0000_06f1;
/// Brand string (CPUID.80000002H-80000004H), NUL-padded to 48 bytes.
pub const BRAND: &str = "rinx virtual CPU";
/// Highest basic leaf.
pub const MAX_BASIC: u32 = 0xb;
/// Highest extended leaf.
pub const MAX_EXT: u32 = 0x8000_0008;

/// CPUID.01H:EDX: the baseline the system, x87, MMX, SSE and SSE2 parts implement.
pub const LEAF1_EDX: u32 = edx1::FPU
    | edx1::PSE
    | edx1::TSC
    | edx1::MSR
    | edx1::PAE
    | edx1::CX8
    | edx1::APIC
    | edx1::SEP
    | edx1::MTRR
    | edx1::PGE
    | edx1::CMOV
    | edx1::PAT
    | edx1::PSE36
    | edx1::CLFSH
    | edx1::MMX
    | edx1::FXSR
    | edx1::SSE
    | edx1::SSE2;
/// CPUID.01H:ECX: with CMPXCHG8B/CMOV/SSE2 in EDX and LAHF-LM in 80000001H:ECX, the x86-64-v2
/// baseline: SSE3, SSSE3, SSE4.1, SSE4.2 (`cpu/simd`, including CRC32 in `cpu/integer`),
/// CMPXCHG16B and POPCNT (`cpu/integer`). Each is covered by unit tests and the host
/// differential test (tests/diff_simd.rs).
pub const LEAF1_ECX: u32 =
    ecx1::SSE3 | ecx1::SSSE3 | ecx1::CX16 | ecx1::SSE41 | ecx1::SSE42 | ecx1::POPCNT;
/// CPUID.(EAX=07H,ECX=0):EDX: only IA32_ARCH_CAPABILITIES, whose "not affected" bits
/// ([`crate::cpu::msr::ARCH_CAPABILITIES_VALUE`]) tell the guest that rinx has none of the
/// speculative-execution side channels of hardware (a guest kernel then skips page-table
/// isolation, VERW buffer clearing and the like, which only cost time here).
pub const EDX7: u32 = edx7::ARCH_CAPABILITIES;
/// CPUID.80000001H:EDX.
pub const EXT1_EDX: u32 = edx81::SYSCALL | edx81::NX | edx81::RDTSCP | edx81::LM;
/// CPUID.80000001H:ECX.
pub const EXT1_ECX: u32 = ecx81::LAHF_LM;
/// MAXPHYADDR (CPUID.80000008H:EAX[7:0]); must match `mmu::walk::MAX_PHYS_BITS`.
pub const PHYS_BITS: u32 = crate::mmu::walk::MAX_PHYS_BITS;
/// Linear-address width (CPUID.80000008H:EAX[15:8]).
pub const VIRT_BITS: u32 = 48;

/// CR4 bits a MOV to CR4 may not set given the advertised features (SDM Vol. 3A §2.5, §2.6).
pub fn cr4_reserved() -> u64 {
    let mut ok = cr::CR4_TSD | cr::CR4_PCE;
    let pairs = [
        (LEAF1_EDX & edx1::VME, cr::CR4_VME | cr::CR4_PVI),
        (LEAF1_EDX & edx1::DE, cr::CR4_DE),
        (LEAF1_EDX & edx1::PSE, cr::CR4_PSE),
        (LEAF1_EDX & edx1::PAE, cr::CR4_PAE),
        (LEAF1_EDX & edx1::MCE, cr::CR4_MCE),
        (LEAF1_EDX & edx1::PGE, cr::CR4_PGE),
        (LEAF1_EDX & edx1::FXSR, cr::CR4_OSFXSR),
        (LEAF1_EDX & edx1::SSE, cr::CR4_OSXMMEXCPT),
        (LEAF1_ECX & ecx1::PCID, cr::CR4_PCIDE),
        (LEAF1_ECX & ecx1::XSAVE, cr::CR4_OSXSAVE),
    ];
    for (have, bit) in pairs {
        if have != 0 {
            ok |= bit;
        }
    }
    !ok
}

/// The four registers CPUID returns for `leaf`/`subleaf`; `apic_id` goes to CPUID.01H:EBX[31:24]
/// and the x2APIC ID fields.
pub fn cpuid(leaf: u32, subleaf: u32, apic_id: u32) -> [u32; 4] {
    let le = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    // Leaves past the maximum return the highest basic leaf (Intel behaviour).
    let leaf = if (leaf > MAX_BASIC && leaf < 0x8000_0000) || leaf > MAX_EXT {
        MAX_BASIC
    } else {
        leaf
    };
    match leaf {
        0 => [
            MAX_BASIC,
            le(&VENDOR[0..4]),
            le(&VENDOR[8..12]),
            le(&VENDOR[4..8]),
        ],
        // EBX: CLFLUSH line 8 qwords, one logical processor, initial APIC ID.
        1 => [
            SIGNATURE,
            (8 << 8) | (1 << 16) | (apic_id << 24),
            LEAF1_ECX,
            LEAF1_EDX,
        ],
        // No legacy cache descriptors: software uses leaf 4.
        2 => [1, 0, 0, 0],
        // Deterministic cache parameters: L1D 32 KiB 8-way, L1I 32 KiB 8-way, L2 1 MiB 16-way,
        // 64-byte lines (EAX: type, level, self-initialising; EBX: ways-1, partitions-1,
        // line-1; ECX: sets-1).
        4 => match subleaf {
            0 => [0x121, (7 << 22) | 63, 63, 0],
            1 => [0x122, (7 << 22) | 63, 63, 0],
            2 => [0x143, (15 << 22) | 63, 1023, 0],
            _ => [0, 0, 0, 0],
        },
        // Structured extended features: subleaf 0 only (EAX = highest subleaf = 0).
        7 => match subleaf {
            0 => [0, 0, 0, EDX7],
            _ => [0, 0, 0, 0],
        },
        // Extended topology: one thread (SMT level), one core (core level).
        0xb => match subleaf {
            0 => [0, 1, 0x100, apic_id],
            1 => [0, 1, 0x201, apic_id],
            n => [0, 0, n & 0xff, apic_id],
        },
        0x8000_0000 => [MAX_EXT, 0, 0, 0],
        0x8000_0001 => [0, 0, EXT1_ECX, EXT1_EDX],
        0x8000_0002..=0x8000_0004 => {
            let mut b = [0u8; 48];
            b[..BRAND.len()].copy_from_slice(BRAND.as_bytes());
            let o = ((leaf - 0x8000_0002) * 16) as usize;
            [
                le(&b[o..]),
                le(&b[o + 4..]),
                le(&b[o + 8..]),
                le(&b[o + 12..]),
            ]
        }
        // L2: 1 MiB, 16-way (encoding 8), 64-byte lines.
        0x8000_0006 => [0, 0, (1024 << 16) | (8 << 12) | 64, 0],
        0x8000_0008 => [PHYS_BITS | (VIRT_BITS << 8), 0, 0, 0],
        _ => [0, 0, 0, 0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_features_and_address_sizes() {
        let r = cpuid(0, 0, 0);
        let mut v = Vec::new();
        for x in [r[1], r[3], r[2]] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        assert_eq!(&v, VENDOR);
        let r = cpuid(1, 0, 0);
        assert_ne!(r[3] & edx1::SEP, 0);
        // x86-64-v2: SSE3, SSSE3, SSE4.1, SSE4.2, POPCNT, CX16 (leaf 1) and LAHF-LM.
        let v2 = ecx1::SSE3 | ecx1::SSSE3 | ecx1::SSE41 | ecx1::SSE42 | ecx1::POPCNT | ecx1::CX16;
        assert_eq!(r[2] & v2, v2);
        // Not implemented, so not advertised.
        assert_eq!(
            r[2] & (ecx1::XSAVE | ecx1::MOVBE | ecx1::PCLMULQDQ | ecx1::X2APIC),
            0
        );
        assert_ne!(cpuid(0x8000_0001, 0, 0)[2] & ecx81::LAHF_LM, 0);
        let r = cpuid(0x8000_0001, 0, 0);
        assert_ne!(r[3] & edx81::LM, 0);
        assert_eq!(cpuid(0x8000_0008, 0, 0)[0], 0x3028);
        // Out-of-range leaves return the highest basic leaf.
        assert_eq!(cpuid(0x4000_0000, 0, 0), cpuid(MAX_BASIC, 0, 0));
        let b = cpuid(0x8000_0002, 0, 0);
        assert_eq!(&b[0].to_le_bytes(), b"rinx");
        // Leaf 7: only ARCH_CAPABILITIES (no SMEP/SMAP/FSGSBASE/AVX2/... in EBX, ECX).
        assert_eq!(cpuid(7, 0, 0), [0, 0, 0, edx7::ARCH_CAPABILITIES]);
        assert_eq!(cpuid(7, 1, 0), [0; 4]);
        assert_ne!(cr4_reserved() & cr::CR4_VME, 0);
        assert_eq!(cr4_reserved() & cr::CR4_PAE, 0);
    }
}
