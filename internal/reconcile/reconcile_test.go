package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
)

// fakeDataplane keeps VIPs as the datapath would and records every write:
// those of VIPs in writes, those of settings in settings, and both in
// calls, in order. It has no lock of its own: calls that overlap are
// counted in overlaps (and seen by the race detector).
type fakeDataplane struct {
	vips     map[datapath.VIP]datapath.VIPState
	writes   []string
	settings []string
	calls    []string
	fail     error
	encap    datapath.EncapConfig
	limit    uint32

	active, overlaps atomic.Int32
}

// enter marks a call in progress until the returned func runs, and counts
// an overlap if another is; it yields meanwhile, so that calls the
// reconciler does not serialise get the chance to overlap.
func (f *fakeDataplane) enter() func() {
	if f.active.Add(1) > 1 {
		f.overlaps.Add(1)
	}
	runtime.Gosched()
	return func() { f.active.Add(-1) }
}

// SetEncap refuses, as the datapath does, to take away a prefix that a
// live ipip VIP needs.
func (f *fakeDataplane) SetEncap(c datapath.EncapConfig) error {
	defer f.enter()()
	for _, s := range f.vips {
		if s.Config.Mode != datapath.ModeIPIP {
			continue
		}
		for _, b := range s.Backends {
			if err := encapCovers(c, b.Addr); err != nil {
				return fmt.Errorf("vip %s: %w", s.VIP, err)
			}
		}
	}
	f.encap = c
	f.settings = append(f.settings, fmt.Sprintf("encap %s %s", c.SourceV4, c.SourceV6))
	f.calls = append(f.calls, f.settings[len(f.settings)-1])
	return nil
}

func (f *fakeDataplane) Encap() datapath.EncapConfig { return f.encap }

func (f *fakeDataplane) SetNewFlowLimit(n uint32) error {
	defer f.enter()()
	f.limit = n
	f.settings = append(f.settings, fmt.Sprintf("limit %d", n))
	f.calls = append(f.calls, f.settings[len(f.settings)-1])
	return nil
}

func newFake() *fakeDataplane { return &fakeDataplane{vips: make(map[datapath.VIP]datapath.VIPState)} }

func (f *fakeDataplane) SetVIPs(changes []datapath.VIPChange) []error {
	defer f.enter()()
	errs := make([]error, len(changes))
	for i, c := range changes {
		errs[i] = f.setVIP(c.VIP, c.Config, c.Backends)
	}
	return errs
}

func (f *fakeDataplane) setVIP(vip datapath.VIP, cfg datapath.VIPConfig, backends []datapath.Backend) error {
	if f.fail != nil {
		return f.fail
	}
	if err := datapath.Validate(vip, cfg, backends); err != nil {
		return err
	}
	for _, b := range backends {
		if err := encapCovers(f.encap, b.Addr); cfg.Mode == datapath.ModeIPIP && err != nil {
			return fmt.Errorf("vip %s: %w", vip, err)
		}
	}
	b := slices.Clone(backends)
	slices.SortFunc(b, func(x, y datapath.Backend) int { return x.Addr.Compare(y.Addr) })
	f.vips[vip] = datapath.VIPState{VIP: vip, Config: cfg, Backends: b}
	f.writes = append(f.writes, "set "+vip.String())
	f.calls = append(f.calls, "set "+vip.String())
	return nil
}

func (f *fakeDataplane) RemoveVIPs(vips []datapath.VIP) []error {
	defer f.enter()()
	for _, vip := range vips {
		delete(f.vips, vip)
		f.writes = append(f.writes, "remove "+vip.String())
		f.calls = append(f.calls, "remove "+vip.String())
	}
	return make([]error, len(vips))
}

func (f *fakeDataplane) VIPs() []datapath.VIPState {
	var out []datapath.VIPState
	for _, s := range f.vips {
		out = append(out, s)
	}
	return out
}

func (f *fakeDataplane) Capacity() (int, int) { return 4, 10 }

type fakeResolver map[netip.Addr]net.HardwareAddr

