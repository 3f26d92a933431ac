package devstack

import (
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"strconv"
)

// Agent ports are drawn from below the kernel's ephemeral range. Ports
// from bind(":0") come from that range, and so do the source ports of every
// outgoing connection on the machine: a port picked with ":0" and released
// was taken by someone's connection before the agent bound it often enough
// to fail runs ("bind: address already in use"). Below the range only
// another random pick can collide.
const (
	agentPortFloor = 10000
	agentPortCeil  = 32768 // Linux's default ephemeral range starts here
)

// portRange is [floor, ceil) clipped below this machine's ephemeral range.
func portRange() (int, int) {
	lo, hi := agentPortFloor, agentPortCeil
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var eLo, eHi int
		if _, err := fmt.Sscan(string(b), &eLo, &eHi); err == nil && eLo > lo+1000 && eLo < hi {
			hi = eLo
		}
	}
	return lo, hi
}

// portFree reports whether port is free on 127.0.0.1 for TCP and UDP (serf
// gossips over both), holding the TCP listener so a caller choosing several
// ports cannot pick one twice.
func portFree(port int) (net.Listener, bool) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, false
	}
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		l.Close()
		return nil, false
	}
	u.Close()
	return l, true
}

// FreePorts reserves n distinct free ports on 127.0.0.1 below the
// ephemeral range. Another process may still grab a port before the agent
// binds it; that race is rare below the range.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	lo, hi := portRange()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			return nil, fmt.Errorf("no %d free loopback ports in [%d, %d)", n, lo, hi)
		}
		p := lo + mrand.IntN(hi-lo)
		if l, ok := portFree(p); ok {
			ls = append(ls, l)
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// FreePortPair reserves two consecutive free ports and returns the lower:
// Vault and OpenBao dev servers listen on the API port and the next one.
func FreePortPair() (int, error) {
	lo, hi := portRange()
	for range 1000 {
		p := lo + mrand.IntN(hi-lo-1)
		l1, ok := portFree(p)
		if !ok {
			continue
		}
		l2, ok := portFree(p + 1)
		l1.Close()
		if ok {
			l2.Close()
			return p, nil
		}
	}
	return 0, errors.New("no two consecutive free loopback ports found")
}
