//! A small AML (ACPI Machine Language) encoder for the DSDT: just the terms rinx's namespace
//! needs (ACPI 6.5 §20, "ACPI Machine Language Specification"). Each function returns the
//! encoded bytes of one term; composite terms take their already encoded children.

use crate::acpi::{aml_integer, aml_pkg_length};

/// `NameSeg` (§20.2.2): four characters, padded with `_`. Panics on a name longer than four
/// characters or with characters outside `[A-Z0-9_]` (names are compile-time constants).
fn name_seg(s: &str) -> [u8; 4] {
    assert!(s.len() <= 4, "NameSeg {s:?} longer than 4");
    let mut o = [b'_'; 4];
    for (i, c) in s.bytes().enumerate() {
        assert!(
            c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_',
            "NameSeg {s:?}"
        );
        o[i] = c;
    }
    o
}

/// `NameString` (§20.2.2) from a path like `"PCI0"`, `"\\_SB.LNKA"` or `"^ISA.PRQA"`.
pub fn name(path: &str) -> Vec<u8> {
    let mut o = Vec::new();
    let mut rest = path;
    if let Some(r) = rest.strip_prefix('\\') {
        o.push(b'\\');
        rest = r;
    }
    while let Some(r) = rest.strip_prefix('^') {
        o.push(b'^');
        rest = r;
    }
    let segs: Vec<&str> = rest.split('.').filter(|s| !s.is_empty()).collect();
    match segs.len() {
        0 => o.push(0x00), // NullName
        1 => {}
        2 => o.push(0x2E), // DualNamePrefix
        n => {
            o.push(0x2F); // MultiNamePrefix
            o.push(n as u8);
        }
    }
    for s in segs {
        o.extend_from_slice(&name_seg(s));
    }
    o
}

/// An opcode followed by a PkgLength covering `body`.
fn with_pkg(op: &[u8], body: &[u8]) -> Vec<u8> {
    let mut o = op.to_vec();
    o.extend(aml_pkg_length(body.len()));
    o.extend_from_slice(body);
    o
}

fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// `Name(path, value)` (DefName, §20.2.5.1).
pub fn def_name(path: &str, value: &[u8]) -> Vec<u8> {
    concat(&[vec![0x08], name(path), value.to_vec()])
}

/// `Scope(path) { terms }` (DefScope).
pub fn scope(path: &str, terms: &[Vec<u8>]) -> Vec<u8> {
    with_pkg(&[0x10], &concat(&[name(path), terms.concat()]))
}

/// `Device(path) { terms }` (DefDevice, ExtOpPrefix 0x82).
pub fn device(path: &str, terms: &[Vec<u8>]) -> Vec<u8> {
    with_pkg(&[0x5B, 0x82], &concat(&[name(path), terms.concat()]))
}

/// `Method(path, args, NotSerialized) { terms }` (DefMethod).
pub fn method(path: &str, args: u8, terms: &[Vec<u8>]) -> Vec<u8> {
    with_pkg(
        &[0x14],
        &concat(&[name(path), vec![args & 7], terms.concat()]),
    )
}

/// `Method(path, args, Serialized) { terms }`: for methods that create named objects, so
/// concurrent calls do not collide on them (ACPI 6.5 §19.6.85).
pub fn method_serialized(path: &str, args: u8, terms: &[Vec<u8>]) -> Vec<u8> {
    with_pkg(
        &[0x14],
        &concat(&[name(path), vec![(args & 7) | 0x08], terms.concat()]),
    )
}

/// `Package() { elements }` (DefPackage; at most 255 elements).
pub fn package(elements: &[Vec<u8>]) -> Vec<u8> {
    assert!(elements.len() <= 255, "Package with more than 255 elements");
    with_pkg(
        &[0x12],
        &concat(&[vec![elements.len() as u8], elements.concat()]),
    )
}

/// `Buffer() { bytes }` (DefBuffer) with the size given as an integer.
pub fn buffer(bytes: &[u8]) -> Vec<u8> {
    with_pkg(
        &[0x11],
        &concat(&[aml_integer(bytes.len() as u64), bytes.to_vec()]),
    )
}

/// `ResourceTemplate() { descriptors }`: a buffer of resource descriptors closed by an End
/// Tag (ACPI 6.5 §6.4.2.9) with checksum 0 ("treated as if the checksum operation succeeded").
pub fn resource_template(descriptors: &[Vec<u8>]) -> Vec<u8> {
    let mut b = descriptors.concat();
    b.extend_from_slice(&[0x79, 0x00]);
    buffer(&b)
}

/// `EISAID("PNP0A03")` as the compressed 32-bit EISA ID integer (ACPI 6.5 §6.1.5).
pub fn eisa_id(id: &str) -> Vec<u8> {
    let b = id.as_bytes();
    assert!(b.len() == 7, "EISA ID {id:?}");
    let c = |i: usize| u32::from(b[i] - b'@') & 0x1F;
    let hex = u32::from_str_radix(&id[3..], 16).expect("EISA ID product number");
    let v = (c(0) << 26) | (c(1) << 21) | (c(2) << 16) | hex;
    // Stored big-endian-ish: the byte order of the encoded value is swapped.
    aml_integer(u64::from(v.swap_bytes()))
}

