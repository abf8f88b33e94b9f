//! Protected-mode and IA-32e interrupt delivery through IDT gates (Intel SDM Vol. 3A §6.10-
//! §6.14). Also the home of task gates and stack switching.

use super::interrupt::EventKind;
use super::{Ctx, Fault, Platform, Res};

/// Delivers `vector` through the IDT.
pub fn deliver_protected<P: Platform + ?Sized>(
    _ctx: &mut Ctx<'_, P>,
    vector: u8,
    _kind: EventKind,
    _error_code: Option<u32>,
    _return_rip: u64,
) -> Res<()> {
    // Not implemented yet: report an invalid IDT entry, as a missing gate would.
    Err(Fault::Gp(u32::from(vector) * 8 + 2))
}
