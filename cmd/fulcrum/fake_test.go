package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/apiserver"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// testNow is the clock of every test run of the CLI: the fake's times are
// fixed relative to it, so that "3h0m ago" is in the golden files.
var testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// fakeController is an in-memory apiserver.Controller behind the test daemon.
// Its answers are fields, so tests can compare what the CLI printed with
// what the daemon said; change them with update.
type fakeController struct {
	mu      sync.Mutex
	vips    []api.VIP
	calls   []string // every call, e.g. "SetWeight tcp/203.0.113.10:80 198.18.0.12 0"
	config  []byte   // the last Apply's config
	err     error    // returned by every call when set
	status  api.Status
	stats   api.Stats
	explain api.Explanation
	applied api.ApplyResult
	plan    api.Plan
	running api.RunningConfig
	vrrp    api.VRRP
	bgp     api.BGP
	// conns is the connection table Conns streams (up to the filter's
	// limit: the filter itself is the daemon's business, and is checked
	// in the call); flushed is what FlushConns reports deleted;
	// backendConns is BackendConns's answer.
	conns        []api.Conn
	flushed      int
	backendConns api.BackendConns
	// bgpPackets are the VIP packet counts successive BGP calls report
	// (the last one repeats), so that node drain sees traffic stop.
	bgpPackets []uint64
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
					{Address: netip.MustParseAddr("198.18.0.11"), Weight: 1, Health: "up", HealthSince: testNow.Add(-time.Hour), Active: 3, Inactive: 1,
						ResponseTime: &api.ResponseTime{Source: "both", Cost: 1234567 * time.Nanosecond, Passive: 1234567 * time.Nanosecond, Active: 2 * time.Millisecond}},
					{Address: netip.MustParseAddr("198.18.0.12"), Weight: 0, Health: "up", MAC: "02:00:5e:00:53:12", Active: 300,
						ResponseTime: &api.ResponseTime{Source: "both", Active: 21 * time.Millisecond, Cost: 21 * time.Millisecond}},
					{Address: netip.MustParseAddr("198.18.0.13"), Weight: 2, Health: "down", HealthSince: testNow.Add(-90 * time.Second),
						HealthError: "dial tcp 198.18.0.13:80: connect: connection refused", ResponseTime: &api.ResponseTime{Source: "both"}},
				},
				Pools: []api.Pool{
					{Name: "eu", PrefixFile: "/etc/fulcrum/geo.csv", PrefixCount: 1204, Backends: []netip.Addr{netip.MustParseAddr("198.18.0.11")}, Fallback: "vip"},
					{Name: "us", Prefixes: []string{"198.51.100.0/24"}, PrefixCount: 1, Backends: []netip.Addr{netip.MustParseAddr("198.18.0.13")}, Fallback: "drop"},
				},
			},
			{
				VIPRef: ref("udp/[2001:db8::1]:53"), Mode: "ipip", Scheduler: "source-hash", RingSize: 251, Conntrack: &off, Fragments: "pass",
				SourceRanges: []string{"2001:db8:2::/48", "2001:db8:3::/48"},
				Backends:     []api.Backend{{Address: netip.MustParseAddr("2001:db8:1::2"), Weight: 1}},
			},
			{VIPRef: ref("tcp/203.0.113.10:0"), Mode: "dsr", RingSize: 251, RingSizeAuto: true, RingSizeMax: 65537, Backends: []api.Backend{}},
		},
		status: api.Status{
			Version: "v1.0.0", Instance: "default", ConfigFile: "/etc/fulcrum/fulcrum.yaml",
			Started:    testNow.Add(-3 * time.Hour),
			Interfaces: []api.Interface{{Name: "eth0", Ifindex: 2, XDPMode: "native"}, {Name: "eth1", Ifindex: 3, XDPMode: "generic"}},
			VIPs:       3, Backends: 4, VRRP: "master", LastApply: testNow.Add(-150 * time.Second),
			Reconcile: 1500 * time.Microsecond, Adopted: true, Layout: 4,
		},
		stats: api.Stats{
			Time:     testNow,
			Interval: time.Second,
			Verdicts: map[string]uint64{"tx_dsr": 1234567, "drop_malformed": 3, "pass_no_vip": 42},
			VIPs: []api.VIPStats{{
				VIP:     ref("tcp/203.0.113.10:80"),
				Counter: api.Counter{Packets: 1234567, Bytes: 987654321, PacketRate: 1234, ByteRate: 3.4e6},
				Backends: []api.BackendStats{
					{Address: netip.MustParseAddr("198.18.0.11"), Counter: api.Counter{Packets: 999, Bytes: 12345, PacketRate: 0.5, ByteRate: 950}, Active: 3, Inactive: 1},
					{Address: netip.MustParseAddr("198.18.0.12"), Counter: api.Counter{Packets: 1233568, Bytes: 987641976, PacketRate: 1233.5, ByteRate: 3.399e6}, Active: 300},
				},
			}},
		},
		explain: api.Explanation{
			VIP: ref("tcp/203.0.113.10:80"), Backend: netip.MustParseAddr("198.18.0.12"), Reason: "connection entry",
			Hash: 0xdeadbeef, Slot: 1234, RingSize: 65537, RingBackend: netip.MustParseAddr("198.18.0.12"),
			Entry: &api.ConnEntry{Backend: netip.MustParseAddr("198.18.0.12"), State: "established",
				Idle: 3*time.Second + 4*time.Millisecond, Timeout: 15 * time.Minute},
		},
		conns: []api.Conn{
			{Protocol: "tcp", Client: netip.MustParseAddrPort("198.19.1.2:40000"), Dst: netip.MustParseAddrPort("203.0.113.10:80"),
				VIP: ref("tcp/203.0.113.10:80"), Backend: netip.MustParseAddr("198.18.0.11"), State: "established",
				Idle: 1500 * time.Millisecond, ExpiresIn: 15*time.Minute - 1500*time.Millisecond},
			{Protocol: "tcp", Client: netip.MustParseAddrPort("198.19.1.3:40001"), Dst: netip.MustParseAddrPort("203.0.113.10:8080"),
				VIP: ref("tcp/203.0.113.10:0"), Backend: netip.MustParseAddr("198.18.0.13"), State: "fin",
				Idle: 10 * time.Second, ExpiresIn: 110 * time.Second},
			{Protocol: "udp", Client: netip.MustParseAddrPort("[2001:db8:9::7]:5353"), Dst: netip.MustParseAddrPort("[2001:db8::1]:53"),
				VIP: ref("udp/[2001:db8::1]:53"), Backend: netip.MustParseAddr("2001:db8:1::2"), State: "established",
				Idle: 0, ExpiresIn: 300 * time.Second},
		},
		applied: api.ApplyResult{Added: []string{"udp/203.0.113.11:53"}, Changed: []string{"tcp/203.0.113.10:80"}, Removed: []string{"udp/[2001:db8::1]:53"}, Unchanged: 3},
		vrrp: api.VRRP{Enabled: true, State: "master", Priority: 200, Master: netip.MustParseAddr("198.18.0.2"),
			AdvertsSent: 42, AdvertsReceived: 7, Transitions: 2, LastTransition: testNow.Add(-20 * time.Minute),
			Dropped:        map[string]uint64{"bad_ttl": 2, "auth": 0, "vrid": 1},
			WorstSendDelay: 1500 * time.Microsecond, WorstSendCall: 12 * time.Millisecond, LateSends: 3,
			WorstAdvertGap: 35 * time.Millisecond, LateAdverts: 1},
	}
}

