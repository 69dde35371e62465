package neighbor

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/testenv"
)

// TestResolve resolves a backend's MAC from the LB's namespace, v4 and v6,
// and gives up on an address nobody answers for.
func TestResolve(t *testing.T) {
	require.Netns(t)
	topo := testenv.NewCanonical(t, testenv.Options{Backends: 1})
	b := topo.Backends[0]
	err := topo.LB1.Do(func() error {
		r, err := New()
		if err != nil {
			return err
		}
		defer r.Close()
		for _, a := range []netip.Addr{b.IPv4, b.IPv6} {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			mac, err := r.Resolve(ctx, a)
			cancel()
			if err != nil {
				t.Errorf("Resolve(%s): %v", a, err)
				continue
			}
			if mac.String() != b.MAC.String() {
				t.Errorf("Resolve(%s) = %s, want %s", a, mac, b.MAC)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if mac, err := r.Resolve(ctx, netip.MustParseAddr("198.18.0.250")); err == nil {
			t.Errorf("Resolve of an absent host = %s, want an error", net.HardwareAddr(mac))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestFollowMACChange changes a backend's MAC as a replaced NIC would:
// announced (gratuitous ARP, unsolicited neighbour advertisement), Watch
// must report the new MAC within a second, v4 and v6; unannounced, the
// kernel keeps the old one until Reresolve, after which Watch must report
// the new one within a second.
func TestFollowMACChange(t *testing.T) {
	require.Netns(t)
	topo := testenv.NewCanonical(t, testenv.Options{Backends: 1})
	b := topo.Backends[0]
	var r *Resolver
	err := topo.LB1.Do(func() error {
		var err error
		if r, err = New(); err != nil {
			return err
		}
		for _, a := range []netip.Addr{b.IPv4, b.IPv6} {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_, err := r.Resolve(ctx, a)
			cancel()
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	type change struct {
		addr netip.Addr
		mac  string
	}
	changes := make(chan change, 16)
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan error, 1)
	go func() {
		watched <- r.Watch(ctx, func(_ context.Context, a netip.Addr, mac net.HardwareAddr) { changes <- change{a, mac.String()} })
	}()
	defer func() {
		cancel()
		if err := <-watched; err != nil {
			t.Errorf("Watch: %v", err)
		}
	}()
	// expect waits up to a second for changed to report want for each
	// address, and for Cached to agree.
	expect := func(when string, want net.HardwareAddr, addrs ...netip.Addr) {
		t.Helper()
		pending := map[netip.Addr]bool{}
		for _, a := range addrs {
			pending[a] = true
		}
		deadline := time.After(time.Second)
		var seen []change
		for len(pending) > 0 {
			select {
			case c := <-changes:
				seen = append(seen, c)
				if c.mac == want.String() {
					delete(pending, c.addr)
				}
			case <-deadline:
				t.Fatalf("%s: no change to %s reported within 1s for %v; reported: %v", when, want, pending, seen)
			}
		}
		for _, a := range addrs {
			if got, ok := r.Cached(a); !ok || got.String() != want.String() {
				t.Fatalf("%s: Cached(%s) = %s, %v; want %s", when, a, got, ok, want)
			}
		}
	}

	announced := net.HardwareAddr{0x02, 0xfc, 0x02, 0xaa, 0, 0x0b}
	if err := b.Sysctls(map[string]string{"net.ipv4.conf.eth0.arp_notify": "1", "net.ipv6.conf.eth0.ndisc_notify": "1"}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetMAC("eth0", announced); err != nil {
		t.Fatal(err)
	}
	expect("announced change", announced, b.IPv4, b.IPv6)

	silent := net.HardwareAddr{0x02, 0xfc, 0x02, 0xbb, 0, 0x0b}
	if err := b.Sysctls(map[string]string{"net.ipv4.conf.eth0.arp_notify": "0", "net.ipv6.conf.eth0.ndisc_notify": "0"}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetMAC("eth0", silent); err != nil {
		t.Fatal(err)
	}
	err = topo.LB1.Do(func() error {
		// The kernel still has the announced MAC: only Reresolve can
		// make it learn the silent one.
		if mac, ok, err := r.Lookup(b.IPv4); err != nil || !ok || mac.String() != announced.String() {
			return fmt.Errorf("before Reresolve the kernel has %s, %v, %v; want %s", mac, ok, err, announced)
		}
		return r.Reresolve(b.IPv4)
	})
	if err != nil {
		t.Fatal(err)
	}
	expect("silent change, re-resolved", silent, b.IPv4)
}
