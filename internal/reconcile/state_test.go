package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
)

// recorder collects what the reconciler hands its callbacks.
type recorder struct {
	mu         sync.Mutex
	targets    [][]datapath.VIP // the VIP keys of each HealthTargets call
	forwarded  []string
	forwardErr error
}

func (c *recorder) healthTargets(vips []config.VIP) {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]datapath.VIP, len(vips))
	for i, v := range vips {
		keys[i] = Key(v)
	}
	c.targets = append(c.targets, keys)
}

func (c *recorder) forward(ifname string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forwarded = append(c.forwarded, ifname)
	return c.forwardErr
}

func newStateRec(t *testing.T) (*Reconciler, *fakeDataplane, *recorder) {
	f := newFake()
	c := &recorder{}
	r := New(f, fakeResolver{b3.Address: mac("02:00:00:00:00:13")}, Options{
		Log:           slog.New(slog.NewTextHandler(io.Discard, nil)),
		HealthTargets: c.healthTargets,
		Forwarding:    c.forward,
	})
	return r, f, c
}

func ipipVIP(addr string, port uint16, backends ...string) config.VIP {
	v := vip(addr, port)
	v.Mode = config.ModeIPIP
	for _, b := range backends {
		v.Backends = append(v.Backends, config.Backend{Address: netip.MustParseAddr(b), Weight: 1})
	}
	return v
}

var (
	src4 = netip.MustParsePrefix("198.18.1.0/24")
	src6 = netip.MustParsePrefix("2001:db8:4::/64")
)

// TestApplyWritesSettings: Apply writes the encapsulation and the
// new-flow limit with the VIPs, only when they change, and hands the
// health checker the VIPs after each change of them.
func TestApplyWritesSettings(t *testing.T) {
	ctx := context.Background()
	r, f, c := newStateRec(t)
	web := vip("203.0.113.10", 80, b1)
	s := State{VIPs: []config.VIP{web}, Encap: datapath.EncapConfig{SourceV4: src4}, NewFlowLimit: 100, Interfaces: []string{"eth0"}}
	if _, err := r.Apply(ctx, s); err != nil {
		t.Fatal(err)
	}
	if want := []string{"encap 198.18.1.0/24 invalid Prefix", "set tcp/203.0.113.10:80", "limit 100"}; !slices.Equal(f.calls, want) {
		t.Fatalf("first apply: calls %q, want %q", f.calls, want)
	}
	if len(c.forwarded) != 0 {
		t.Errorf("no ipip VIP, yet forwarding was turned on for %v", c.forwarded)
	}
	if want := [][]datapath.VIP{{Key(web)}}; !slices.EqualFunc(c.targets, want, slices.Equal) {
		t.Fatalf("health targets %v, want %v", c.targets, want)
	}

	f.calls = nil
	if _, err := r.Apply(ctx, s); err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 0 {
		t.Errorf("the same state again wrote %q, want nothing", f.calls)
	}

	// A health transition changes no desired VIP: no new targets.
	web.HealthCheck = &config.HealthCheck{Type: "tcp"}
	web.Backends[0].HealthCheck = web.HealthCheck
	s.VIPs = []config.VIP{web}
	if _, err := r.Apply(ctx, s); err != nil {
		t.Fatal(err)
	}
	n := len(c.targets)
	if err := r.SetHealth(ctx, Key(web), b1.Address, Down); err != nil {
		t.Fatal(err)
	}
	if len(c.targets) != n {
		t.Errorf("a health transition handed the checker new targets")
	}
	// Every edit does, without the caller asking.
	api := vip("203.0.113.11", 443, b2)
	edits := []struct {
		name string
		do   func() error
		want []datapath.VIP
	}{
		{"AddVIP", func() error { return r.AddVIP(ctx, api) }, []datapath.VIP{Key(web), Key(api)}},
		{"AddBackend", func() error { return r.AddBackend(ctx, Key(api), b3) }, []datapath.VIP{Key(web), Key(api)}},
		{"SetWeight", func() error { return r.SetWeight(ctx, Key(api), b3.Address, 0) }, []datapath.VIP{Key(web), Key(api)}},
		{"RemoveBackend", func() error { return r.RemoveBackend(ctx, Key(api), b3.Address) }, []datapath.VIP{Key(web), Key(api)}},
		{"RemoveVIP", func() error { return r.RemoveVIP(ctx, Key(api)) }, []datapath.VIP{Key(web)}},
	}
	for _, e := range edits {
		n := len(c.targets)
		f.settings = nil
		if err := e.do(); err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
		if len(c.targets) != n+1 || !slices.Equal(c.targets[n], e.want) {
			t.Errorf("%s: health targets %v, want one more call with %v", e.name, c.targets[n:], e.want)
		}
		if len(f.settings) != 0 {
			t.Errorf("%s wrote settings %q, want none", e.name, f.settings)
		}
	}
}

