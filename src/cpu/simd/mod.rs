//! MMX, SSE, SSE2, SSE3 and SSSE3 instructions (Intel SDM Vol. 1 chapters 9-12).
pub fn exec<P: super::Platform + ?Sized>(
    _c: &mut super::Ctx<'_, P>,
    _i: &iced_x86::Instruction,
) -> Option<super::Res<()>> {
    None
}
