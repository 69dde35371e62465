package daemon_test

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

var virtualAddr = netip.MustParseAddr("198.18.0.100")

// vrrpConfig is a node's config: the echo and UDP VIPs, and VRRP holding
// 198.18.0.100, the router's next hop for the VIPs.
func (h *harness) vrrpConfig(instance string, priority int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "instance: %s\nbpffs: %s\ninterfaces:\n  - name: eth0\napi:\n  socket: %s\nmetrics: {address: \"off\"}\n", instance, h.dir, h.socket)
	fmt.Fprintf(&sb, "vrrp:\n  interface: eth0\n  vrid: 51\n  priority: %d\n  advert_interval: 10\n  virtual_addresses: [%s/24]\nvips:\n", priority, virtualAddr)
	for _, v := range []struct {
		port  int
		proto string
	}{{9000, "tcp"}, {53, "udp"}} {
		fmt.Fprintf(&sb, "  - address: %s\n    port: %d\n    protocol: %s\n    backends:\n", vip4, v.port, v.proto)
		for _, b := range h.topo.Backends {
			fmt.Fprintf(&sb, "      - address: %s\n", b.IPv4)
		}
	}
	return sb.String()
}

// node returns a second daemon handle on host, sharing the topology.
func (h *harness) node(host *testenv.Host) *harness {
	n := *h
	n.lb = host
	n.socket = filepath.Join(h.t.TempDir(), "fulcrum.sock")
	n.logPath = filepath.Join(h.t.TempDir(), "daemon.log")
	n.cfgPath = filepath.Join(h.t.TempDir(), "fulcrum.yaml")
	n.client = api.NewClient(n.socket)
	return &n
}

func (h *harness) waitVRRP(state string, limit time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		v, err := h.client.VRRP(context.Background())
		if err == nil && v.State == state {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: vrrp %+v (%v), want %s\n%s", h.lb.Role(), v, err, state, h.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func setLink(t *testing.T, host *testenv.Host, up bool) {
	t.Helper()
	err := host.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if up {
			return netlink.LinkSetUp(l)
		}
		return netlink.LinkSetDown(l)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestFailover runs two Fulcrum nodes with VRRP (lb1 priority 200, lb2
// 100) in front of the same backends, with 200 long-lived TCP connections
// and a UDP stream through the VIP. lb1's link goes down: lb2 takes over,
// every connection survives (lb2 has no connection entries, but its Maglev
// table is the same) and the UDP gap is measured. lb1 comes back and
// preempts: the connections survive again.
func TestFailover(t *testing.T) {
	h := newHarness(t, func(o *testenv.Options) { o.SecondLB = true; o.VIPNextHop = virtualAddr })
	lb1, lb2 := h, h.node(h.topo.LB2)
	lb1.writeConfig(lb1.vrrpConfig("lb1", 200))
	lb2.writeConfig(lb2.vrrpConfig("lb2", 100))
	lb1.startDaemon()
	lb1.waitVRRP("master", 5*time.Second)
	lb2.startDaemon()
	lb2.waitVRRP("backup", 5*time.Second)

	conns := h.openConns(200, vip4)
	stream := h.startStream(vip4)
	time.Sleep(300 * time.Millisecond)

	setLink(t, h.topo.LB1, false)
	lb2.waitVRRP("master", 3*time.Second)
	time.Sleep(500 * time.Millisecond)
	gap := stream.maxGap()
	t.Logf("failover lb1 -> lb2: longest gap between UDP replies %s (bound: 3 x 100 ms + skew = 360 ms)", gap.Round(time.Millisecond))
	h.checkConns(conns, "", "after failover to lb2")
	if gap > 800*time.Millisecond {
		t.Errorf("UDP outage %s during failover, want about 360 ms", gap)
	}

	setLink(t, h.topo.LB1, true)
	lb1.waitVRRP("master", 5*time.Second)
	lb2.waitVRRP("backup", 3*time.Second)
	time.Sleep(500 * time.Millisecond)
	h.checkConns(conns, "", "after lb1 preempted back")
	sent, lost := stream.stop()
	t.Logf("UDP stream: %d sent, %d lost over failover and preemption", sent, lost)
	v1, _ := lb1.client.VRRP(context.Background())
	v2, _ := lb2.client.VRRP(context.Background())
	t.Logf("lb1 %+v\nlb2 %+v", v1, v2)
	if v2.AdvertsReceived == 0 || v1.AdvertsReceived == 0 {
		t.Errorf("the nodes did not hear each other: lb1 received %d, lb2 received %d", v1.AdvertsReceived, v2.AdvertsReceived)
	}
}