// TestEncapUnionThenFinal: when the sources change, the union of the old
// and the new ones is in force while the VIPs change, so that neither the
// old ipip VIPs nor the new ones are ever live without their prefix (the
// fake, like the datapath, refuses both); then exactly the new ones.
func TestEncapUnionThenFinal(t *testing.T) {
	ctx := context.Background()
	r, f, c := newStateRec(t)
	v4 := State{VIPs: []config.VIP{ipipVIP("203.0.113.10", 80, "198.18.0.11")},
		Encap: datapath.EncapConfig{SourceV4: src4}, Interfaces: []string{"eth0", "eth1"}}
	if _, err := r.Apply(ctx, v4); err != nil {
		t.Fatal(err)
	}
	if want := []string{"eth0", "eth1"}; !slices.Equal(c.forwarded, want) {
		t.Errorf("forwarding turned on for %v, want %v", c.forwarded, want)
	}
	f.calls = nil
	v6 := State{VIPs: []config.VIP{ipipVIP("203.0.113.10", 80, "2001:db8::11")},
		Encap: datapath.EncapConfig{SourceV6: src6}, Interfaces: []string{"eth0", "eth1"}}
	if _, err := r.Apply(ctx, v6); err != nil {
		t.Fatal(err)
	}
	want := []string{"encap 198.18.1.0/24 2001:db8:4::/64", "set tcp/203.0.113.10:80", "encap invalid Prefix 2001:db8:4::/64"}
	if !slices.Equal(f.calls, want) {
		t.Fatalf("calls %q, want %q", f.calls, want)
	}
}

// TestRefusedStateWritesNothing: a state whose ipip backends lack a source
// prefix, or whose forwarding cannot be turned on, is refused whole, and
// the settings written for it are undone.
func TestRefusedStateWritesNothing(t *testing.T) {
	ctx := context.Background()
	r, f, c := newStateRec(t)
	good := State{VIPs: []config.VIP{vip("203.0.113.10", 80, b1)}, Encap: datapath.EncapConfig{SourceV4: src4},
		Interfaces: []string{"eth0"}}
	if _, err := r.Apply(ctx, good); err != nil {
		t.Fatal(err)
	}
	f.calls = nil
	err := r.AddVIP(ctx, ipipVIP("203.0.113.11", 80, "2001:db8::11"))
	wantErr := "vips[1] (tcp/203.0.113.11:80): backends[0] (2001:db8::11): ipip to the IPv6 backend 2001:db8::11 needs an outer source prefix: set ipip.source_v6"
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), wantErr) {
		t.Fatalf("ipip VIP without a v6 source: err = %v, want ErrInvalid containing %q", err, wantErr)
	}
	if len(f.calls) != 0 {
		t.Fatalf("a refused VIP wrote %q", f.calls)
	}

	c.forwardErr = errors.New("read-only file system")
	withIPIP := good
	withIPIP.VIPs = append(slices.Clone(good.VIPs), ipipVIP("203.0.113.11", 80, "2001:db8::11"))
	withIPIP.Encap.SourceV6 = src6
	_, err = r.Apply(ctx, withIPIP)
	if err == nil || err.Error() != "ipip needs forwarding on eth0: read-only file system" {
		t.Fatalf("forwarding refused: err = %v", err)
	}
	if want := []string{"encap 198.18.1.0/24 2001:db8:4::/64", "encap 198.18.1.0/24 invalid Prefix"}; !slices.Equal(f.calls, want) {
		t.Fatalf("calls %q, want the union undone: %q", f.calls, want)
	}
	if d := r.Desired(); len(d) != 1 {
		t.Fatalf("desired state has %d VIPs after a refused apply, want 1", len(d))
	}
}

// TestReloadAndEditsAreSerialised: a reload (Apply of a whole state, as
// SIGHUP does) and API edits running at once never interleave their
// writes: the fake sees no overlapping call, no refused write (which an
// edit between a reload's union and final encapsulation would cause), and
// ends as the reconciler's desired state says.
func TestReloadAndEditsAreSerialised(t *testing.T) {
	ctx := context.Background()
	r, f, _ := newStateRec(t)
	states := []State{
		{VIPs: []config.VIP{ipipVIP("203.0.113.10", 80, "198.18.0.11")}, Encap: datapath.EncapConfig{SourceV4: src4}},
		{VIPs: []config.VIP{ipipVIP("203.0.113.10", 80, "2001:db8::11")}, Encap: datapath.EncapConfig{SourceV6: src6}},
	}
	const rounds = 200
	var wg sync.WaitGroup
	errs := make(chan error, 3*rounds)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range rounds {
			if _, err := r.Apply(ctx, states[i%2]); err != nil {
				errs <- fmt.Errorf("reload %d: %w", i, err)
			}
		}
	}()
	go func() {
		defer wg.Done()
		extra := vip("203.0.113.20", 80, b1)
		for i := range rounds {
			// The extra VIP may be gone with a reload: only a write
			// failure is an error here.
			if err := r.AddVIP(ctx, extra); err != nil && !errors.Is(err, ErrExists) {
				errs <- fmt.Errorf("add %d: %w", i, err)
			}
			if err := r.SetWeight(ctx, Key(extra), b1.Address, uint32(i)); err != nil && !errors.Is(err, ErrNotFound) {
				errs <- fmt.Errorf("weight %d: %w", i, err)
			}
			if err := r.RemoveVIP(ctx, Key(extra)); err != nil && !errors.Is(err, ErrNotFound) {
				errs <- fmt.Errorf("remove %d: %w", i, err)
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := f.overlaps.Load(); n != 0 {
		t.Errorf("%d dataplane calls overlapped another", n)
	}
	var want []datapath.VIP
	for _, v := range r.Desired() {
		want = append(want, Key(v))
	}
	var got []datapath.VIP
	for _, s := range f.VIPs() {
		got = append(got, s.VIP)
	}
	slices.SortFunc(got, datapath.VIP.Compare)
	slices.SortFunc(want, datapath.VIP.Compare)
	if !slices.Equal(got, want) {
		t.Errorf("the dataplane holds %v, the desired state %v", got, want)
	}
	if last := states[(rounds-1)%2].Encap; !sameEncap(f.encap, last) {
		t.Errorf("encapsulation %+v, want the last reload's %+v", f.encap, last)
	}
}
