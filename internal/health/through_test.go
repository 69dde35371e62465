package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// fakeSteer records the steering the checker asks for.
type fakeSteer struct {
	mu     sync.Mutex
	fail   error             // returned by Steer when set
	marks  map[uint32]Target // steered now
	steers int               // Steer calls
	gone   []uint32          // Unsteer calls, in order
}

func newFakeSteer() *fakeSteer { return &fakeSteer{marks: map[uint32]Target{}} }

func (f *fakeSteer) Steer(_ context.Context, mark uint32, t Target) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.steers++
	if f.fail != nil {
		return f.fail
	}
	for m, o := range f.marks {
		if m != mark && o.VIP == t.VIP && o.Backend == t.Backend {
			return errors.New("target steered under two marks")
		}
	}
	f.marks[mark] = t
	return nil
}

func (f *fakeSteer) Unsteer(mark uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.marks, mark)
	f.gone = append(f.gone, mark)
}

func (f *fakeSteer) snapshot() (map[uint32]Target, int, []uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := make(map[uint32]Target, len(f.marks))
	for k, v := range f.marks {
		m[k] = v
	}
	return m, f.steers, slices.Clone(f.gone)
}

// TestThroughDatapathProbesTheVIP: a through-datapath check connects to
// the VIP, not to the backend, after steering its mark to the target. The
// VIP 127.0.0.2 listens on the check port and the backend 127.0.0.3 does
// not: the through-datapath target comes up, a direct check of the same
// backend goes down.
func TestThroughDatapathProbesTheVIP(t *testing.T) {
	_, p := listenTCP(t, "127.0.0.2")
	vip := datapath.VIP{Addr: netip.MustParseAddr("127.0.0.2"), Port: p, Proto: datapath.TCP}
	direct := datapath.VIP{Addr: netip.MustParseAddr("127.0.0.4"), Port: p, Proto: datapath.TCP}
	backend := netip.MustParseAddr("127.0.0.3")
	steer := newFakeSteer()
	rec := &recorder{}
	c := New(Options{OnChange: rec.onChange, Steer: steer, MarkBase: 0x7000, MarkCount: 8})
	through := fast("tcp", p, 1, 1)
	through.ThroughDatapath = true
	c.Set([]Target{
		{VIP: vip, Backend: backend, Check: through, Mode: "dsr", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 3}},
		{VIP: direct, Backend: backend, Check: fast("tcp", p, 1, 1)},
	})
	start(t, c)
	waitFor(t, "both targets decided", func() bool { return len(rec.all()) == 2 })
	if tr := rec.of(vip, backend); len(tr) != 1 || tr[0].To != Up {
		t.Errorf("through-datapath target: got %+v, want one transition to up (the VIP answers)", tr)
	}
	if tr := rec.of(direct, backend); len(tr) != 1 || tr[0].To != Down {
		t.Errorf("direct target: got %+v, want one transition to down (the backend's own address refuses)", tr)
	}
	marks, steers, _ := steer.snapshot()
	if len(marks) != 1 || steers < 1 {
		t.Fatalf("steered %v with %d calls, want exactly the through-datapath target", marks, steers)
	}
	for m, tg := range marks {
		if m < 0x7000 || m >= 0x7008 {
			t.Errorf("mark %#x outside the range 0x7000-0x7007", m)
		}
		if tg.VIP != vip || tg.Backend != backend || tg.Mode != "dsr" || tg.MAC.String() != "02:00:00:00:00:03" {
			t.Errorf("steered target %+v, want the VIP's dsr backend with its MAC", tg)
		}
	}
}

