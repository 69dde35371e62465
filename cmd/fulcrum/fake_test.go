package main

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// fakeController is an in-memory apiserver.Controller behind the test daemon.
type fakeController struct {
	mu      sync.Mutex
	vips    []api.VIP
	calls   []string // every call, e.g. "SetWeight tcp/203.0.113.10:80 198.18.0.12 0"
	config  []byte   // the last Apply's config
	err     error    // returned by every call when set
	stats   api.Stats
	explain api.Explanation
}

func ref(s string) api.VIPRef {
	r, err := api.ParseVIPRef(s)
	if err != nil {
		panic(err)
	}
	return r
}

func newFake() *fakeController {
	off := false
	return &fakeController{
		vips: []api.VIP{
			{
				VIPRef: ref("tcp/203.0.113.10:80"), Name: "web", Mode: "dsr", Scheduler: "maglev", RingSize: 65537,
				Backends: []api.Backend{
					{Address: netip.MustParseAddr("198.18.0.11"), Weight: 1, Health: "up"},
					{Address: netip.MustParseAddr("198.18.0.12"), Weight: 0, Health: "up", MAC: "02:00:5e:00:53:12"},
					{Address: netip.MustParseAddr("198.18.0.13"), Weight: 2, Health: "down"},
				},
			},
			{
				VIPRef: ref("udp/[2001:db8::1]:53"), Mode: "dsr", Scheduler: "source-hash", RingSize: 251, Conntrack: &off, Fragments: "pass",
				Backends: []api.Backend{{Address: netip.MustParseAddr("2001:db8:1::2"), Weight: 1}},
			},
		},
		stats: api.Stats{
			Time:     time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
			Interval: time.Second,
			Verdicts: map[string]uint64{"tx_dsr": 1234567, "drop_malformed": 3, "pass": 42},
			VIPs: []api.VIPStats{{
				VIP:     ref("tcp/203.0.113.10:80"),
				Counter: api.Counter{Packets: 1234567, Bytes: 987654321, PacketRate: 1234, ByteRate: 3.4e6},
				Backends: []api.BackendStats{
					{Address: netip.MustParseAddr("198.18.0.11"), Counter: api.Counter{Packets: 999, Bytes: 12345, PacketRate: 0.5, ByteRate: 950}},
				},
			}},
		},
		explain: api.Explanation{
			VIP: ref("tcp/203.0.113.10:80"), Backend: netip.MustParseAddr("198.18.0.12"), Reason: "connection entry",
			Hash: 0xdeadbeef, Slot: 1234, RingSize: 65537, RingBackend: netip.MustParseAddr("198.18.0.12"),
		},
	}
}

func (f *fakeController) record(call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	return f.err
}

// lastCall returns the last call, or "" if none.
func (f *fakeController) lastCall() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return ""
	}
	return f.calls[len(f.calls)-1]
}

func (f *fakeController) Status(ctx context.Context) (api.Status, error) {
	if err := f.record("Status"); err != nil {
		return api.Status{}, err
	}
	return api.Status{
		Version: "v1.0.0", Instance: "default", ConfigFile: "/etc/fulcrum/fulcrum.yaml",
		Started:    time.Now().Add(-3 * time.Hour),
		Interfaces: []api.Interface{{Name: "eth0", Ifindex: 2, XDPMode: "native"}},
		VIPs:       2, Backends: 4, VRRP: "master", Reconcile: 1500 * time.Microsecond, Adopted: true,
	}, nil
}

func (f *fakeController) ListVIPs(ctx context.Context) ([]api.VIP, error) {
	if err := f.record("ListVIPs"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.vips), nil
}

func (f *fakeController) AddVIP(ctx context.Context, v api.VIP) error {
	call := fmt.Sprintf("AddVIP %s mode=%s sched=%s ring=%d fragments=%s name=%s conntrack=%v", v.VIPRef, v.Mode, v.Scheduler, v.RingSize, v.Fragments, v.Name, v.Conntrack == nil || *v.Conntrack)
	for _, b := range v.Backends {
		call += fmt.Sprintf(" %s/%d/%s", b.Address, b.Weight, b.MAC)
	}
	if err := f.record(call); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, old := range f.vips {
		if old.VIPRef == v.VIPRef {
			return fmt.Errorf("vip %s already exists: %w", v.VIPRef, api.ErrConflict)
		}
	}
	f.vips = append(f.vips, v)
	return nil
}

func (f *fakeController) RemoveVIP(ctx context.Context, r api.VIPRef) error {
	if err := f.record("RemoveVIP " + r.String()); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	i := slices.IndexFunc(f.vips, func(v api.VIP) bool { return v.VIPRef == r })
	if i < 0 {
		return fmt.Errorf("vip %s: %w", r, api.ErrNotFound)
	}
	f.vips = slices.Delete(f.vips, i, i+1)
	return nil
}

func (f *fakeController) AddBackend(ctx context.Context, r api.VIPRef, b api.Backend) error {
	return f.record(fmt.Sprintf("AddBackend %s %s weight=%d mac=%s", r, b.Address, b.Weight, b.MAC))
}

func (f *fakeController) RemoveBackend(ctx context.Context, r api.VIPRef, addr netip.Addr) error {
	return f.record(fmt.Sprintf("RemoveBackend %s %s", r, addr))
}

func (f *fakeController) SetWeight(ctx context.Context, r api.VIPRef, addr netip.Addr, weight uint32) error {
	return f.record(fmt.Sprintf("SetWeight %s %s %d", r, addr, weight))
}

func (f *fakeController) Stats(ctx context.Context) (api.Stats, error) {
	if err := f.record("Stats"); err != nil {
		return api.Stats{}, err
	}
	return f.stats, nil
}

func (f *fakeController) Explain(ctx context.Context, req api.ExplainRequest) (api.Explanation, error) {
	if err := f.record(fmt.Sprintf("Explain %s %s:%d -> %s:%d syn=%v", req.Protocol, req.Src, req.Sport, req.Dst, req.Dport, req.SYN)); err != nil {
		return api.Explanation{}, err
	}
	return f.explain, nil
}

func (f *fakeController) Apply(ctx context.Context, config []byte) (api.ApplyResult, error) {
	if err := f.record("Apply"); err != nil {
		return api.ApplyResult{}, err
	}
	f.mu.Lock()
	f.config = slices.Clone(config)
	f.mu.Unlock()
	return api.ApplyResult{Added: []string{"udp/203.0.113.11:53"}, Changed: []string{"tcp/203.0.113.10:80"}, Removed: []string{"udp/[2001:db8::1]:53"}, Unchanged: 3}, nil
}

func (f *fakeController) VRRP(ctx context.Context) (api.VRRP, error) {
	if err := f.record("VRRP"); err != nil {
		return api.VRRP{}, err
	}
	return api.VRRP{Enabled: true, State: "master", Priority: 200, Master: netip.MustParseAddr("198.18.0.2"), AdvertsSent: 42,
		WorstSendDelay: 1500 * time.Microsecond, WorstSendCall: 12 * time.Millisecond, LateSends: 3}, nil
}

func (f *fakeController) VRRPHandover(ctx context.Context, resume bool) error {
	if resume {
		return f.record("VRRPResume")
	}
	return f.record("VRRPHandover")
}
