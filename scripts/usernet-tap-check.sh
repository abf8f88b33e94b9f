#!/usr/bin/env bash
# Manual end-to-end check of rinx's user-mode NAT (devices::net::user) against the host
# kernel's real TCP/IP stack and busybox udhcpc, without an emulated NIC: a TAP device in a
# private network namespace plays the guest. Needs Linux, root, /dev/net/tun, busybox,
# python3. Not part of CI (it needs root and network namespaces); run it by hand:
#   sudo bash scripts/usernet-tap-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NS=usernet-check
TAP=ukt0
BRIDGE_PORT=47555
HTTP_PORT=47580
FWD_PORT=47581
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cargo build -q -p devices --example usernet_udp_bridge
target/debug/examples/usernet_udp_bridge 127.0.0.1:$BRIDGE_PORT 127.0.0.1:$FWD_PORT 8080 &
pids+=($!)
sleep 0.5
python3 scripts/usernet-tap-bridge.py $TAP 127.0.0.1 $BRIDGE_PORT > "$work/bridge.log" &
pids+=($!)
for _ in $(seq 50); do grep -q ready "$work/bridge.log" 2>/dev/null && break; sleep 0.1; done
ip netns add "$NS"
ip link set $TAP netns "$NS"
nsx() { ip netns exec "$NS" "$@"; }
nsx ip link set lo up
nsx ip link set $TAP up

# 1. DHCP with busybox udhcpc; the script records the options it was given.
cat > "$work/udhcpc.sh" <<EOS
#!/bin/sh
env | grep -E '^(ip|subnet|router|dns|lease|serverid)=' | sort > "$work/dhcp.env"
[ "\$1" = bound ] && ip addr add \$ip/24 dev \$interface && ip route add default via \$router
exit 0
EOS
chmod +x "$work/udhcpc.sh"
nsx busybox udhcpc -i $TAP -f -q -n -t 5 -s "$work/udhcpc.sh"
cat "$work/dhcp.env"
grep -qx ip=10.0.2.15 "$work/dhcp.env"
grep -qx subnet=255.255.255.0 "$work/dhcp.env"
grep -qx router=10.0.2.2 "$work/dhcp.env"
grep -q '^dns=10.0.2.3' "$work/dhcp.env"
grep -qx lease=86400 "$work/dhcp.env"
grep -qx serverid=10.0.2.2 "$work/dhcp.env"
echo "PASS dhcp (busybox udhcpc)"

# 2. Ping the gateway.
nsx busybox ping -c 2 -W 2 10.0.2.2 >/dev/null
echo "PASS ping 10.0.2.2"

# 3. 64 MiB download from a host web server on 127.0.0.1 through 10.0.2.2.
head -c $((64 << 20)) /dev/urandom > "$work/big"
(cd "$work" && exec python3 -m http.server $HTTP_PORT --bind 127.0.0.1 >/dev/null 2>&1) &
pids+=($!)
sleep 1
t0=$(date +%s.%N)
nsx busybox wget -q -O "$work/got" "http://10.0.2.2:$HTTP_PORT/big"
t1=$(date +%s.%N)
cmp "$work/big" "$work/got"
echo "PASS 64 MiB host->guest byte-exact: $(python3 -c "print(f'{64*1.048576/($t1-$t0):.1f} MB/s')")"

# 4. 64 MiB upload guest->host (nc to a host listener through the gateway).
python3 - "$work/up" 47582 > "$work/up.log" 2>&1 <<'EOP' &
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[2]))); s.listen(1); c, _ = s.accept()
with open(sys.argv[1], "wb") as f:
    while True:
        b = c.recv(1 << 16)
        if not b: break
        f.write(b)
EOP
pids+=($!)
sleep 0.5
t0=$(date +%s.%N)
nsx busybox nc 10.0.2.2 47582 < "$work/big"
wait "${pids[-1]}"
t1=$(date +%s.%N)
cmp "$work/big" "$work/up"
echo "PASS 64 MiB guest->host byte-exact: $(python3 -c "print(f'{64*1.048576/($t1-$t0):.1f} MB/s')")"

# 5. Host forward 127.0.0.1:FWD_PORT -> guest:8080.
echo "hello from the guest" > "$work/hello"
nsx busybox nc -l -p 8080 < "$work/hello" > "$work/fwd.in" &
pids+=($!)
sleep 0.5
got=$(echo "hello from the host" | timeout 10 python3 -c "
import socket,sys
c=socket.create_connection(('127.0.0.1',$FWD_PORT)); c.sendall(sys.stdin.buffer.read()); c.shutdown(socket.SHUT_WR)
d=b''
while True:
    b=c.recv(4096)
    if not b: break
    d+=b
print(d.decode().strip())")
[ "$got" = "hello from the guest" ]
sleep 0.5
grep -q "hello from the host" "$work/fwd.in"
echo "PASS hostfwd tcp"
echo "ALL PASS"
