package daemon_test

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// oneBackend is a harness option: a single backend, so that every flow
// goes to it.
func oneBackend(o *testenv.Options) { o.Backends = 1 }

// connectWithin opens new connections to addr:9000 from the client, each
// attempt given 100 ms, until one is answered, and returns how long after
// start that was; it fails the test if none is by start + limit.
func (h *harness) connectWithin(start time.Time, addr netip.Addr, limit time.Duration) time.Duration {
	h.t.Helper()
	var last error
	for time.Since(start) < limit {
		var c net.Conn
		err := h.topo.Client.Do(func() error {
			var err error
			c, err = net.DialTimeout("tcp", netip.AddrPortFrom(addr, 9000).String(), 100*time.Millisecond)
			return err
		})
		if err == nil {
			_, err = (&conn{c: c, r: bufio.NewReader(c)}).exchange("hello")
			c.Close()
		}
		if took := time.Since(start); err == nil && took <= limit {
			return took
		}
		last = err
	}
	h.t.Fatalf("no new connection to %s:9000 answered within %s of the MAC change; last error: %v\ndaemon log:\n%s", addr, limit, last, h.log())
	return 0
}

// TestMACChangeFollowed replaces a dsr backend's NIC under live traffic:
// its MAC changes, and it announces the new one (gratuitous ARP,
// unsolicited neighbour advertisement) as a replaced VM does. The daemon
// resolved its MAC at start; new connections must reach it with the new
// MAC within a second, v4 and v6, and the flows that were open (TCP
// connections, a UDP stream) must carry on.
func TestMACChangeFollowed(t *testing.T) {
	h := newHarness(t, oneBackend)
	h.writeConfig(h.config())
	h.startDaemon()
	conns := append(h.openConns(5, vip4), h.openConns(5, vip6)...)
	stream := h.startProbe(vip4, 5*time.Millisecond)

	b := h.topo.Backends[0]
	if err := b.Sysctls(map[string]string{"net.ipv4.conf.eth0.arp_notify": "1", "net.ipv6.conf.eth0.ndisc_notify": "1"}); err != nil {
		t.Fatal(err)
	}
	newMAC := net.HardwareAddr{0x02, 0xfc, 0x02, 0xaa, 0x00, 0x0b}
	if err := b.SetMAC("eth0", newMAC); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	took4 := h.connectWithin(changed, vip4, time.Second)
	took6 := h.connectWithin(changed, vip6, time.Second)
	t.Logf("new connections reached the backend's new MAC %s after %s (v4), %s (v6); bound 1s",
		newMAC, took4.Round(time.Millisecond), took6.Round(time.Millisecond))

	h.checkConns(conns, "", "after the backend's MAC changed")
	// Every datagram sent from a second after the change on must be
	// echoed; the stream runs until 50 of them were sent.
	bound := changed.Add(time.Second)
	sentAfter := func() (after, lost int) {
		stream.mu.Lock()
		defer stream.mu.Unlock()
		for i, s := range stream.sent {
			if s.After(bound) {
				after++
				if stream.reply[i].IsZero() {
					lost++
				}
			}
		}
		return after, lost
	}
	require.Eventually(t, 5*time.Second, func() error {
		if n, _ := sentAfter(); n < 50 {
			return fmt.Errorf("the UDP stream sent %d datagrams after the bound in 5s, want 50", n)
		}
		return nil
	})
	stream.stop()
	if after, lost := sentAfter(); lost != 0 {
		t.Fatalf("UDP stream: %d datagrams sent from 1s after the change, %d of them lost; want none lost", after, lost)
	}
	if log := h.log(); !strings.Contains(log, "neighbour's mac changed") {
		t.Fatalf("the daemon did not log the MAC change:\n%s", log)
	}
}

// TestMACChangeSilentHealth replaces a dsr backend's NIC without an
// announcement: the LB's kernel keeps the old MAC, so the health check
// fails and the backend goes down. Going down has its MAC resolved again,
// the check then passes and the backend comes back with the new MAC. The
// bound: detection (interval × fall + one interval = 600 ms), rise (2 ×
// 200 ms), a second for the MAC, and a second of slack for a busy machine.
func TestMACChangeSilentHealth(t *testing.T) {
	h := newHarness(t, oneBackend)
	h.writeConfig(h.healthConfig())
	h.startDaemon()
	web := api.VIPRef{Protocol: "tcp", Address: vip4, Port: 9000}
	h.waitHealth(web, "backend1", "up", 5*time.Second)
	h.connectWithin(time.Now(), vip4, time.Second)

	b := h.topo.Backends[0]
	newMAC := net.HardwareAddr{0x02, 0xfc, 0x02, 0xbb, 0x00, 0x0b}
	if err := b.SetMAC("eth0", newMAC); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	took := h.connectWithin(changed, vip4, 3*time.Second)
	t.Logf("new connections reached the backend's new MAC %s after %s; bound 3s", newMAC, took.Round(time.Millisecond))
	// The way back went through the health check: else this test shows
	// nothing about re-resolving a down backend.
	if log := h.log(); !strings.Contains(log, "backend down") || !strings.Contains(log, "neighbour's mac changed") {
		t.Fatalf("the backend did not go down and come back with its MAC changed:\n%s", log)
	}
}
