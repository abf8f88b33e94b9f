//! NICs: each `--nic` becomes a PCI function in slots 16-23 (00:10.0, 00:11.0, ...) whose
//! register BAR is assigned firmware-style in the NIC part of the PCI MMIO window
//! ([`NIC_MMIO_BASE`], 128 KiB per NIC), with a back-end (switch, TAP, user-mode NAT) behind a
//! [`NetPort`]. Transmit and receive work runs on the vCPU thread after each slice, with DMA
//! through [`DmaMemory`]; while the guest halts, [`Network::wait`] returns as soon as a frame
//! arrives for a NIC that can take it, so a sleeping guest sees packets without a full timer
//! sleep of latency.
//!
//! Interrupts: the e1000 uses legacy INTx on the PIRQ its slot is wired to
//! (`devices::pci::intx_line`, described to the guest by the ACPI `_PRT`); the interrupt line
//! register holds the ISA IRQ firmware routed that PIRQ to. virtio-net uses MSI-X, with the
//! same INTx fallback. A PIRQ shared by several INTx devices (every fourth slot) is a wired-OR
//! (`devices::irq`), asserted while any of them asserts it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam::channel::{Receiver, Select};
use devices::apic::ApicBus;
use devices::bus::{Bus, DeviceId};
use devices::net::e1000::E1000;
use devices::net::nic::{BarWindow, ConfigHandle, SharedFunction};
use devices::net::user::UserConfig;
use devices::net::virtio_net::{VirtioNet, RX};
use devices::net::{MacAddr, NetPort};
use devices::pci::{devfn, PciRoot};
use devices::virtio::pci::status;
use devices::virtio::VirtioPci;
use devices::IrqLines;

use super::storage::DmaMemory;
use crate::cli::spec::{NetBackendSpec, NicModel, NicSpec};
use crate::exec::dcache::DecodeCache;
use crate::mmu::GuestMemory;

/// Start of the NICs' part of the PCI MMIO window.
pub const NIC_MMIO_BASE: u64 = 0xe200_0000;
/// Size of the NICs' part of the PCI MMIO window (bytes).
pub const NIC_MMIO_SIZE: u64 = 0x0100_0000;
/// Bytes of the window reserved per NIC (the e1000's BAR size; virtio-net's BAR is smaller).
pub const NIC_BAR_STRIDE: u64 = 0x2_0000;
/// First PCI device number used for NICs.
pub const FIRST_NIC_SLOT: u8 = 16;
/// Most NICs a machine can have (slots 16-21).
pub const MAX_NICS: usize = 6;

#[derive(Debug)]
enum Nic {
    E1000(Arc<Mutex<E1000>>),
    Virtio(Arc<Mutex<VirtioPci<VirtioNet>>>),
}

/// The NICs of a machine.
#[derive(Debug, Default)]
pub struct Network {
    nics: Vec<Nic>,
    /// User-mode NAT back-ends; dropping a handle stops its threads, so they live as long as
    /// the machine.
    _user_nets: Vec<devices::net::user::UserNetHandle>,
    /// Raised by the back-end threads after each frame they queue for a NIC
    /// ([`NetPort::set_arrival_flag`]); the vCPU loop polls it to end a slice early and
    /// deliver the frame.
    arrival: Arc<AtomicBool>,
    /// Counters for `--stats`.
    pub stats: NetStats,
}

/// Where the vCPU loop noticed network work (for `--stats`).
#[derive(Debug, Default, Clone, Copy)]
pub struct NetStats {
    /// Slices ended early because a back-end queued a frame for a NIC.
    pub arrival_stops: u64,
    /// Slices ended early because a guest register write gave a NIC work (transmit doorbell,
    /// receive buffers posted while frames wait).
    pub doorbell_stops: u64,
    /// Halt waits cut short by an arriving frame.
    pub halt_wakes: u64,
}

/// The user-mode NAT back-end (`devices::net::user`): its threads run until `handles` drops.
fn user_backend(
    cfg: &UserConfig,
    handles: &mut Vec<devices::net::user::UserNetHandle>,
) -> Result<NetPort, String> {
    let (port, handle) =
        devices::net::user::spawn(cfg.clone()).map_err(|e| format!("net=user: {e}"))?;
    for (fwd, addr) in cfg.host_forwards.iter().zip(handle.forward_addrs()) {
        log::info!(target: "rinx::net", "hostfwd {:?} {addr} -> guest port {}", fwd.proto, fwd.guest_port);
    }
    handles.push(handle);
    Ok(port)
}

