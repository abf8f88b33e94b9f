//! Boot protocols (Linux, Multiboot), e820, ACPI and MP tables. No CPU knowledge.
