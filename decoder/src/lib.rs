//! Guest instruction decoding (iced-x86) and classification, shared by the interpreter and the JIT.