fn open_backend(
    spec: &NetBackendSpec,
    handles: &mut Vec<devices::net::user::UserNetHandle>,
) -> Result<NetPort, String> {
    match spec {
        NetBackendSpec::User(cfg) => user_backend(cfg, handles),
        NetBackendSpec::Switch(addr) => {
            devices::net::switch::connect(*addr).map_err(|e| format!("net=switch:{addr}: {e}"))
        }
        NetBackendSpec::Tap(name) => {
            devices::net::tap::open(name).map_err(|e| format!("net=tap:{name}: {e}"))
        }
    }
}

/// The station address NIC `index` gets without `mac=`: locally administered (02:...), with
/// the process ID in it so two machines on one switch do not collide.
pub fn default_mac(index: usize) -> MacAddr {
    let pid = std::process::id();
    [
        0x02,
        0x52,
        (pid >> 16) as u8,
        (pid >> 8) as u8,
        pid as u8,
        index as u8,
    ]
}

impl Network {
    /// Create the NICs of `specs` on `pci` and their MMIO window on `bus`, connecting each to
    /// its back-end. Errors: too many NICs, a back-end that cannot be opened.
    pub fn build(
        specs: &[NicSpec],
        bus: &mut Bus,
        pci: DeviceId,
        lines: &IrqLines,
        apic: &ApicBus,
    ) -> Result<Self, String> {
        if specs.len() > MAX_NICS {
            return Err(format!("at most {MAX_NICS} NICs (got {})", specs.len()));
        }
        let mut nics = Vec::new();
        let mut user_nets = Vec::new();
        let mut functions: Vec<SharedFunction> = Vec::new();
        let arrival = Arc::new(AtomicBool::new(false));
        for (i, spec) in specs.iter().enumerate() {
            let port = open_backend(&spec.net, &mut user_nets)?;
            port.set_arrival_flag(arrival.clone());
            let mac = spec.mac.unwrap_or_else(|| default_mac(i));
            let bar = (NIC_MMIO_BASE + i as u64 * NIC_BAR_STRIDE) as u32;
            let slot = FIRST_NIC_SLOT + i as u8;
            let intx = devices::pci::intx_line(lines, slot, 1);
            let irq = devices::pci::firmware_interrupt_line(slot, 1);
            let shared: SharedFunction = match spec.model {
                NicModel::E1000 => {
                    let mut d = E1000::new(mac, port, intx);
                    d.assign_bar0(bar);
                    d.set_interrupt_line(irq);
                    let d = Arc::new(Mutex::new(d));
                    nics.push(Nic::E1000(d.clone()));
                    d
                }
                NicModel::Virtio => {
                    let mut d =
                        VirtioPci::new(VirtioNet::new(mac, port), intx, Box::new(apic.clone()));
                    d.assign_bar0(bar);
                    d.set_interrupt_line(irq);
                    let d = Arc::new(Mutex::new(d));
                    nics.push(Nic::Virtio(d.clone()));
                    d
                }
            };
            bus.pio_device_mut::<PciRoot>(pci)
                .ok_or("no PCI host bridge")?
                .insert(devfn(slot, 0), Box::new(ConfigHandle(shared.clone())));
            log::info!(target: "rinx::network", "nic {i}: {:?} {} at 00:{slot:02x}.0, BAR0 {bar:#x}, IRQ {irq}, {:?}",
                spec.model, fmt_mac(&mac), spec.net);
            functions.push(shared);
        }
        if !functions.is_empty() {
            bus.add_mmio(
                NIC_MMIO_BASE,
                NIC_MMIO_SIZE,
                Box::new(BarWindow::new(NIC_MMIO_BASE, functions)),
            )
            .map_err(|e| e.to_string())?;
        }
        Ok(Self {
            nics,
            _user_nets: user_nets,
            arrival,
            stats: NetStats::default(),
        })
    }

    /// Whether a back-end queued a frame since the last [`Network::take_arrival`] (a relaxed
    /// load: cheap enough to poll between translated blocks).
    pub fn arrival_pending(&self) -> bool {
        self.arrival.load(Ordering::Relaxed)
    }

