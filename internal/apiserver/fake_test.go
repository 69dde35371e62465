package apiserver

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// fakeController is an in-memory Controller. It records the last call,
// can be told to fail or panic, and detects overlapping mutating calls.
type fakeController struct {
	mu   sync.Mutex
	vips []api.VIP
	last string // last call, e.g. "SetWeight tcp/203.0.113.10:80 198.18.0.12 0"
	cfg  []byte // last Apply body
	// conns is the connection table; connErrAfter, when above zero, makes
	// Conns fail after that many entries.
	conns        []api.Conn
	connErrAfter int

	err       error         // returned by every method when set
	panicMsg  string        // every method panics with it when set
	hold      time.Duration // mutating calls sleep this long
	active    atomic.Int32  // mutating calls in progress
	overlaps  atomic.Int32  // times two mutating calls ran at once
	mutations atomic.Int32
}

func mustRef(s string) api.VIPRef {
	ref, err := api.ParseVIPRef(s)
	if err != nil {
		panic(err)
	}
	return ref
}

func newFake() *fakeController {
	return &fakeController{vips: []api.VIP{{
		VIPRef:    mustRef("tcp/203.0.113.10:80"),
		Name:      "web",
		Mode:      "dsr",
		Scheduler: "maglev",
		RingSize:  65537,
		Backends: []api.Backend{
			{Address: netip.MustParseAddr("198.18.0.11"), Weight: 1, Health: "up"},
			{Address: netip.MustParseAddr("198.18.0.12"), Weight: 2, Health: "down"},
		},
	}}, conns: fakeConns()}
}

func (f *fakeController) enter(call string) error {
	if f.panicMsg != "" {
		panic(f.panicMsg)
	}
	f.mu.Lock()
	f.last = call
	f.mu.Unlock()
	return f.err
}

// mutating wraps a state change with the overlap detector.
func (f *fakeController) mutating(call string, change func() error) error {
	if n := f.active.Add(1); n > 1 {
		f.overlaps.Add(1)
	}
	defer f.active.Add(-1)
	f.mutations.Add(1)
	if err := f.enter(call); err != nil {
		return err
	}
	time.Sleep(f.hold)
	f.mu.Lock()
	defer f.mu.Unlock()
	return change()
}

func (f *fakeController) find(ref api.VIPRef) int {
	return slices.IndexFunc(f.vips, func(v api.VIP) bool { return v.VIPRef == ref })
}

