//! rinx: a full-system x86 emulator without hardware virtualization.