    /// Clears the arrival flag, returning whether it was raised. Called before
    /// [`Network::process`], so a frame queued during processing raises it again.
    pub fn take_arrival(&self) -> bool {
        self.arrival.swap(false, Ordering::Acquire)
    }

    /// Whether `gpa` lies in the NICs' MMIO window.
    pub fn in_window(&self, gpa: u64) -> bool {
        !self.nics.is_empty() && gpa.wrapping_sub(NIC_MMIO_BASE) < NIC_MMIO_SIZE
    }

    /// Whether a NIC has work for [`Network::process`] now: descriptors to transmit, a
    /// notified queue, or waiting frames it has room for.
    pub fn has_work(&self) -> bool {
        self.nics.iter().any(|nic| match nic {
            Nic::E1000(d) => d.lock().map(|d| d.has_work()).unwrap_or(false),
            Nic::Virtio(d) => d
                .lock()
                .map(|d| d.has_work() || d.device.wants_rx_kick())
                .unwrap_or(false),
        })
    }

    /// Whether the machine has NICs.
    pub fn is_empty(&self) -> bool {
        self.nics.is_empty()
    }

    /// Transmit what the guest queued and deliver arrived frames, against guest memory.
    pub fn process(&self, mem: &mut GuestMemory, dcache: &mut DecodeCache) {
        for nic in &self.nics {
            match nic {
                Nic::E1000(d) => {
                    let Ok(mut d) = d.lock() else { continue };
                    if d.has_work() {
                        d.process(&mut DmaMemory {
                            mem: &mut *mem,
                            dcache: &mut *dcache,
                        });
                    }
                }
                Nic::Virtio(d) => {
                    let Ok(mut d) = d.lock() else { continue };
                    if d.status() & status::DRIVER_OK == 0 {
                        // No driver: frames on the wire are lost, as with a NIC that is down.
                        while d.device.port().try_recv().is_some() {}
                    } else if d.device.wants_rx_kick() {
                        d.kick(RX);
                    }
                    if d.has_work() {
                        d.process(&mut DmaMemory {
                            mem: &mut *mem,
                            dcache: &mut *dcache,
                        });
                    }
                }
            }
        }
    }

    /// Receivers of the NICs that could store a frame now.
    fn ready_receivers(&self) -> Vec<Receiver<Vec<u8>>> {
        let mut out = Vec::new();
        for nic in &self.nics {
            match nic {
                Nic::E1000(d) => {
                    if let Ok(d) = d.lock() {
                        if d.can_receive() {
                            out.push(d.port().rx.clone());
                        }
                    }
                }
                Nic::Virtio(d) => {
                    if let Ok(d) = d.lock() {
                        if d.status() & status::DRIVER_OK != 0 && d.device.can_receive() {
                            out.push(d.device.port().rx.clone());
                        }
                    }
                }
            }
        }
        out
    }

    /// Sleep for at most `timeout`, returning early when a frame arrives for a NIC that can
    /// receive it. Returns whether a frame is waiting.
    pub fn wait(&self, timeout: Duration) -> bool {
        let rx = self.ready_receivers();
        if rx.is_empty() {
            std::thread::sleep(timeout);
            return false;
        }
        let start = std::time::Instant::now();
        let mut sel = Select::new();
        for r in &rx {
            sel.recv(r);
        }
        match sel.ready_timeout(timeout) {
            Ok(i) if !rx[i].is_empty() => true,
            Ok(_) => {
                // Ready but empty: the back-end is gone (disconnected). Sleep out the rest
                // instead of spinning.
                std::thread::sleep(timeout.saturating_sub(start.elapsed()));
                false
            }
            Err(_) => false,
        }
    }
}