func (f *fakeController) Status(ctx context.Context) (api.Status, error) {
	if err := f.enter("Status"); err != nil {
		return api.Status{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return api.Status{Version: "test", Instance: "default", VIPs: len(f.vips), VRRP: "disabled",
		Started: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Reconcile: 1500 * time.Microsecond,
		Interfaces: []api.Interface{{Name: "eth0", Ifindex: 2, XDPMode: "native"}}}, nil
}

func (f *fakeController) ListVIPs(ctx context.Context) ([]api.VIP, error) {
	if err := f.enter("ListVIPs"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.vips), nil
}

func (f *fakeController) AddVIP(ctx context.Context, v api.VIP) error {
	return f.mutating("AddVIP "+v.VIPRef.String(), func() error {
		if f.find(v.VIPRef) >= 0 {
			return fmt.Errorf("vip %s already exists: %w", v.VIPRef, api.ErrConflict)
		}
		f.vips = append(f.vips, v)
		return nil
	})
}

func (f *fakeController) RemoveVIP(ctx context.Context, ref api.VIPRef) error {
	return f.mutating("RemoveVIP "+ref.String(), func() error {
		i := f.find(ref)
		if i < 0 {
			return fmt.Errorf("vip %s: %w", ref, api.ErrNotFound)
		}
		f.vips = slices.Delete(f.vips, i, i+1)
		return nil
	})
}

func (f *fakeController) AddBackend(ctx context.Context, ref api.VIPRef, b api.Backend) error {
	return f.mutating(fmt.Sprintf("AddBackend %s %s %d", ref, b.Address, b.Weight), func() error {
		i := f.find(ref)
		if i < 0 {
			return fmt.Errorf("vip %s: %w", ref, api.ErrNotFound)
		}
		f.vips[i].Backends = append(f.vips[i].Backends, b)
		return nil
	})
}

func (f *fakeController) RemoveBackend(ctx context.Context, ref api.VIPRef, addr netip.Addr) error {
	return f.mutating(fmt.Sprintf("RemoveBackend %s %s", ref, addr), func() error {
		i := f.find(ref)
		if i < 0 {
			return fmt.Errorf("vip %s: %w", ref, api.ErrNotFound)
		}
		j := slices.IndexFunc(f.vips[i].Backends, func(b api.Backend) bool { return b.Address == addr })
		if j < 0 {
			return fmt.Errorf("backend %s of vip %s: %w", addr, ref, api.ErrNotFound)
		}
		f.vips[i].Backends = slices.Delete(f.vips[i].Backends, j, j+1)
		return nil
	})
}

func (f *fakeController) SetWeight(ctx context.Context, ref api.VIPRef, addr netip.Addr, weight uint32) error {
	return f.mutating(fmt.Sprintf("SetWeight %s %s %d", ref, addr, weight), func() error {
		i := f.find(ref)
		if i < 0 {
			return fmt.Errorf("vip %s: %w", ref, api.ErrNotFound)
		}
		for j := range f.vips[i].Backends {
			if f.vips[i].Backends[j].Address == addr {
				f.vips[i].Backends[j].Weight = weight
				return nil
			}
		}
		return fmt.Errorf("backend %s of vip %s: %w", addr, ref, api.ErrNotFound)
	})
}

func (f *fakeController) Stats(ctx context.Context) (api.Stats, error) {
	if err := f.enter("Stats"); err != nil {
		return api.Stats{}, err
	}
	return api.Stats{
		Interval: time.Second,
		Verdicts: map[string]uint64{"tx_dsr": 10},
		VIPs: []api.VIPStats{{VIP: mustRef("tcp/203.0.113.10:80"),
			Counter:  api.Counter{Packets: 10, Bytes: 1000, PacketRate: 1200, ByteRate: 3.4e6},
			Backends: []api.BackendStats{{Address: netip.MustParseAddr("198.18.0.11"), Counter: api.Counter{Packets: 10}}}}},
	}, nil
}

func (f *fakeController) Explain(ctx context.Context, req api.ExplainRequest) (api.Explanation, error) {
	if err := f.enter(fmt.Sprintf("Explain %s %s:%d -> %s:%d syn=%v", req.Protocol, req.Src, req.Sport, req.Dst, req.Dport, req.SYN)); err != nil {
		return api.Explanation{}, err
	}
	return api.Explanation{VIP: mustRef("tcp/203.0.113.10:80"), Backend: netip.MustParseAddr("198.18.0.12"),
		Reason: "ring slot", Hash: 0xdeadbeef, Slot: 1234, RingSize: 65537, RingBackend: netip.MustParseAddr("198.18.0.12")}, nil
}

func (f *fakeController) Apply(ctx context.Context, config []byte) (api.ApplyResult, error) {
	var res api.ApplyResult
	err := f.mutating("Apply", func() error {
		f.cfg = slices.Clone(config)
		res = api.ApplyResult{Added: []string{"udp/203.0.113.11:53"}, Unchanged: 1}
		return nil
	})
	return res, err
}

func (f *fakeController) VRRP(ctx context.Context) (api.VRRP, error) {
	if err := f.enter("VRRP"); err != nil {
		return api.VRRP{}, err
	}
	return api.VRRP{Enabled: true, State: "master", Priority: 200}, nil
}

func (f *fakeController) VRRPHandover(ctx context.Context, resume bool) error {
	return f.mutating("VRRPHandover", func() error { return nil })
}

func (f *fakeController) BGP(ctx context.Context) (api.BGP, error) {
	if err := f.enter("BGP"); err != nil {
		return api.BGP{}, err
	}
	return api.BGP{Enabled: true, ASN: 65010}, nil
}

func (f *fakeController) NodeDrain(ctx context.Context, resume bool) error {
	return f.mutating(fmt.Sprintf("NodeDrain resume=%t", resume), func() error { return nil })
}

func (f *fakeController) Plan(ctx context.Context, config []byte) (api.Plan, error) {
	if err := f.enter("Plan"); err != nil {
		return api.Plan{}, err
	}
	f.mu.Lock()
	f.cfg = slices.Clone(config)
	f.mu.Unlock()
	return api.Plan{Changed: []api.VIPPlan{{VIP: "tcp/203.0.113.10:80", RingSize: 65537, MovedSlots: 100, MovedShare: 100.0 / 65537}}, Unchanged: 1}, nil
}

func (f *fakeController) Config(ctx context.Context) (api.RunningConfig, error) {
	if err := f.enter("Config"); err != nil {
		return api.RunningConfig{}, err
	}
	return api.RunningConfig{YAML: "interfaces:\n  - name: eth0\n"}, nil
}

// fakeConns are three entries of web: two on .11 (one established), one
// on .12.
func fakeConns() []api.Conn {
	web := mustRef("tcp/203.0.113.10:80")
	c := func(client, backend, state string) api.Conn {
		return api.Conn{Protocol: "tcp", Client: netip.MustParseAddrPort(client), Dst: netip.MustParseAddrPort("203.0.113.10:80"),
			VIP: web, Backend: netip.MustParseAddr(backend), State: state, Idle: time.Second, ExpiresIn: 899 * time.Second}
	}
	return []api.Conn{
		c("198.19.1.2:40000", "198.18.0.11", "established"),
		c("198.19.1.3:40001", "198.18.0.11", "syn"),
		c("198.19.1.4:40002", "198.18.0.12", "established"),
	}
}

func (f *fakeController) matchConn(flt api.ConnFilter, c api.Conn) bool {
	active := c.State == "established"
	return (flt.VIP == nil || *flt.VIP == c.VIP) && (!flt.Backend.IsValid() || flt.Backend == c.Backend) &&
		(flt.State == "" || flt.State == c.State || flt.State == "active" && active || flt.State == "inactive" && !active)
}

func (f *fakeController) Conns(ctx context.Context, flt api.ConnFilter, emit func(api.Conn) error) error {
	if err := f.enter("Conns " + flt.Query()); err != nil {
		return err
	}
	f.mu.Lock()
	conns := slices.Clone(f.conns)
	failAfter := f.connErrAfter
	f.mu.Unlock()
	n := 0
	for i, c := range conns {
		if failAfter > 0 && i == failAfter {
			return fmt.Errorf("walk connection table ct_v4: bad things")
		}
		if !f.matchConn(flt, c) {
			continue
		}
		if err := emit(c); err != nil {
			return err
		}
		if n++; flt.Limit > 0 && n == flt.Limit {
			return nil
		}
	}
	return nil
}

func (f *fakeController) FlushConns(ctx context.Context, flt api.ConnFilter) (int, error) {
	n := 0
	err := f.mutating("FlushConns "+flt.Query(), func() error {
		kept := f.conns[:0]
		for _, c := range f.conns {
			if f.matchConn(flt, c) {
				n++
				continue
			}
			kept = append(kept, c)
		}
		f.conns = kept
		return nil
	})
	return n, err
}

func (f *fakeController) BackendConns(ctx context.Context, ref api.VIPRef, addr netip.Addr, wait time.Duration) (api.BackendConns, error) {
	if err := f.enter(fmt.Sprintf("BackendConns %s %s wait=%v", ref, addr, wait)); err != nil {
		return api.BackendConns{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out api.BackendConns
	for _, c := range f.conns {
		if c.VIP == ref && c.Backend == addr {
			if c.State == "established" {
				out.Active++
			} else {
				out.Inactive++
			}
		}
	}
	out.Empty = out.Active == 0
	if !out.Empty {
		out.Waited = wait
	}
	return out, nil
}
