//! Guest exceptions as values (Intel SDM Vol. 3A §6.3, Table 6-1).

/// An exception raised by a guest instruction. Error codes are those pushed on the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// #DE, vector 0: divide error.
    De,
    /// #DB, vector 1: debug.
    Db,
    /// #BP, vector 3: breakpoint (INT3), a trap.
    Bp,
    /// #OF, vector 4: overflow (INTO), a trap.
    Of,
    /// #BR, vector 5: BOUND range exceeded.
    Br,
    /// #UD, vector 6: invalid opcode.
    Ud,
    /// #NM, vector 7: device not available.
    Nm,
    /// #DF, vector 8: double fault (error code 0).
    Df,
    /// #TS, vector 10: invalid TSS (selector error code).
    Ts(u32),
    /// #NP, vector 11: segment not present.
    Np(u32),
    /// #SS, vector 12: stack-segment fault.
    Ss(u32),
    /// #GP, vector 13: general protection.
    Gp(u32),
    /// #PF, vector 14: page fault; `addr` goes to CR2.
    Pf { addr: u64, code: u32 },
    /// #MF, vector 16: x87 floating-point error.
    Mf,
    /// #AC, vector 17: alignment check (error code 0).
    Ac,
    /// #XM, vector 19: SIMD floating-point exception.
    Xm,
}

impl Fault {
    /// The IDT vector.
    pub fn vector(&self) -> u8 {
        match self {
            Fault::De => 0,
            Fault::Db => 1,
            Fault::Bp => 3,
            Fault::Of => 4,
            Fault::Br => 5,
            Fault::Ud => 6,
            Fault::Nm => 7,
            Fault::Df => 8,
            Fault::Ts(_) => 10,
            Fault::Np(_) => 11,
            Fault::Ss(_) => 12,
            Fault::Gp(_) => 13,
            Fault::Pf { .. } => 14,
            Fault::Mf => 16,
            Fault::Ac => 17,
            Fault::Xm => 19,
        }
    }

    /// The error code pushed by protected-mode delivery, if the exception has one.
    pub fn error_code(&self) -> Option<u32> {
        match *self {
            Fault::Df | Fault::Ac => Some(0),
            Fault::Ts(e) | Fault::Np(e) | Fault::Ss(e) | Fault::Gp(e) => Some(e),
            Fault::Pf { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Contributory exceptions for the double-fault rules (SDM Vol. 3A Table 6-4).
    pub fn is_contributory(&self) -> bool {
        matches!(
            self,
            Fault::De | Fault::Ts(_) | Fault::Np(_) | Fault::Ss(_) | Fault::Gp(_)
        )
    }

    /// Short mnemonic such as "#GP(0)" for diagnostics and traces.
    pub fn name(&self) -> String {
        let base = match self {
            Fault::De => "#DE",
            Fault::Db => "#DB",
            Fault::Bp => "#BP",
            Fault::Of => "#OF",
            Fault::Br => "#BR",
            Fault::Ud => "#UD",
            Fault::Nm => "#NM",
            Fault::Df => "#DF",
            Fault::Ts(_) => "#TS",
            Fault::Np(_) => "#NP",
            Fault::Ss(_) => "#SS",
            Fault::Gp(_) => "#GP",
            Fault::Pf { .. } => "#PF",
            Fault::Mf => "#MF",
            Fault::Ac => "#AC",
            Fault::Xm => "#XM",
        };
        match self {
            Fault::Pf { addr, code } => format!("#PF(addr={addr:#x}, code={code:#x})"),
            f => match f.error_code() {
                Some(e) => format!("{base}({e:#x})"),
                None => base.to_string(),
            },
        }
    }
}

/// Result of executing guest semantics.
pub type Res<T> = Result<T, Fault>;
