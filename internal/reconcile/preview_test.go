package reconcile

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/config"
)

// TestPreview plans a state against what the datapath holds, with a
// backend down: a VIP reweighted and given a backend whose MAC nobody can
// resolve, one removed, one added. It must report each as Apply would do
// it, count ring slots that add up, leave the down backend out of both
// rings, and write nothing to the datapath; the unresolvable MAC does not
// fail it. A state Apply would refuse is refused the same way.
func TestPreview(t *testing.T) {
	ctx := context.Background()
	r, f := newRec(t)
	web := vip("203.0.113.10", 80, b1, b2, be("198.18.0.14", 1, "02:00:00:00:00:14"))
	web.HealthCheck = &config.HealthCheck{Type: "tcp", OnDown: config.OnDownRehash}
	for i := range web.Backends {
		web.Backends[i].HealthCheck = web.HealthCheck
	}
	dns := vip("203.0.113.10", 53, b1)
	if _, err := r.Apply(ctx, State{VIPs: []config.VIP{web, dns}}); err != nil {
		t.Fatal(err)
	}
	if err := r.SetHealth(ctx, Key(web), b2.Address, Down); err != nil {
		t.Fatal(err)
	}
	writes, calls := len(f.writes), len(f.calls)

	next := web
	next.Backends = slices.Clone(web.Backends)
	next.Backends[0].Weight = 3
	unresolvable := be("198.18.0.99", 2, "") // the resolver has no answer for it
	next.Backends = append(next.Backends, unresolvable)
	api := vip("203.0.113.10", 443, b1)
	p, err := r.Preview(State{VIPs: []config.VIP{next, api}})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.writes) != writes || len(f.calls) != calls {
		t.Fatalf("Preview wrote to the datapath: %q", f.writes[writes:])
	}
	if len(p.Added) != 1 || p.Added[0] != Key(api) || len(p.Removed) != 1 || p.Removed[0] != Key(dns) || p.Unchanged != 0 || len(p.Changed) != 1 {
		t.Fatalf("Preview = %+v; want %s added, %s removed, %s changed", p, Key(api), Key(dns), Key(web))
	}
	c := p.Changed[0]
	var oldSum, newSum uint32
	changes := map[string]string{}
	for _, b := range c.Backends {
		oldSum += b.OldSlots
		newSum += b.NewSlots
		changes[b.Addr.String()] = b.Change
		if b.Addr == b2.Address {
			t.Errorf("the down backend %s is in a ring: %+v", b2.Address, b)
		}
	}
	want := map[string]string{"198.18.0.11": "weight", "198.18.0.14": "", "198.18.0.99": "added"}
	if len(changes) != len(want) || changes["198.18.0.11"] != "weight" || changes["198.18.0.14"] != "" || changes["198.18.0.99"] != "added" {
		t.Errorf("backend changes %v, want %v", changes, want)
	}
	if oldSum != 251 || newSum != 251 || c.RingSize != 251 || c.Moved == 0 || c.Moved > 251 {
		t.Errorf("slots: %d before, %d after, ring %d, %d moved; want 251, 251, 251 and some moved", oldSum, newSum, c.RingSize, c.Moved)
	}

	// Apply refuses more VIPs than the datapath holds (4): so does Preview.
	many := []config.VIP{vip("203.0.113.1", 1, b1), vip("203.0.113.1", 2, b1), vip("203.0.113.1", 3, b1), vip("203.0.113.1", 4, b1), vip("203.0.113.1", 5, b1)}
	_, perr := r.Preview(State{VIPs: many})
	_, aerr := r.Apply(ctx, State{VIPs: many})
	if perr == nil || aerr == nil || perr.Error() != aerr.Error() {
		t.Errorf("too many VIPs: Preview error %v, Apply error %v; want the same error", perr, aerr)
	}
	// A VIP Apply finds invalid (two backends at one address).
	dup := vip("203.0.113.1", 1, b1, b1)
	_, perr = r.Preview(State{VIPs: []config.VIP{dup}})
	_, aerr = r.Apply(ctx, State{VIPs: []config.VIP{dup}})
	if !errors.Is(perr, ErrInvalid) || aerr == nil || perr.Error() != aerr.Error() {
		t.Errorf("duplicate backend: Preview error %v, Apply error %v; want the same ErrInvalid", perr, aerr)
	}
}