// update changes the fake's answers.
func (f *fakeController) update(change func(*fakeController)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

// answer records a call and returns the answer and the error the fake
// gives to every call.
func answer[T any](f *fakeController, call string, v *T) (T, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	if f.err != nil {
		var zero T
		return zero, f.err
	}
	return *v, nil
}

func (f *fakeController) record(call string) error {
	_, err := answer(f, call, &struct{}{})
	return err
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
	return answer(f, "Status", &f.status)
}

func (f *fakeController) ListVIPs(ctx context.Context) ([]api.VIP, error) {
	vips, err := answer(f, "ListVIPs", &f.vips)
	return slices.Clone(vips), err
}

func (f *fakeController) AddVIP(ctx context.Context, v api.VIP) error {
	call := fmt.Sprintf("AddVIP %s mode=%s sched=%s ring=%d fragments=%s name=%s conntrack=%v", v.VIPRef, v.Mode, v.Scheduler, v.RingSize, v.Fragments, v.Name, v.Conntrack == nil || *v.Conntrack)
	if v.RingSizeAuto {
		call += fmt.Sprintf(" ring=auto max=%d", v.RingSizeMax)
	}
	if len(v.SourceRanges) > 0 {
		call += " sources=" + strings.Join(v.SourceRanges, ",")
	}
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
	return answer(f, "Stats", &f.stats)
}

func (f *fakeController) Explain(ctx context.Context, req api.ExplainRequest) (api.Explanation, error) {
	return answer(f, fmt.Sprintf("Explain %s %s:%d -> %s:%d syn=%v", req.Protocol, req.Src, req.Sport, req.Dst, req.Dport, req.SYN), &f.explain)
}

func (f *fakeController) Apply(ctx context.Context, config []byte) (api.ApplyResult, error) {
	res, err := answer(f, "Apply", &f.applied)
	if err == nil {
		f.update(func(f *fakeController) { f.config = slices.Clone(config) })
	}
	return res, err
}

func (f *fakeController) Plan(ctx context.Context, config []byte) (api.Plan, error) {
	res, err := answer(f, "Plan", &f.plan)
	if err == nil {
		f.update(func(f *fakeController) { f.config = slices.Clone(config) })
	}
	return res, err
}

func (f *fakeController) Config(ctx context.Context) (api.RunningConfig, error) {
	return answer(f, "Config", &f.running)
}

func (f *fakeController) VRRP(ctx context.Context) (api.VRRP, error) {
	return answer(f, "VRRP", &f.vrrp)
}

func (f *fakeController) VRRPHandover(ctx context.Context, resume bool) error {
	if resume {
		return f.record("VRRPResume")
	}
	return f.record("VRRPHandover")
}

func (f *fakeController) BGP(ctx context.Context) (api.BGP, error) {
	f.mu.Lock()
	if len(f.bgpPackets) > 0 {
		f.bgp.VIPPackets = f.bgpPackets[0]
		if len(f.bgpPackets) > 1 {
			f.bgpPackets = f.bgpPackets[1:]
		}
	}
	f.mu.Unlock()
	return answer(f, "BGP", &f.bgp)
}

func (f *fakeController) NodeDrain(ctx context.Context, resume bool) error {
	f.mu.Lock()
	f.bgp.Drained = !resume
	f.mu.Unlock()
	return f.record(fmt.Sprintf("NodeDrain resume=%t", resume))
}

func (f *fakeController) Conns(ctx context.Context, flt api.ConnFilter, emit func(api.Conn) error) error {
	conns, err := answer(f, "Conns "+flt.Query(), &f.conns)
	if err != nil {
		return err
	}
	for i, c := range conns {
		if flt.Limit > 0 && i == flt.Limit {
			break
		}
		if err := emit(c); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeController) FlushConns(ctx context.Context, flt api.ConnFilter) (int, error) {
	return answer(f, "FlushConns "+flt.Query(), &f.flushed)
}

func (f *fakeController) BackendConns(ctx context.Context, r api.VIPRef, addr netip.Addr, wait time.Duration) (api.BackendConns, error) {
	return answer(f, fmt.Sprintf("BackendConns %s %s wait=%v", r, addr, wait), &f.backendConns)
}

// testDaemon is the API server over a Unix socket, backed by a fake.
type testDaemon struct {
	socket string
	fake   *fakeController
}

// startDaemon serves a fake on a fresh socket.
func startDaemon(t *testing.T) *testDaemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "fcli") // short: socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return startDaemonAt(t, filepath.Join(dir, "api.sock"))
}

// startDaemonAt serves a fake on socket until the test ends.
func startDaemonAt(t *testing.T, socket string) *testDaemon {
	t.Helper()
	l, err := apiserver.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	f := newFake()
	srv := httptest.NewUnstartedServer(apiserver.New(f, slog.New(slog.DiscardHandler)))
	srv.Listener.Close() // its TCP one: the API is on the Unix socket
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return &testDaemon{socket: socket, fake: f}
}

// run runs the CLI against the daemon.
func (d *testDaemon) run(t *testing.T, args ...string) result {
	t.Helper()
	return runCLI(t, append([]string{"--socket", d.socket}, args...)...)
}