/// `If(predicate) { terms }` (DefIfElse without Else).
pub fn if_(predicate: &[u8], terms: &[Vec<u8>]) -> Vec<u8> {
    with_pkg(&[0xA0], &concat(&[predicate.to_vec(), terms.concat()]))
}

/// `Return(value)`.
pub fn return_(value: &[u8]) -> Vec<u8> {
    concat(&[vec![0xA4], value.to_vec()])
}

/// `Store(source, target)`.
pub fn store(source: &[u8], target: &[u8]) -> Vec<u8> {
    concat(&[vec![0x70], source.to_vec(), target.to_vec()])
}

/// `And(a, b, target)`; `target` may be [`NULL_TARGET`].
pub fn and(a: &[u8], b: &[u8], target: &[u8]) -> Vec<u8> {
    concat(&[vec![0x7B], a.to_vec(), b.to_vec(), target.to_vec()])
}

/// `Or(a, b, target)`.
pub fn or(a: &[u8], b: &[u8], target: &[u8]) -> Vec<u8> {
    concat(&[vec![0x7D], a.to_vec(), b.to_vec(), target.to_vec()])
}

/// `ShiftLeft(a, count, target)`.
pub fn shift_left(a: &[u8], count: &[u8], target: &[u8]) -> Vec<u8> {
    concat(&[vec![0x79], a.to_vec(), count.to_vec(), target.to_vec()])
}

/// `Subtract(a, b, target)`.
pub fn subtract(a: &[u8], b: &[u8], target: &[u8]) -> Vec<u8> {
    concat(&[vec![0x74], a.to_vec(), b.to_vec(), target.to_vec()])
}

/// `FindSetRightBit(source, target)`: 1-based index of the lowest set bit, 0 if none.
pub fn find_set_right_bit(source: &[u8], target: &[u8]) -> Vec<u8> {
    concat(&[vec![0x82], source.to_vec(), target.to_vec()])
}

/// `LLess(a, b)`.
pub fn lless(a: &[u8], b: &[u8]) -> Vec<u8> {
    concat(&[vec![0x95], a.to_vec(), b.to_vec()])
}

/// `LEqual(a, b)`.
pub fn lequal(a: &[u8], b: &[u8]) -> Vec<u8> {
    concat(&[vec![0x93], a.to_vec(), b.to_vec()])
}

/// `CreateWordField(buffer, byte_index, name)`.
pub fn create_word_field(buf: &[u8], byte_index: &[u8], field: &str) -> Vec<u8> {
    concat(&[vec![0x8B], buf.to_vec(), byte_index.to_vec(), name(field)])
}

/// `OperationRegion(name, space, offset, length)` (ExtOpPrefix 0x80).
pub fn op_region(region: &str, space: u8, offset: u64, len: u64) -> Vec<u8> {
    concat(&[
        vec![0x5B, 0x80],
        name(region),
        vec![space],
        aml_integer(offset),
        aml_integer(len),
    ])
}

/// Region space PCI_Config (ACPI 6.5 §19.6.100, Table 19.x).
pub const SPACE_PCI_CONFIG: u8 = 0x02;

/// `Field(region, ByteAcc, NoLock, Preserve) { name, bits, ... }` (ExtOpPrefix 0x81).
pub fn field_bytes(region: &str, fields: &[(&str, u8)]) -> Vec<u8> {
    let mut body = name(region);
    body.push(0x01); // AccessType ByteAcc, NoLock, Preserve
    for (f, bits) in fields {
        body.extend_from_slice(&name_seg(f));
        // The field's bit length is a PkgLength of its own value; below 64 it is one byte.
        assert!(*bits < 64, "field {f:?} of {bits} bits");
        body.push(*bits);
    }
    with_pkg(&[0x5B, 0x81], &body)
}

/// `Arg0`..`Arg6`.
pub fn arg(n: u8) -> Vec<u8> {
    vec![0x68 + n.min(6)]
}

/// `Local0`..`Local7`.
pub fn local(n: u8) -> Vec<u8> {
    vec![0x60 + n.min(7)]
}

/// The "no target" operand of arithmetic operators (NullName).
pub const NULL_TARGET: [u8; 1] = [0x00];

/// Integer constant (re-export of [`aml_integer`]).
pub fn int(v: u64) -> Vec<u8> {
    aml_integer(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(name("PCI0"), b"PCI0");
        assert_eq!(name("\\_SB.LNKA"), b"\\\x2E_SB_LNKA");
        assert_eq!(name("\\_SB.PCI0.ISA"), b"\\\x2F\x03_SB_PCI0ISA_");
        assert_eq!(name("^ISA"), b"^ISA_");
        // EISAID("PNP0A03") = 0x030AD041 as ASL compilers encode it.
        assert_eq!(eisa_id("PNP0A03"), [0x0C, 0x41, 0xD0, 0x0A, 0x03]);
        assert_eq!(eisa_id("PNP0C0F"), [0x0C, 0x41, 0xD0, 0x0C, 0x0F]);
        assert_eq!(
            field_bytes("PIRQ", &[("PRQA", 8)]),
            [0x5B, 0x81, 0x0B, b'P', b'I', b'R', b'Q', 0x01, b'P', b'R', b'Q', b'A', 8]
        );
    }
}