// TestThroughDatapathSteering: the steering is set once while probes
// succeed, again after a failed probe, its error fails the probe, and a
// removed target's mark is unsteered and can be reused.
func TestThroughDatapathSteering(t *testing.T) {
	steer := newFakeSteer()
	rec := &recorder{}
	c := New(Options{OnChange: rec.onChange, Steer: steer, MarkBase: 0x7000, MarkCount: 2})
	_, p := listenTCP(t, "127.0.0.2")
	hc := fast("tcp", p, 1, 1)
	hc.ThroughDatapath = true
	vip := datapath.VIP{Addr: netip.MustParseAddr("127.0.0.2"), Port: p, Proto: datapath.TCP}
	vip2 := datapath.VIP{Addr: netip.MustParseAddr("127.0.0.2"), Port: p + 1, Proto: datapath.TCP}
	vip3 := datapath.VIP{Addr: netip.MustParseAddr("127.0.0.2"), Port: p + 2, Proto: datapath.TCP}
	hc2 := hc
	hc2.Port = p
	b := netip.MustParseAddr("127.0.0.3")
	c.Set([]Target{{VIP: vip, Backend: b, Check: hc}})
	stop := start(t, c)
	waitFor(t, "up", func() bool { s, _ := statusOf(c, vip, b); return s.State == Up && s.ConsecutiveOK >= 5 })
	if _, steers, _ := steer.snapshot(); steers != 1 {
		t.Errorf("Steer called %d times over 5 good probes, want 1", steers)
	}

	// Steering fails: the probe fails with its error, and every probe
	// tries again.
	steer.mu.Lock()
	steer.fail = errors.New("no route to the backend")
	steer.marks = map[uint32]Target{}
	steer.mu.Unlock()
	// The check changed, not the steering: same record, same mark.
	c.Set([]Target{{VIP: vip, Backend: b, Check: withThrough(fast("tcp", closedPort(t, "tcp"), 1, 1))}})
	waitFor(t, "down with the steering error", func() bool {
		s, _ := statusOf(c, vip, b)
		return s.State == Down && strings.Contains(s.LastError, "no route to the backend")
	})
	_, before, _ := steer.snapshot()
	waitFor(t, "more steering attempts", func() bool { _, n, _ := steer.snapshot(); return n >= before+3 })
	steer.mu.Lock()
	steer.fail = nil
	steer.mu.Unlock()

	// Two marks for three targets: the third is left out, logged.
	c.Set([]Target{{VIP: vip2, Backend: b, Check: hc2}, {VIP: vip3, Backend: b, Check: hc2}, {VIP: vip, Backend: b, Check: hc2}})
	if n := len(c.Statuses()); n != 2 {
		t.Errorf("%d targets with 2 marks, want 2", n)
	}
	c.Set(nil)
	waitFor(t, "every mark unsteered", func() bool {
		_, _, gone := steer.snapshot()
		slices.Sort(gone)
		gone = slices.Compact(gone)
		return len(gone) == 2
	})
	stop()
	c.mu.Lock()
	left := len(c.marks)
	c.mu.Unlock()
	if left != 0 {
		t.Errorf("%d marks still held after every target was removed", left)
	}
}

func withThrough(hc config.HealthCheck) config.HealthCheck {
	hc.ThroughDatapath = true
	return hc
}

// TestThroughDatapathNewRecord: turning through_datapath on or off, or
// changing the mode, replaces the target (state back to unknown); other
// check changes keep it.
func TestThroughDatapathNewRecord(t *testing.T) {
	steer := newFakeSteer()
	c := New(Options{Steer: steer})
	vip, b := vipN(1), netip.MustParseAddr("127.0.0.3")
	plain := fast("tcp", 80, 1, 1)
	c.Set([]Target{{VIP: vip, Backend: b, Check: plain, Mode: "dsr"}})
	rec := func() *target { c.mu.Lock(); defer c.mu.Unlock(); return c.targets[key{vip, b}] }
	first := rec()
	if first.mark != 0 {
		t.Fatalf("a direct check got mark %#x", first.mark)
	}
	c.Set([]Target{{VIP: vip, Backend: b, Check: withThrough(plain), Mode: "dsr"}})
	second := rec()
	if second == first || second.mark < DefaultMarkBase || second.mark >= DefaultMarkBase+DefaultMarkCount {
		t.Fatalf("through-datapath on: record %p (was %p), mark %#x; want a new record with a mark of the default range", second, first, second.mark)
	}
	mark2 := second.mark
	c.Set([]Target{{VIP: vip, Backend: b, Check: withThrough(fast("tcp", 81, 1, 1)), Mode: "dsr"}})
	if rec() != second {
		t.Fatal("a port change replaced the record")
	}
	c.Set([]Target{{VIP: vip, Backend: b, Check: withThrough(fast("tcp", 81, 1, 1)), Mode: "ipip"}})
	third := rec()
	if third == second {
		t.Fatal("a mode change kept the record")
	}
	if _, _, gone := steer.snapshot(); !slices.Contains(gone, mark2) {
		t.Errorf("the replaced record's mark %#x was not unsteered (gone: %v)", mark2, gone)
	}
}