func (r fakeResolver) Resolve(ctx context.Context, a netip.Addr) (net.HardwareAddr, error) {
	if m, ok := r[a]; ok {
		return m, nil
	}
	return nil, fmt.Errorf("resolve %s: no answer", a)
}

func mac(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }

func vip(addr string, port uint16, backends ...config.Backend) config.VIP {
	return config.VIP{Address: netip.MustParseAddr(addr), Port: port, Protocol: "tcp", Mode: "dsr",
		Scheduler: "maglev", RingSize: 251, Conntrack: true, Fragments: "drop", Backends: backends}
}

func be(addr string, weight uint32, m string) config.Backend {
	return config.Backend{Address: netip.MustParseAddr(addr), Weight: weight, MAC: mac(m)}
}

var (
	b1 = be("198.18.0.11", 1, "02:00:00:00:00:11")
	b2 = be("198.18.0.12", 1, "02:00:00:00:00:12")
	b3 = be("198.18.0.13", 1, "") // resolved
)

func newRec(t *testing.T) (*Reconciler, *fakeDataplane) {
	f := newFake()
	res := fakeResolver{b3.Address: mac("02:00:00:00:00:13")}
	return New(f, res, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}), f
}

func TestReplaceWritesOnlyChanges(t *testing.T) {
	r, f := newRec(t)
	ctx := context.Background()
	web, api := vip("203.0.113.10", 80, b1, b2, b3), vip("203.0.113.11", 443, b1)
	res, err := r.Apply(ctx, State{VIPs: []config.VIP{web, api}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Added) != 2 || len(f.writes) != 2 {
		t.Fatalf("first apply: added %v, writes %v; want 2 and 2", res.Added, f.writes)
	}
	if got := f.vips[Key(web)].Backends[2].MAC.String(); got != "02:00:00:00:00:13" {
		t.Fatalf("resolved MAC = %s, want 02:00:00:00:00:13", got)
	}

	f.writes = nil
	res, err = r.Apply(ctx, State{VIPs: []config.VIP{web, api}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Unchanged != 2 || len(f.writes) != 0 {
		t.Fatalf("same state again: unchanged %d, writes %v; want 2 and none", res.Unchanged, f.writes)
	}

	web2 := vip("203.0.113.10", 80, b1, be("198.18.0.12", 5, "02:00:00:00:00:12"), b3)
	res, err = r.Apply(ctx, State{VIPs: []config.VIP{web2, api}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"set tcp/203.0.113.10:80"}; !slices.Equal(f.writes, want) || len(res.Changed) != 1 {
		t.Fatalf("reweight: writes %v, changed %v; want %v", f.writes, res.Changed, want)
	}

	f.writes = nil
	res, err = r.Apply(ctx, State{VIPs: []config.VIP{web2}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"remove tcp/203.0.113.11:443"}; !slices.Equal(f.writes, want) || len(res.Removed) != 1 {
		t.Fatalf("removal: writes %v; want %v", f.writes, want)
	}
}

// TestBadPlanWritesNothing: any bad VIP in a change refuses the whole
// change; the datapath and the desired state stay as they were.
func TestBadPlanWritesNothing(t *testing.T) {
	ctx := context.Background()
	good := vip("203.0.113.10", 80, b1)
	cases := []struct {
		name string
		vips []config.VIP
		want string
	}{
		{"wrong family", []config.VIP{good, vip("2001:db8:ffff::1", 80, b1)}, "vips[1] (tcp/[2001:db8:ffff::1]:80): vip tcp/[2001:db8:ffff::1]:80: backend 198.18.0.11: dsr mode needs a backend of the vip's family"},
		{"unresolvable MAC", []config.VIP{good, vip("203.0.113.12", 80, be("198.18.0.99", 1, ""))}, "vips[1] (tcp/203.0.113.12:80): backends[0] (198.18.0.99): resolve 198.18.0.99: no answer"},
		{"duplicate vip", []config.VIP{good, good}, "vips[1]: vip tcp/203.0.113.10:80 appears twice"},
		{"too many vips", []config.VIP{good, vip("203.0.113.1", 1), vip("203.0.113.2", 1), vip("203.0.113.3", 1), vip("203.0.113.4", 1)}, "5 vips: too many, the maximum is 4"},
		{"too many backends", []config.VIP{vip("203.0.113.1", 1, b1, b2), vip("203.0.113.2", 1, b1, b2, b3), vip("203.0.113.3", 1, b1, b2, b3), vip("203.0.113.4", 1, b1, b2, b3)}, "11 backends in all vips: too many, the maximum is 10"},
		{"unknown mode", []config.VIP{func() config.VIP { v := good; v.Mode = "nat"; return v }()}, `unknown mode "nat"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, f := newRec(t)
			if _, err := r.Apply(ctx, State{VIPs: []config.VIP{good}}); err != nil {
				t.Fatal(err)
			}
			f.writes = nil
			_, err := r.Apply(ctx, State{VIPs: c.vips})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
			if len(f.writes) != 0 {
				t.Fatalf("a refused change wrote %v", f.writes)
			}
			if d := r.Desired(); len(d) != 1 || Key(d[0]) != Key(good) {
				t.Fatalf("desired state changed to %v", d)
			}
		})
	}
}

func TestEdits(t *testing.T) {
	ctx := context.Background()
	r, f := newRec(t)
	web := vip("203.0.113.10", 80, b1, b2)
	if _, err := r.Apply(ctx, State{VIPs: []config.VIP{web}}); err != nil {
		t.Fatal(err)
	}
	k := Key(web)
	if err := r.AddVIP(ctx, web); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("AddVIP duplicate: err = %v", err)
	}
	if err := r.AddBackend(ctx, k, b3); err != nil {
		t.Fatal(err)
	}
	if n := len(f.vips[k].Backends); n != 3 {
		t.Fatalf("after AddBackend the datapath has %d backends, want 3", n)
	}
	if err := r.SetWeight(ctx, k, b2.Address, 0); err != nil {
		t.Fatal(err)
	}
	if w := f.vips[k].Backends[1].Weight; w != 0 {
		t.Fatalf("drained backend weight = %d, want 0", w)
	}
	if err := r.RemoveBackend(ctx, k, netip.MustParseAddr("198.18.0.77")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RemoveBackend unknown: err = %v, want ErrNotFound", err)
	}
	if err := r.RemoveVIP(ctx, datapath.VIP{Addr: netip.MustParseAddr("203.0.113.99"), Port: 1, Proto: datapath.TCP}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RemoveVIP unknown: err = %v, want ErrNotFound", err)
	}
	if err := r.SetWeight(ctx, k, b1.Address, 70000); err == nil || !strings.Contains(err.Error(), "70000 is over the maximum 65535") {
		t.Fatalf("SetWeight 70000: err = %v", err)
	}
	if err := r.RemoveVIP(ctx, k); err != nil {
		t.Fatal(err)
	}
	if len(f.vips) != 0 || len(r.Desired()) != 0 {
		t.Fatalf("after RemoveVIP: datapath %v, desired %v", f.vips, r.Desired())
	}
}

// TestHealth: a down backend leaves the ring (rehash) or gets weight 0
// (drain), and comes back when up.
func TestHealth(t *testing.T) {
	ctx := context.Background()
	for _, onDown := range []config.OnDown{config.OnDownRehash, config.OnDownDrain} {
		t.Run(string(onDown), func(t *testing.T) {
			r, f := newRec(t)
			web := vip("203.0.113.10", 80, b1, b2)
			web.HealthCheck = &config.HealthCheck{Type: "tcp", OnDown: onDown}
			for i := range web.Backends {
				web.Backends[i].HealthCheck = web.HealthCheck
			}
			if _, err := r.Apply(ctx, State{VIPs: []config.VIP{web}}); err != nil {
				t.Fatal(err)
			}
			k := Key(web)
			if err := r.SetHealth(ctx, k, b2.Address, Down); err != nil {
				t.Fatal(err)
			}
			got := f.vips[k].Backends
			if onDown == "rehash" && (len(got) != 1 || got[0].Addr != b1.Address) {
				t.Fatalf("down + rehash: backends %v, want only %s", got, b1.Address)
			}
			if onDown == "drain" && (len(got) != 2 || got[1].Weight != 0) {
				t.Fatalf("down + drain: backends %v, want %s at weight 0", got, b2.Address)
			}
			if h := r.HealthOf()[k][b2.Address]; h != Down {
				t.Fatalf("HealthOf = %s, want down", h)
			}
			if err := r.SetHealth(ctx, k, b2.Address, Up); err != nil {
				t.Fatal(err)
			}
			if got := f.vips[k].Backends; len(got) != 2 || got[1].Weight != 1 {
				t.Fatalf("back up: backends %v, want both at weight 1", got)
			}
		})
	}
}

// TestAllDown: with every backend down, "drop" leaves the VIP without
// backends (its packets are dropped and counted), "fail-open" keeps them
// all, at their weights; the same for a round-robin VIP, whose sequence
// the datapath builds from the same backends as its ring.
func TestAllDown(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		policy config.AllDown
		sched  config.Scheduler
	}{{config.AllDownDrop, config.SchedulerMaglev}, {config.AllDownFailOpen, config.SchedulerMaglev},
		{config.AllDownDrop, config.SchedulerRoundRobin}, {config.AllDownFailOpen, config.SchedulerRoundRobin}} {
		policy := c.policy
		t.Run(string(policy)+" "+string(c.sched), func(t *testing.T) {
			r, f := newRec(t)
			web := vip("203.0.113.10", 80, b1, b2)
			web.Scheduler = c.sched
			web.HealthCheck = &config.HealthCheck{Type: "tcp", OnDown: "rehash", AllDown: policy}
			for i := range web.Backends {
				web.Backends[i].HealthCheck = web.HealthCheck
			}
			if _, err := r.Apply(ctx, State{VIPs: []config.VIP{web}}); err != nil {
				t.Fatal(err)
			}
			k := Key(web)
			r.SetHealth(ctx, k, b1.Address, Down)
			if n := len(f.vips[k].Backends); n != 1 {
				t.Fatalf("one of two down: %d backends in the datapath, want 1", n)
			}
			r.SetHealth(ctx, k, b2.Address, Down)
			want := 0
			if policy == "fail-open" {
				want = 2
			}
			if n := len(f.vips[k].Backends); n != want {
				t.Fatalf("all down with %s: %d backends in the datapath, want %d", policy, n, want)
			}
			for _, b := range f.vips[k].Backends {
				if b.Weight != 1 {
					t.Errorf("all down with %s: backend %s at weight %d, want its configured 1", policy, b.Addr, b.Weight)
				}
			}
			if rr := f.vips[k].Config.RoundRobin; rr != (c.sched == config.SchedulerRoundRobin) {
				t.Errorf("scheduler %s reached the datapath as round robin %v", c.sched, rr)
			}
		})
	}
}

// TestHealthForgotten: a down backend that is removed and added again, or
// whose check is removed, is back in service.
func TestHealthForgotten(t *testing.T) {
	ctx := context.Background()
	r, f := newRec(t)
	chk := &config.HealthCheck{Type: "tcp", OnDown: "rehash"}
	checked := func(b config.Backend) config.Backend { b.HealthCheck = chk; return b }
	web := vip("203.0.113.10", 80, checked(b1), checked(b2))
	if _, err := r.Apply(ctx, State{VIPs: []config.VIP{web}}); err != nil {
		t.Fatal(err)
	}
	k := Key(web)
	r.SetHealth(ctx, k, b2.Address, Down)
	if err := r.RemoveBackend(ctx, k, b2.Address); err != nil {
		t.Fatal(err)
	}
	if err := r.AddBackend(ctx, k, checked(b2)); err != nil {
		t.Fatal(err)
	}
	if n := len(f.vips[k].Backends); n != 2 {
		t.Fatalf("backend removed while down and added again: %d in the datapath, want 2", n)
	}
	r.SetHealth(ctx, k, b2.Address, Down)
	unchecked := vip("203.0.113.10", 80, checked(b1), b2)
	if _, err := r.Apply(ctx, State{VIPs: []config.VIP{unchecked}}); err != nil {
		t.Fatal(err)
	}
	if n := len(f.vips[k].Backends); n != 2 {
		t.Fatalf("down backend whose check was removed: %d in the datapath, want 2", n)
	}
}
