package decap

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// lbAndBackend makes two namespaces joined by a veth pair, "eth0" in both:
// the balancer's side (MAC macLB) and the backend's (MAC macBE).
func lbAndBackend(t *testing.T) (lb, be *testenv.Host) {
	t.Helper()
	require.Netns(t)
	env := testenv.NewEnv(t)
	lb, err := env.NewNamespace("lb")
	if err != nil {
		t.Fatal(err)
	}
	be, err = env.NewNamespace("backend")
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.VethPair(lb, be, "eth0", "eth0", testenv.WithMACs(macLB, macBE)); err != nil {
		t.Fatal(err)
	}
	return lb, be
}

// attach attaches d to h's eth0, resolving the name in h's namespace.
func attach(t *testing.T, d *Decap, h *testenv.Host, generic bool) int {
	t.Helper()
	var ifindex int
	if err := h.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		ifindex = ifi.Index
		return d.Attach(ifindex, generic)
	}); err != nil {
		t.Fatalf("attach to %s/eth0: %v", h.Name, err)
	}
	return ifindex
}

func progID(t *testing.T, d *Decap) uint32 {
	t.Helper()
	info, err := d.Program().Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("kernel does not report program IDs")
	}
	return uint32(id)
}

// xdpOf returns the XDP state netlink reports for h's eth0.
func xdpOf(t *testing.T, h *testenv.Host) netlink.LinkXdp {
	t.Helper()
	l, err := h.Link("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if x := l.Attrs().Xdp; x != nil {
		return *x
	}
	return netlink.LinkXdp{}
}

func TestAttachDetach(t *testing.T) {
	_, be := lbAndBackend(t)
	d := newTestDecap(t, vip4)
	id := progID(t, d)

	for _, c := range []struct {
		name    string
		generic bool
		mode    uint32
	}{{"native", false, nl.XDP_ATTACHED_DRV}, {"generic", true, nl.XDP_ATTACHED_SKB}} {
		t.Run(c.name, func(t *testing.T) {
			ifindex := attach(t, d, be, c.generic)
			x := xdpOf(t, be)
			if !x.Attached || x.ProgId != id || x.AttachMode != c.mode {
				t.Errorf("after Attach: xdp attached=%v prog=%d mode=%d, want true, %d, %d", x.Attached, x.ProgId, x.AttachMode, id, c.mode)
			}
			if got := d.Attached(); len(got) != 1 || got[0] != ifindex {
				t.Errorf("Attached() = %v, want [%d]", got, ifindex)
			}
			if err := be.Do(func() error { return d.Attach(ifindex, c.generic) }); err == nil {
				t.Error("a second Attach to the same interface succeeded")
			}
			// Nothing in the root namespace runs the program.
			links, err := netlink.LinkList()
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range links {
				if x := l.Attrs().Xdp; x != nil && x.ProgId == id {
					t.Errorf("root namespace interface %s runs the decap program", l.Attrs().Name)
				}
			}

			if err := d.Detach(); err != nil {
				t.Fatal(err)
			}
			if x := xdpOf(t, be); x.Attached || x.ProgId != 0 {
				t.Errorf("after Detach: xdp attached=%v prog=%d, want nothing", x.Attached, x.ProgId)
			}
			if got := d.Attached(); len(got) != 0 {
				t.Errorf("Attached() after Detach = %v, want none", got)
			}
		})
	}

	// Close detaches too.
	attach(t, d, be, false)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if x := xdpOf(t, be); x.Attached {
		t.Errorf("after Close: xdp still attached (prog %d)", x.ProgId)
	}
}

// TestDeliversToVIPOnLo sends encapsulated UDP datagrams of all four
// combinations over a veth into a namespace that holds the VIPs on lo and
// runs the program: the kernel must deliver each inner datagram to a
// socket bound to the VIP, although it has no tunnel driver.
func TestDeliversToVIPOnLo(t *testing.T) {
	lb, be := lbAndBackend(t)
	for _, p := range []netip.Prefix{netip.PrefixFrom(vip4, 32), netip.PrefixFrom(vip6, 128)} {
		if err := be.AddAddr("lo", p); err != nil {
			t.Fatal(err)
		}
	}
	d := newTestDecap(t, vip4, vip6)
	attach(t, d, be, false)

	const port = 5300
	socks := map[netip.Addr]*net.UDPConn{}
	if err := be.Do(func() error {
		for _, vip := range []netip.Addr{vip4, vip6} {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(vip, port)))
			if err != nil {
				return err
			}
			t.Cleanup(func() { c.Close() })
			socks[vip] = c
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	var fd int
	if err := lb.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0) // send only
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index})
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)

	cases := []struct {
		family string
		e      encap
	}{
		{"4in4", outer4(udp(vip4, 40001, port))},
		{"6in4", outer4(udp(vip6, 40002, port))},
		{"4in6", outer6(udp(vip4, 40003, port))},
		{"6in6", outer6(udp(vip6, 40004, port))},
	}
	for _, c := range cases {
		c.e.inner.Payload = []byte("via " + c.family)
		if err := unix.Send(fd, c.e.frame(), 0); err != nil {
			t.Fatalf("send %s frame: %v", c.family, err)
		}
		conn := socks[c.e.inner.Dst]
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 100)
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			cnt, _ := d.Counters()
			t.Errorf("%s: nothing reached %s:%d: %v (counters %s)", c.family, c.e.inner.Dst, port, err, formatCounters(cnt))
			continue
		}
		if got, want := string(buf[:n]), string(c.e.inner.Payload); got != want {
			t.Errorf("%s: got %q, want %q", c.family, got, want)
		}
		if want := netip.AddrPortFrom(c.e.inner.Src, c.e.inner.Sport); from != want {
			t.Errorf("%s: datagram from %s, want %s", c.family, from, want)
		}
	}
	cnt, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if cnt["decap_"+c.family] != 1 {
			t.Errorf("decap_%s = %d, want 1 (counters %s)", c.family, cnt["decap_"+c.family], formatCounters(cnt))
		}
	}
}