// TestThroughDatapathWithoutSteerer: without a steering program the check
// fails with an error that says so, instead of probing something else.
func TestThroughDatapathWithoutSteerer(t *testing.T) {
	_, p := listenTCP(t, "127.0.0.2")
	c := New(Options{})
	vip := datapath.VIP{Addr: netip.MustParseAddr("127.0.0.2"), Port: p, Proto: datapath.TCP}
	c.Set([]Target{{VIP: vip, Backend: netip.MustParseAddr("127.0.0.2"), Check: withThrough(fast("tcp", p, 1, 1))}})
	start(t, c)
	waitFor(t, "down", func() bool {
		s, _ := statusOf(c, vip, netip.MustParseAddr("127.0.0.2"))
		return s.State == Down && strings.Contains(s.LastError, "no steering program")
	})
}

// sockMark returns the SO_MARK of a connection's socket.
func sockMark(t *testing.T, sc syscall.Conn) int {
	t.Helper()
	rc, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mark int
	var gerr error
	if err := rc.Control(func(fd uintptr) { mark, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return mark
}

// TestDialerMarks: the probe sockets of every kind carry the mark.
func TestDialerMarks(t *testing.T) {
	require.Root(t) // SO_MARK needs CAP_NET_ADMIN
	_, p := listenTCP(t, "127.0.0.1")
	for _, network := range []string{"tcp", "udp"} {
		conn, err := dialer(check(network, p), 0x46430007).Dial(network, netip.AddrPortFrom(loopback, p).String())
		if err != nil {
			t.Fatal(err)
		}
		if got := sockMark(t, conn.(syscall.Conn)); got != 0x46430007 {
			t.Errorf("%s probe socket mark %#x, want 0x46430007", network, got)
		}
		conn.Close()
	}
	conn, err := dialer(check("tcp", p), 0).Dial("tcp", netip.AddrPortFrom(loopback, p).String())
	if err != nil {
		t.Fatal(err)
	}
	if got := sockMark(t, conn.(syscall.Conn)); got != 0 {
		t.Errorf("unmarked probe socket has mark %#x", got)
	}
	conn.Close()

	// HTTP: the prober's transport dials with the mark too.
	var marks []int
	var mu sync.Mutex
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Start()
	defer srv.Close()
	hc := check("http", port(t, srv.Listener.Addr()))
	hc.ExpectStatus, hc.Path = []int{200}, "/"
	pr := newProber(hc, 0x46430009)
	tr := pr.client.Transport.(*http.Transport)
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err == nil {
			mu.Lock()
			marks = append(marks, sockMark(t, c.(syscall.Conn)))
			mu.Unlock()
		}
		return c, err
	}
	if err := probeHTTP(context.Background(), pr.client, hc, netip.AddrPortFrom(loopback, hc.Port)); err != nil {
		t.Fatal(err)
	}
	if len(marks) != 1 || marks[0] != 0x46430009 {
		t.Errorf("http probe socket marks %#x, want [0x46430009]", marks)
	}
}
