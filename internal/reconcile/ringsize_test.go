package reconcile

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/config"
)

// roomyDataplane is the fake with room for VIPs of many backends.
type roomyDataplane struct{ *fakeDataplane }

func (roomyDataplane) Capacity() (int, int) { return 16, 4096 }

// autoVIP is a VIP with ring_size: auto over n backends of weight 1, each
// health-checked (so that one can be marked down).
func autoVIP(addr string, n int, max uint32) config.VIP {
	v := vip(addr, 80)
	v.RingSize, v.RingSizeAuto, v.RingSizeMax = 0, true, max
	for i := range n {
		b := be(fmt.Sprintf("198.18.%d.%d", i/250, i%250+1), 1, fmt.Sprintf("02:00:00:00:%02x:%02x", i/250, i%250+1))
		b.HealthCheck = &config.HealthCheck{Type: "tcp"}
		v.Backends = append(v.Backends, b)
	}
	return v
}

// chosen is the size r chooses for v: autoSize, which the literal sizes
// below (from ringsize's own tests) anchor.
func chosen(t *testing.T, r *Reconciler, v config.VIP) uint32 {
	t.Helper()
	size, err := r.autoSize(v)
	if err != nil {
		t.Fatal(err)
	}
	return size
}

// TestRingSizeAuto: a VIP with ring_size: auto is written with the size
// ringsize chooses for its configured backends; a fixed VIP keeps its
// own; a health change leaves the size alone; an edit of the backends or
// a weight chooses again.
func TestRingSizeAuto(t *testing.T) {
	ctx := context.Background()
	f := newFake()
	r := New(roomyDataplane{f}, fakeResolver{}, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	web, fixed := autoVIP("203.0.113.10", 100, 65537), vip("203.0.113.11", 80, b1, b2)
	key := Key(web)
	if _, err := r.Apply(ctx, State{VIPs: []config.VIP{web, fixed}}); err != nil {
		t.Fatal(err)
	}
	size := func() uint32 { return f.vips[key].Config.RingSize }
	if got := size(); got != 11579 || got != chosen(t, r, web) {
		t.Fatalf("100 equal backends: ring of %d slots, want 11579 (the chooser's %d)", got, chosen(t, r, web))
	}
	if got := f.vips[Key(fixed)].Config.RingSize; got != 251 {
		t.Errorf("fixed vip: ring of %d slots, want its 251", got)
	}
	if got := r.RingSizes(); got[key] != 11579 || got[Key(fixed)] != 251 {
		t.Errorf("RingSizes = %v, want %s 11579 and %s 251", got, key, Key(fixed))
	}

	// A backend goes down: out of the ring, the size stays.
	down := web.Backends[7].Address
	f.writes = nil
	if err := r.SetHealth(ctx, key, down, Down); err != nil {
		t.Fatal(err)
	}
	if len(f.writes) != 1 || len(f.vips[key].Backends) != 99 || size() != 11579 {
		t.Fatalf("backend down: writes %v, %d backends, ring of %d; want one write, 99 backends, 11579 slots", f.writes, len(f.vips[key].Backends), size())
	}

	// A reweight chooses again, from the configured weights: one backend
	// of weight 1000 leaves the others 1/1099 of the ring each, 10.5
	// slots of 11579, which is 5% off.
	if err := r.SetWeight(ctx, key, web.Backends[3].Address, 1000); err != nil {
		t.Fatal(err)
	}
	web.Backends[3].Weight = 1000
	if want := chosen(t, r, web); size() != want || want == 11579 {
		t.Fatalf("after a reweight: ring of %d slots, want the chooser's %d (not 11579)", size(), want)
	}

	// Fewer backends, a smaller ring; a lower maximum caps it.
	small := autoVIP("203.0.113.10", 10, 65537)
	if _, err := r.Apply(ctx, State{VIPs: []config.VIP{small, fixed}}); err != nil {
		t.Fatal(err)
	}
	if size() != 1021 {
		t.Errorf("10 equal backends: ring of %d slots, want 1021", size())
	}
	capped := autoVIP("203.0.113.10", 100, 4093)
	if _, err := r.Apply(ctx, State{VIPs: []config.VIP{capped, fixed}}); err != nil {
		t.Fatal(err)
	}
	if size() != 4093 {
		t.Errorf("100 equal backends up to 4093: ring of %d slots, want 4093", size())
	}

	// The plan of a dry run says the size.
	p, err := r.Preview(State{VIPs: []config.VIP{web, fixed}})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, vp := range p.Changed {
		if vp.VIP == key {
			found = true
			if vp.RingSize != chosen(t, r, web) {
				t.Errorf("preview: ring of %d slots, want %d", vp.RingSize, chosen(t, r, web))
			}
		}
	}
	if !found {
		t.Errorf("preview: %s not among the changed vips %+v", key, p.Changed)
	}
}

// TestRingSizeAutoSameOnTwoNodes: two reconcilers given the same VIP by
// different histories write the same size (no hysteresis).
func TestRingSizeAutoSameOnTwoNodes(t *testing.T) {
	ctx := context.Background()
	newNode := func() (*Reconciler, *fakeDataplane) {
		f := newFake()
		return New(roomyDataplane{f}, fakeResolver{}, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}), f
	}
	r1, f1 := newNode()
	r2, f2 := newNode()
	final := autoVIP("203.0.113.10", 10, 65537)
	for _, v := range []config.VIP{autoVIP("203.0.113.10", 100, 65537), final} {
		if _, err := r1.Apply(ctx, State{VIPs: []config.VIP{v}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r2.Apply(ctx, State{VIPs: []config.VIP{final}}); err != nil {
		t.Fatal(err)
	}
	k := Key(final)
	if a, b := f1.vips[k].Config.RingSize, f2.vips[k].Config.RingSize; a != b || a != 1021 {
		t.Errorf("node with history: %d slots, fresh node: %d; want 1021 on both", a, b)
	}
}
