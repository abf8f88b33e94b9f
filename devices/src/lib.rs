//! PC devices: port-I/O and MMIO bus, chipset, timers, UARTs, PCI. No CPU knowledge.
