package neighbor

import (
	"context"
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
