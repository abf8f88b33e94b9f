//! Host back-ends for the guest's serial ports: stdio (raw mode, Ctrl-A escapes like QEMU's
//! `-serial mon:stdio`), a file, a loopback TCP socket, or nothing.

use crate::cli::spec::SerialSpec;
use devices::uart::SerialBackend;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

/// Set by the stdio reader when the user types Ctrl-A x.
#[derive(Debug, Clone, Default)]
pub struct QuitFlag(Arc<AtomicBool>);

impl QuitFlag {
    /// True once the user asked to quit.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Output to stdout; input from a reader thread on stdin.
struct StdioBackend {
    rx: crossbeam::channel::Receiver<u8>,
    out: std::io::Stdout,
}

impl SerialBackend for StdioBackend {
    fn write_byte(&mut self, byte: u8) {
        let mut o = self.out.lock();
        let _ = o.write_all(&[byte]);
        // Flush at line ends (and when the guest waits for input, via poll_input).
        if byte == b'\n' {
            let _ = o.flush();
        }
    }
    fn poll_input(&mut self) -> Option<u8> {
        let _ = self.out.lock().flush();
        self.rx.try_recv().ok()
    }
}

/// Output appended to a file; no input.
struct FileBackend(std::io::BufWriter<std::fs::File>);

impl SerialBackend for FileBackend {
    fn write_byte(&mut self, byte: u8) {
        let _ = self.0.write_all(&[byte]);
        if byte == b'\n' {
            let _ = self.0.flush();
        }
    }
}

impl Drop for FileBackend {
    fn drop(&mut self) {
        let _ = self.0.flush();
    }
}

/// A loopback TCP port: bytes go to the connected client (dropped while none is connected).
struct TcpBackend {
    client: Arc<std::sync::Mutex<Option<std::net::TcpStream>>>,
    rx: crossbeam::channel::Receiver<u8>,
}

impl SerialBackend for TcpBackend {
    fn write_byte(&mut self, byte: u8) {
        if let Ok(mut c) = self.client.lock() {
            if let Some(s) = c.as_mut() {
                if s.write_all(&[byte]).is_err() {
                    *c = None;
                }
            }
        }
    }
    fn poll_input(&mut self) -> Option<u8> {
        self.rx.try_recv().ok()
    }
}

/// Restores the terminal on drop (normal exit, error or panic unwinding).
#[derive(Debug)]
pub struct RawModeGuard(bool);

impl Drop for RawModeGuard {
    fn drop(&mut self) {
        if self.0 {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

/// Builds the back-end for `spec`. For stdio on a terminal, raw mode is enabled until the
/// returned guard drops; Ctrl-A x sets `quit`, Ctrl-A c is reserved (ignored), Ctrl-A Ctrl-A
/// sends one Ctrl-A.
pub fn open(
    spec: &SerialSpec,
    quit: &QuitFlag,
) -> std::io::Result<(Box<dyn SerialBackend>, RawModeGuard)> {
    match spec {
        SerialSpec::Null => Ok((Box::new(devices::uart::NullBackend), RawModeGuard(false))),
        SerialSpec::File(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
            Ok((
                Box::new(FileBackend(std::io::BufWriter::new(f))),
                RawModeGuard(false),
            ))
        }
        SerialSpec::Tcp(addr) => {
            let l = TcpListener::bind(addr)?;
            let client = Arc::new(std::sync::Mutex::new(None));
            let (tx, rx) = crossbeam::channel::unbounded();
            let c2 = client.clone();
            // Like QEMU's `-serial tcp:...,server,wait`: the guest starts once a client is
            // connected, so that no early boot output is lost.
            eprintln!("rinx: serial: waiting for a client on tcp {addr}");
            let first = l.accept()?.0;
            // The writer side is in place before the guest runs (set here, not by the reader
            // thread, which would race with the guest's first bytes).
            let first_reader = first.try_clone()?;
            if let Ok(mut c) = client.lock() {
                *c = Some(first);
            }
            thread::spawn(move || {
                let later = l.incoming().flatten().filter_map(|s| {
                    let reader = s.try_clone().ok()?;
                    if let Ok(mut c) = c2.lock() {
                        *c = Some(s);
                    }
                    Some(reader)
                });
                for mut reader in std::iter::once(first_reader).chain(later) {
                    let mut b = [0u8; 256];
                    while let Ok(n) = reader.read(&mut b) {
                        if n == 0 {
                            break;
                        }
                        for &x in &b[..n] {
                            let _ = tx.send(x);
                        }
                    }
                }
            });
            Ok((Box::new(TcpBackend { client, rx }), RawModeGuard(false)))
        }
        SerialSpec::Stdio => {
            use std::io::IsTerminal;
            let tty = std::io::stdin().is_terminal();
            let raw = tty && crossterm::terminal::enable_raw_mode().is_ok();
            let (tx, rx) = crossbeam::channel::unbounded();
            let quit = quit.clone();
            thread::spawn(move || {
                let mut stdin = std::io::stdin();
                let mut b = [0u8; 64];
                let mut escape = false;
                while let Ok(n) = stdin.read(&mut b) {
                    if n == 0 {
                        break;
                    }
                    for &x in &b[..n] {
                        if escape {
                            escape = false;
                            match x {
                                b'x' | b'X' => quit.set(),
                                0x01 => {
                                    let _ = tx.send(0x01);
                                }
                                _ => {} // Ctrl-A c and others: reserved.
                            }
                        } else if x == 0x01 && raw {
                            escape = true;
                        } else {
                            let _ = tx.send(x);
                        }
                    }
                }
            });
            Ok((
                Box::new(StdioBackend {
                    rx,
                    out: std::io::stdout(),
                }),
                RawModeGuard(raw),
            ))
        }
    }
}
