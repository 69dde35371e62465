package healthsteer

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// TestAttachSteersRealPackets attaches the program at TCX egress of a
// veth in a test namespace and sends datagrams to a VIP routed out of it:
// the marked one leaves with the backend's MAC, an unmarked one with the
// router's; after Close the marked one is no longer steered and the
// interface has no egress program left.
func TestAttachSteersRealPackets(t *testing.T) {
	require.BPF(t)
	require.Netns(t)
	env := testenv.NewEnv(t)
	lb, err := env.NewNamespace("lb")
	if err != nil {
		t.Fatal(err)
	}
	router, err := env.NewNamespace("router")
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.VethPair(lb, router, "eth0", "eth0", testenv.WithMACs(lbMAC, routerMAC)); err != nil {
		t.Fatal(err)
	}
	routerIP := netip.MustParseAddr("198.18.0.1")
	for _, step := range []error{
		lb.AddAddr("eth0", netip.MustParsePrefix("198.18.0.2/24")),
		router.AddAddr("eth0", netip.MustParsePrefix("198.18.0.1/24")),
		lb.AddRoute(netip.MustParsePrefix("203.0.113.0/24"), routerIP),
		lb.AddNeighbor("eth0", routerIP, routerMAC),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}

	// A packet socket on the router's side sees every frame that arrives,
	// whatever its destination MAC.
	var sniff int
	if err := router.Do(func() error {
		var err error
		sniff, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
		if err != nil {
			return err
		}
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		return unix.Bind(sniff, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifc.Index})
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sniff)
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	if err := unix.SetsockoptTimeval(sniff, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}

	s, err := Load(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base, _ := s.Marks()
	var ifindex int
	if err := lb.Do(func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		ifindex = ifc.Index
		return s.Attach(ifindex)
	}); err != nil {
		t.Fatal(err)
	}
	if got := s.Attached(); len(got) != 1 || got[0] != ifindex {
		t.Fatalf("Attached() = %v, want [%d]", got, ifindex)
	}
	if err := s.Set(base+7, Target{Mode: DSR, SrcMAC: lbMAC, DstMAC: backendMAC}); err != nil {
		t.Fatal(err)
	}

	// send sends one datagram to the VIP from lb, with the mark (0: none),
	// and returns the destination MAC of the frame the router receives.
	port := uint16(5000)
	send := func(mark uint32) net.HardwareAddr {
		t.Helper()
		port++
		if err := lb.Do(func() error {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			if mark != 0 {
				if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
					return err
				}
			}
			return unix.Sendto(fd, []byte("probe"), 0, &unix.SockaddrInet4{Port: int(port), Addr: vip4.As4()})
		}); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		for {
			n, _, err := unix.Recvfrom(sniff, buf, 0)
			if err != nil {
				t.Fatalf("no datagram to %s:%d reached the router: %v", vip4, port, err)
			}
			f := buf[:n]
			// IPv4 (no options) + UDP to the VIP and our port.
			if n >= 14+28 && f[14+9] == syscall.IPPROTO_UDP && bytes.Equal(f[14+16:14+20], vip4.AsSlice()) &&
				binary.BigEndian.Uint16(f[14+22:]) == port {
				return net.HardwareAddr(bytes.Clone(f[0:6]))
			}
		}
	}

	if got := send(0); !bytes.Equal(got, routerMAC) {
		t.Errorf("unmarked datagram: destination MAC %s, want the router's %s", got, routerMAC)
	}
	if got := send(base + 7); !bytes.Equal(got, backendMAC) {
		t.Errorf("marked datagram: destination MAC %s, want the backend's %s", got, backendMAC)
	}
	if got := send(base + 8); !bytes.Equal(got, routerMAC) {
		t.Errorf("datagram with a mark without entry: destination MAC %s, want the router's %s", got, routerMAC)
	}
	c, err := s.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c.Steered != 1 || c.NoEntry != 1 || c.NotIP != 0 || c.Errors != 0 {
		t.Errorf("counters %+v, want 1 steered and 1 without entry", c)
	}

	if n := egressPrograms(t, lb, ifindex); n != 1 {
		t.Errorf("%d programs at tc egress while attached, want 1", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := send(base + 7); !bytes.Equal(got, routerMAC) {
		t.Errorf("marked datagram after Close: destination MAC %s, want the router's %s (not steered)", got, routerMAC)
	}
	if n := egressPrograms(t, lb, ifindex); n != 0 {
		t.Errorf("%d programs left at tc egress after Close", n)
	}
}

// egressPrograms counts the TCX egress programs of ifindex in h.
func egressPrograms(t *testing.T, h *testenv.Host, ifindex int) int {
	t.Helper()
	var n int
	if err := h.Do(func() error {
		res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: ebpf.AttachTCXEgress})
		if err != nil {
			return err
		}
		n = len(res.Programs)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
