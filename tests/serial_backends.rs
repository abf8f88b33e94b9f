//! The `--serial` host back-ends, driven through the real `rinx` binary with the built-in demo
//! guest: what the guest writes to COM1 must arrive on stdout (stdio) and on a loopback TCP
//! client (tcp:ADDR, which waits for the client before the guest starts, so nothing is lost).

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Lines the demo guest prints first and last (tests/demo_guest.rs checks all of them).
const FIRST: &str = "rinx demo: real mode (CS:IP = 0000:1000)";
const LAST: &str = "powering off (ACPI S5)";

fn rinx() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rinx"))
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rinx did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn check_demo_output(out: &str) {
    let out = out.replace("\r\n", "\n");
    assert!(out.starts_with(FIRST), "first line missing:\n{out}");
    assert!(
        out.lines().any(|l| l.contains(LAST)),
        "no power-off line:\n{out}"
    );
}

#[test]
fn stdio_backend_carries_the_guest_console_to_stdout() {
    let out = rinx()
        .args(["run", "--serial", "stdio"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run rinx");
    assert_eq!(out.status.code(), Some(0));
    check_demo_output(&String::from_utf8_lossy(&out.stdout));
}

#[test]
fn tcp_backend_waits_for_a_client_and_delivers_everything() {
    // A free loopback port (a tiny race with other processes is acceptable in a test).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = rinx()
        .args(["run", "--serial", &format!("tcp:127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start rinx");
    // The guest must not run before we connect: give it time it would need to finish.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        child.try_wait().unwrap(),
        None,
        "rinx ran without a serial client"
    );
    let start = Instant::now();
    let mut sock = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) if start.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("connect to rinx's serial port {port}: {e}"),
        }
    };
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut out = Vec::new();
    // rinx closes the socket when it exits.
    let _ = sock.read_to_end(&mut out);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), Some(0));
    check_demo_output(&String::from_utf8_lossy(&out));
}