fn fmt_mac(m: &MacAddr) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::bus::Port;
    use devices::events::event_channel;

    fn board() -> (Bus, DeviceId) {
        let mut bus = Bus::new();
        let (tx, _rx) = event_channel();
        let pci = bus
            .add_pio_at(Box::new(PciRoot::new(tx)), &devices::pci::PCI_WINDOWS)
            .unwrap();
        (bus, pci)
    }

    fn cfg(bus: &mut Bus, slot: u32, off: u32) -> u32 {
        bus.pio_write(Port(0xcf8), 4, 0x8000_0000 | (slot << 11) | off);
        bus.pio_read(Port(0xcfc), 4)
    }

    #[test]
    fn nics_enumerate_and_decode_their_bars() {
        let sw = devices::net::switch::Switch::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = sw.local_addr().unwrap();
        let specs = [
            crate::cli::spec::parse_nic(&format!(
                "model=e1000,net=switch:{addr},mac=52:54:00:00:00:01"
            ))
            .unwrap(),
            crate::cli::spec::parse_nic(&format!("model=virtio,net=switch:{addr}")).unwrap(),
        ];
        let (mut bus, pci) = board();
        let lines = IrqLines::new();
        let net = Network::build(&specs, &mut bus, pci, &lines, &ApicBus::new()).unwrap();
        assert!(!net.is_empty());
        assert_eq!(cfg(&mut bus, 16, 0), 0x100e_8086);
        assert_eq!(cfg(&mut bus, 16, 0x10), NIC_MMIO_BASE as u32);
        assert_eq!(
            cfg(&mut bus, 16, 0x3c) & 0xffff,
            0x0100 | u32::from(devices::pci::firmware_interrupt_line(16, 1))
        );
        assert_eq!(cfg(&mut bus, 17, 0), 0x1041_1af4);
        assert_eq!(
            cfg(&mut bus, 17, 0x3c) & 0xff,
            u32::from(devices::pci::firmware_interrupt_line(17, 1))
        );
        // e1000 RAL0 holds the MAC's first four bytes.
        assert_eq!(bus.mmio_read(NIC_MMIO_BASE + 0x5400, 4), 0x0000_5452);
        // virtio-net device config: the MAC.
        let v = NIC_MMIO_BASE + NIC_BAR_STRIDE;
        assert_eq!(
            bus.mmio_read(v + devices::virtio::pci::layout::DEVICE, 1),
            u64::from(default_mac(1)[0])
        );
        // Nothing is ready to receive: wait sleeps the timeout.
        assert!(!net.wait(Duration::from_millis(1)));
    }

    #[test]
    fn arriving_frames_raise_the_arrival_flag_and_tdt_writes_make_work() {
        let mut sw = devices::net::switch::Switch::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = sw.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let t = std::thread::spawn(move || sw.run(&s2));
        let spec = crate::cli::spec::parse_nic(&format!(
            "model=e1000,net=switch:{addr},mac=52:54:00:00:00:01"
        ))
        .unwrap();
        let (mut bus, pci) = board();
        let net =
            Network::build(&[spec], &mut bus, pci, &IrqLines::new(), &ApicBus::new()).unwrap();
        assert!(net.in_window(NIC_MMIO_BASE + 0x3818));
        assert!(!net.in_window(NIC_MMIO_BASE + NIC_MMIO_SIZE));
        assert!(!net.has_work());
        // A transmit doorbell (TDT) gives the NIC work.
        bus.mmio_write(NIC_MMIO_BASE + 0x3818, 4, 1);
        assert!(net.has_work());
        // Another port on the switch broadcasts; the machine's flag goes up without the vCPU
        // touching the channel.
        let peer = devices::net::switch::connect(addr).unwrap();
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[2, 0, 0, 0, 0, 9, 0x08, 0x00]);
        frame.resize(60, 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !net.arrival_pending() && std::time::Instant::now() < deadline {
            assert!(peer.send(frame.clone()));
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(net.take_arrival());
        assert!(!net.arrival_pending());
        stop.store(true, Ordering::Relaxed);
        drop(peer);
        t.join().unwrap();
    }

    #[test]
    fn user_networking_starts_the_nat_and_a_busy_forward_port_is_a_clear_error() {
        let spec = crate::cli::spec::parse_nic("model=e1000,net=user").unwrap();
        let (mut bus, pci) = board();
        let net = Network::build(&[spec], &mut bus, pci, &IrqLines::new(), &ApicBus::new())
            .expect("the NAT back-end starts");
        drop(net);
        // A host port already taken cannot be forwarded.
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let spec = crate::cli::spec::parse_nic(&format!(
            "model=virtio,net=user,hostfwd=tcp:127.0.0.1:{port}-:80"
        ))
        .unwrap();
        let (mut bus, pci) = board();
        let e =
            Network::build(&[spec], &mut bus, pci, &IrqLines::new(), &ApicBus::new()).unwrap_err();
        assert!(e.starts_with("net=user: "), "{e}");
        assert!(e.contains(&port.to_string()), "{e}");
    }
}
