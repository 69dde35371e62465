package datapath_test

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/decap"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// TestEndToEndIPIP sends real TCP and UDP traffic through ipip VIPs to
// backends on another subnet behind the router, which a dsr LB could not
// reach. Backends run the decap program; each connection must land on the
// backend Go predicts, in all four family combinations, and replies go
// from the backends straight to the client.
func TestEndToEndIPIP(t *testing.T) {
	topo := testenv.NewCanonical(t, testenv.Options{Backends: 3, RemoteBackends: true, VIPs: []netip.Addr{e2eVIP4, e2eVIP6}})
	for _, b := range topo.Backends {
		var dc *decap.Decap
		err := b.Do(func() error {
			var err error
			if dc, err = decap.Load(); err != nil {
				return err
			}
			if err := dc.SetVIPs([]netip.Addr{e2eVIP4, e2eVIP6}); err != nil {
				return err
			}
			return dc.Attach(b.Ifindex, false)
		})
		if err != nil {
			t.Fatalf("decap on %s: %v", b.Role(), err)
		}
		t.Cleanup(func() { dc.Close() })
		startE2EServer(t, b)
		t.Cleanup(func() {
			c, _ := dc.Counters()
			t.Logf("%s decap counters: decap=%d 4in4=%d 6in6=%d 4in6=%d 6in4=%d malformed=%d", b.Role(), c["decap"], c["decap_4in4"], c["decap_6in6"], c["decap_4in6"], c["decap_6in4"], c["drop_malformed"])
		})
	}

	lb := topo.LB1
	for _, kv := range [][2]string{{"net.ipv4.conf.eth0.forwarding", "1"}, {"net.ipv6.conf.eth0.forwarding", "1"}} {
		if err := lb.Sysctl(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	// The FIB answers only with a resolved neighbour: make lb1 resolve the
	// router (in production the daemon's traffic or a gateway MAC does).
	for _, a := range []netip.Addr{topo.Router.IPv4, topo.Router.IPv6} {
		if err := lb.Ping(t.Context(), a); err != nil {
			t.Fatalf("lb1 ping %s: %v", a, err)
		}
	}
	var d *datapath.Datapath
	err := lb.Do(func() error {
		var err error
		if d, err = datapath.Load(datapath.Options{ConntrackEntries: 65536}); err != nil {
			return err
		}
		if err := d.SetEncap(datapath.EncapConfig{SourceV4: testenv.EncapSourceV4, SourceV6: testenv.EncapSourceV6}); err != nil {
			return err
		}
		return d.Attach(lb.Ifindex, datapath.AttachNative)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })

	backends := func(v6 bool) []datapath.Backend {
		var out []datapath.Backend
		for i, b := range topo.Backends {
			a := b.IPv4
			if v6 {
				a = b.IPv6
			}
			out = append(out, datapath.Backend{Addr: a, Weight: uint32(i + 1)})
		}
		return out
	}
	cases := []struct {
		name string
		vip  datapath.VIP
		v6be bool
	}{
		{"4in4 tcp", datapath.VIP{Addr: e2eVIP4, Port: e2eTCPPort, Proto: datapath.TCP}, false},
		{"6in6 tcp", datapath.VIP{Addr: e2eVIP6, Port: e2eTCPPort, Proto: datapath.TCP}, true},
		{"4in6 udp", datapath.VIP{Addr: e2eVIP4, Port: e2eUDPPort, Proto: datapath.UDP}, true},
		{"6in4 udp", datapath.VIP{Addr: e2eVIP6, Port: e2eUDPPort, Proto: datapath.UDP}, false},
	}
	names := make(map[netip.Addr]string)
	for _, b := range topo.Backends {
		names[b.IPv4], names[b.IPv6] = b.Role(), b.Role()
	}
	for _, c := range cases {
		if err := d.AddVIP(c.vip, datapath.VIPConfig{Mode: datapath.ModeIPIP}, backends(c.v6be)); err != nil {
			t.Fatalf("AddVIP %s: %v", c.vip, err)
		}
	}

	before, _ := d.Counters()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			perBackend := map[string]int{}
			n := 100
			if c.vip.Proto == datapath.UDP {
				n = 50
			}
			for i := range n {
				got, local, err := exchangeOnce(topo.Client, c.vip)
				if err != nil {
					t.Fatalf("%s flow %d: %v", c.vip, i, err)
				}
				f := datapath.Flow{Src: local.Addr(), Dst: c.vip.Addr, Sport: local.Port(), Dport: c.vip.Port, Proto: c.vip.Proto}
				pred, err := d.Predict(f, true)
				if err != nil {
					t.Fatal(err)
				}
				if want := names[pred.Backend]; got != want {
					t.Fatalf("%s flow from :%d answered by %s, Go predicts %s", c.vip, local.Port(), got, want)
				}
				perBackend[got]++
			}
			t.Logf("%s: flows per backend %v", c.vip, perBackend)
			if len(perBackend) != 3 {
				t.Fatalf("%d flows reached %d backends, want all 3", n, len(perBackend))
			}
		})
	}
	after, _ := d.Counters()
	tx := after.Stat(datapath.StatTxIPIP) - before.Stat(datapath.StatTxIPIP)
	if tx == 0 {
		t.Fatal("tx_ipip did not move")
	}
	for _, s := range datapath.AllStats() {
		if strings.HasPrefix(s.String(), "drop_") && after.Stat(s) != 0 {
			t.Errorf("%s = %d, want 0", s, after.Stat(s))
		}
	}
	// Replies bypass the LB: every packet the LB's program saw was one
	// the client sent (each TCP flow: SYN, ACK, data, FIN/ACK...), none of
	// the replies; so the LB forwarded no more packets than it received
	// and passed almost nothing to its own stack.
	if p := after.Stat(datapath.StatPassNoVIP) - before.Stat(datapath.StatPassNoVIP); p > 64 {
		t.Errorf("pass_no_vip moved by %d: replies seem to come back through the LB", p)
	}
	t.Logf("tx_ipip %d, fib_gateway %d", tx, after.Stat(datapath.StatFibGateway))
}

// exchangeOnce opens one flow from the client to vip, sends a line and
// returns the name of the backend that answered and the client's address.
func exchangeOnce(client *testenv.Host, vip datapath.VIP) (string, netip.AddrPort, error) {
	network := "tcp"
	if vip.Proto == datapath.UDP {
		network = "udp"
	}
	var c net.Conn
	err := client.Do(func() error {
		var err error
		c, err = net.DialTimeout(network, netip.AddrPortFrom(vip.Addr, vip.Port).String(), e2eIOTimeout)
		return err
	})
	if err != nil {
		return "", netip.AddrPort{}, err
	}
	defer c.Close()
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	c.SetDeadline(time.Now().Add(e2eIOTimeout))
	if _, err := fmt.Fprintf(c, "hello\n"); err != nil {
		return "", local, err
	}
	var line string
	if vip.Proto == datapath.UDP {
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err != nil {
			return "", local, err
		}
		line = string(buf[:n])
	} else {
		line, err = bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return "", local, err
		}
	}
	name, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	if rest != "hello" {
		return "", local, fmt.Errorf("reply %q", line)
	}
	return name, local, nil
}
