package reconcile

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/config"
)

// fakeResolver (reconcile_test.go) follows nothing: every update resolves
// its backends afresh.
func (r fakeResolver) Cached(netip.Addr) (net.HardwareAddr, bool) { return nil, false }
func (r fakeResolver) Reresolve(netip.Addr) error                 { return nil }

// followingResolver caches what it resolves, as neighbor.Resolver does; a
// resolution of hold waits until release is closed.
type followingResolver struct {
	hold     netip.Addr
	started  chan struct{} // closed when the resolution of hold starts
	release  chan struct{}
	once     sync.Once
	mu       sync.Mutex
	network  map[netip.Addr]net.HardwareAddr // what an ARP would answer
	cache    map[netip.Addr]net.HardwareAddr
	resolves map[netip.Addr]int
	again    []netip.Addr // Reresolve's calls
}

func newFollowing(network map[netip.Addr]net.HardwareAddr) *followingResolver {
	return &followingResolver{network: network, started: make(chan struct{}), release: make(chan struct{}),
		cache: make(map[netip.Addr]net.HardwareAddr), resolves: make(map[netip.Addr]int)}
}

func (f *followingResolver) Cached(a netip.Addr) (net.HardwareAddr, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.cache[a]
	return m, ok
}

func (f *followingResolver) Resolve(ctx context.Context, a netip.Addr) (net.HardwareAddr, error) {
	if a == f.hold {
		f.once.Do(func() { close(f.started) })
		<-f.release
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resolves[a]++
	m, ok := f.network[a]
	if !ok {
		return fakeResolver{}.Resolve(ctx, a)
	}
	f.cache[a] = m
	return m, nil
}

func (f *followingResolver) Reresolve(a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.again = append(f.again, a)
	return nil
}

// change makes the network answer mac for a, and the cache follow.
func (f *followingResolver) change(a netip.Addr, mac net.HardwareAddr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.network[a], f.cache[a] = mac, mac
}

// newFollowingRec returns a reconciler with vips desired, over a fake
// datapath, whose resolver finds and follows b3 at 02:00:00:00:00:13.
func newFollowingRec(t *testing.T, vips ...config.VIP) (*Reconciler, *fakeDataplane, *followingResolver) {
	t.Helper()
	f := newFake()
	res := newFollowing(map[netip.Addr]net.HardwareAddr{b3.Address: mac("02:00:00:00:00:13")})
	r := New(f, res, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if _, err := r.Apply(context.Background(), State{VIPs: vips}); err != nil {
		t.Fatal(err)
	}
	return r, f, res
}

// TestResolveOutsideLock: while one change waits for a backend's MAC,
// readers and other changes go ahead; the waiting change then lands on the
// state as they left it.
func TestResolveOutsideLock(t *testing.T) {
	ctx := context.Background()
	web := vip("203.0.113.10", 80, b1, b2)
	r, f, res := newFollowingRec(t, web)
	res.hold = b3.Address
	t.Cleanup(func() {
		select {
		case <-res.release:
		default:
			close(res.release)
		}
	})
	added := make(chan error, 1)
	go func() { added <- r.AddBackend(ctx, Key(web), b3) }()
	select {
	case <-res.started:
	case <-time.After(5 * time.Second):
		t.Fatal("AddBackend did not resolve its backend's MAC")
	}

	others := make(chan error, 1)
	go func() {
		_ = r.Desired()
		_ = r.HealthOf()
		others <- r.SetWeight(ctx, Key(web), b1.Address, 7)
	}()
	select {
	case err := <-others:
		if err != nil {
			t.Fatalf("SetWeight while another change resolves: %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Desired, HealthOf and SetWeight waited more than 1s for another change's MAC resolution")
	}
	close(res.release)
	if err := <-added; err != nil {
		t.Fatalf("AddBackend: %v", err)
	}
	got := f.vips[Key(web)].Backends
	if len(got) != 3 || got[0].Weight != 7 || got[2].MAC.String() != "02:00:00:00:00:13" {
		t.Fatalf("datapath has %v; want b1 at weight 7 (the change made meanwhile) and b3 with its resolved MAC", got)
	}
	if n := res.resolves[b3.Address]; n != 1 {
		t.Fatalf("b3 resolved %d times, want once", n)
	}
}

// TestMACChanged: a followed backend's MAC changes; the VIPs it serves are
// written with the new MAC, the others are left alone.
func TestMACChanged(t *testing.T) {
	ctx := context.Background()
	web, api := vip("203.0.113.10", 80, b1, b3), vip("203.0.113.11", 443, b1, b2)
	r, f, res := newFollowingRec(t, web, api)
	f.writes = nil
	res.change(b3.Address, mac("02:00:00:00:01:13"))
	r.MACChanged(ctx, b3.Address, mac("02:00:00:00:01:13"))
	if want := []string{"set tcp/203.0.113.10:80"}; !slices.Equal(f.writes, want) {
		t.Fatalf("writes %v, want %v", f.writes, want)
	}
	if got := f.vips[Key(web)].Backends[1].MAC.String(); got != "02:00:00:00:01:13" {
		t.Fatalf("b3's MAC in the datapath = %s, want 02:00:00:00:01:13", got)
	}
	if n := res.resolves[b3.Address]; n != 1 {
		t.Fatalf("b3 resolved %d times, want once (then followed)", n)
	}
}

// TestDownReresolves: a backend whose check fails has its MAC asked for
// again (it may be a replaced host); one coming up does not.
func TestDownReresolves(t *testing.T) {
	ctx := context.Background()
	web := vip("203.0.113.10", 80, b1, b3)
	web.HealthCheck = &config.HealthCheck{Type: "tcp", OnDown: "drain"}
	for i := range web.Backends {
		web.Backends[i].HealthCheck = web.HealthCheck
	}
	r, _, res := newFollowingRec(t, web)
	for _, h := range []Health{Up, Down, Down, Up} {
		if err := r.SetHealth(ctx, Key(web), b3.Address, h); err != nil {
			t.Fatal(err)
		}
	}
	if want := []netip.Addr{b3.Address}; !slices.Equal(res.again, want) {
		t.Fatalf("Reresolve called for %v, want %v (once, on the transition to down)", res.again, want)
	}
}
