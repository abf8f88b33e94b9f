#!/usr/bin/env python3
"""Creates TAP device NAME (root namespace) and relays its frames to/from a UDP peer: one
datagram per Ethernet frame. Used by scripts/usernet-tap-check.sh to put a real Linux network
stack (moved into a network namespace) on rinx's user-mode NAT. Linux-only, needs root."""
import fcntl, os, select, socket, struct, sys

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000

name, peer_host, peer_port = sys.argv[1], sys.argv[2], int(sys.argv[3])
tap = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(tap, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 0))
udp.connect((peer_host, peer_port))
print("ready", flush=True)
while True:
    r, _, _ = select.select([tap, udp], [], [])
    if tap in r:
        f = os.read(tap, 65536)
        udp.send(f)
    if udp in r:
        f = udp.recv(65536)
        os.write(tap, f)
