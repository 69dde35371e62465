package reconcile

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/require"
)

var flagSeed = flag.Uint64("reconcile.seed", 0, "seed of TestPartialPlansMatchFull; 0 = a random one")

// TestPartialPlansMatchFull makes random edits (VIPs and backends added and
// removed, weights, health, MACs and now and then a whole state applied)
// through one reconciler, which plans only what each edit touches, and then
// applies the final desired state whole to a second, fresh datapath. Both
// datapaths must hold the same VIPs, backends and rings (by the backend
// address of every slot, read from the kernel). Along the way, the first
// reconciler, applying its own desired state whole, must find nothing to
// write.
func TestPartialPlansMatchFull(t *testing.T) {
	require.BPF(t)
	seed := *flagSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (-reconcile.seed repeats it)", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	load := func() *datapath.Datapath {
		dp, err := datapath.Load(datapath.Options{ConntrackEntries: 8192})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dp.Close() })
		return dp
	}
	// Backends without a configured MAC are resolved; the network answers
	// for each, and some answers change (MACChanged).
	network := make(map[netip.Addr]net.HardwareAddr)
	addrs := make([]netip.Addr, 24)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i)})
		network[addrs[i]] = net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}
	}
	res := newFollowing(network)
	dpA := load()
	recA := New(dpA, res, Options{Log: log})

	check := &config.HealthCheck{Type: "tcp"}
	randomBackend := func() config.Backend {
		b := config.Backend{Address: addrs[rng.IntN(len(addrs))], Weight: uint32(rng.IntN(4))}
		if rng.IntN(2) == 0 {
			b.MAC = net.HardwareAddr{2, 0, 0, 0, 2, byte(rng.IntN(256))}
		}
		if rng.IntN(2) == 0 {
			b.HealthCheck = check
		}
		return b
	}
	randomVIP := func() config.VIP {
		v := vip(fmt.Sprintf("203.0.113.%d", 1+rng.IntN(8)), uint16(80+rng.IntN(2)))
		v.RingSize = []uint32{251, 1021}[rng.IntN(2)]
		if rng.IntN(3) == 0 {
			v.HealthCheck = &config.HealthCheck{Type: "tcp", OnDown: config.OnDownDrain, AllDown: config.AllDownFailOpen}
		}
		for range rng.IntN(6) {
			b := randomBackend()
			if !slices.ContainsFunc(v.Backends, func(o config.Backend) bool { return o.Address == b.Address }) {
				v.Backends = append(v.Backends, b)
			}
		}
		return v
	}
	pick := func() (config.VIP, bool) {
		d := recA.Desired()
		if len(d) == 0 {
			return config.VIP{}, false
		}
		return d[rng.IntN(len(d))], true
	}
	pickBackend := func(v config.VIP) (config.Backend, bool) {
		if len(v.Backends) == 0 {
			return config.Backend{}, false
		}
		return v.Backends[rng.IntN(len(v.Backends))], true
	}
	allowed := func(err error) bool {
		return err == nil || errors.Is(err, ErrExists) || errors.Is(err, ErrNotFound)
	}

	const steps = 400
	for step := range steps {
		var what string
		var err error
		switch op := rng.IntN(12); {
		case op <= 1:
			v := randomVIP()
			what, err = "add vip "+Key(v).String(), recA.AddVIP(ctx, v)
		case op == 2:
			if rng.IntN(2) == 0 {
				break // removals at half the rate of additions: VIPs accumulate
			}
			if v, ok := pick(); ok {
				what, err = "remove vip "+Key(v).String(), recA.RemoveVIP(ctx, Key(v))
			}
		case op <= 5:
			if v, ok := pick(); ok {
				b := randomBackend()
				what, err = fmt.Sprintf("add backend %s to %s", b.Address, Key(v)), recA.AddBackend(ctx, Key(v), b)
			}
		case op == 6:
			if v, ok := pick(); ok {
				if b, ok := pickBackend(v); ok {
					what, err = fmt.Sprintf("remove backend %s of %s", b.Address, Key(v)), recA.RemoveBackend(ctx, Key(v), b.Address)
				}
			}
		case op == 7:
			if v, ok := pick(); ok {
				if b, ok := pickBackend(v); ok {
					w := uint32(rng.IntN(4))
					what, err = fmt.Sprintf("weight %d for %s of %s", w, b.Address, Key(v)), recA.SetWeight(ctx, Key(v), b.Address, w)
				}
			}
		case op <= 9:
			if v, ok := pick(); ok {
				if b, ok := pickBackend(v); ok {
					h := []Health{Up, Down}[rng.IntN(2)]
					what, err = fmt.Sprintf("%s %s of %s", h, b.Address, Key(v)), recA.SetHealth(ctx, Key(v), b.Address, h)
				}
			}
		case op == 10:
			a := addrs[rng.IntN(len(addrs))]
			m := net.HardwareAddr{2, 0, 0, 0, 3, byte(rng.IntN(256))}
			res.change(a, m)
			what = fmt.Sprintf("mac of %s now %s", a, m)
			recA.MACChanged(ctx, a, m)
		default:
			// A whole state: some of the desired VIPs kept, some new.
			var s State
			for _, v := range recA.Desired() {
				if rng.IntN(8) > 0 {
					s.VIPs = append(s.VIPs, v)
				}
			}
			for range rng.IntN(3) {
				v := randomVIP()
				if !slices.ContainsFunc(s.VIPs, func(o config.VIP) bool { return Key(o) == Key(v) }) {
					s.VIPs = append(s.VIPs, v)
				}
			}
			_, err = recA.Apply(ctx, s)
			what = fmt.Sprintf("apply %d vips", len(s.VIPs))
		}
		if !allowed(err) {
			t.Fatalf("step %d (%s): %v", step, what, err)
		}
		// Now and then (and at the end) the reconciler plans its own
		// desired state whole: a partial plan that missed a VIP shows
		// here as a write, before a later edit of that VIP hides it.
		if rng.IntN(3) == 0 || step == steps-1 {
			r, err := recA.Apply(ctx, State{VIPs: recA.Desired()})
			if err != nil || len(r.Added)+len(r.Changed)+len(r.Removed) > 0 {
				t.Fatalf("step %d (%s), then the desired state whole: added %v, changed %v, removed %v (%v); want nothing written",
					step, what, r.Added, r.Changed, r.Removed, err)
			}
		}
	}

	// Enough VIPs to compare, whatever the walk left: new ones, edited.
	for len(recA.Desired()) < 6 {
		v := randomVIP()
		if err := recA.AddVIP(ctx, v); !allowed(err) {
			t.Fatalf("add vip %s: %v", Key(v), err)
		}
		b := randomBackend()
		if err := recA.AddBackend(ctx, Key(v), b); !allowed(err) {
			t.Fatalf("add backend %s to %s: %v", b.Address, Key(v), err)
		}
	}
	final := State{VIPs: recA.Desired()}
	dpB := load()
	recB := New(dpB, res, Options{Log: log})
	if _, err := recB.Apply(ctx, final); err != nil {
		t.Fatalf("apply the final state whole: %v", err)
	}
	for k, m := range recA.HealthOf() {
		for a, h := range m {
			if err := recB.SetHealth(ctx, k, a, h); err != nil {
				t.Fatalf("health of %s in %s: %v", a, k, err)
			}
		}
	}

	a, b := dpA.VIPs(), dpB.VIPs()
	if len(a) != len(b) {
		t.Fatalf("incremental: %d vips, whole: %d", len(a), len(b))
	}
	for i := range a {
		if diff := vipDiff(a[i], b[i]); diff != "" {
			t.Fatalf("vip %d: %s", i, diff)
		}
		ra, err := dpA.RingDigest(a[i].VIP)
		if err != nil {
			t.Fatal(err)
		}
		rb, err := dpB.RingDigest(b[i].VIP)
		if err != nil {
			t.Fatal(err)
		}
		if ra != rb {
			t.Fatalf("vip %s: ring digest %#x incrementally, %#x whole", a[i].VIP, ra, rb)
		}
	}
	t.Logf("%d vips, %d backends in all, compared", len(a), pairsOf(a))
}

// vipDiff says how two VIP states differ, apart from their indexes.
func vipDiff(a, b datapath.VIPState) string {
	if a.VIP != b.VIP || a.Config != b.Config || len(a.Backends) != len(b.Backends) {
		return fmt.Sprintf("incremental %+v, whole %+v", a, b)
	}
	for i := range a.Backends {
		x, y := a.Backends[i], b.Backends[i]
		if x.Addr != y.Addr || x.Weight != y.Weight || !bytes.Equal(x.MAC, y.MAC) {
			return fmt.Sprintf("%s: backend %d: incremental %+v, whole %+v", a.VIP, i, x, y)
		}
	}
	return ""
}

func pairsOf(vips []datapath.VIPState) int {
	n := 0
	for _, v := range vips {
		n += len(v.Backends)
	}
	return n
}
