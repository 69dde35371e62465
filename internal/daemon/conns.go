package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// connInterval is how often the daemon walks the connection table to
// correct the fast path's per-backend connection counts (datapath
// CorrectCounts: entries that expired in place, which no packet takes
// off). A walk of 1 M entries takes about 0.4 s of one core
// (BenchmarkWalkConns1M), so the interval stretches to ten times the last
// walk's duration: the correction costs at most a tenth of a core.
const connInterval = 2 * time.Second

// drainPoll is how often a drain wait counts again.
const drainPoll = 200 * time.Millisecond

// connCounter walks the connection table, correcting the fast path's
// counts, and keeps the per-backend connection counts of the last walk:
// active (established) and inactive (syn, fin, closed), IPVS's way. The
// counts shown (backend list, stats, metrics) are the fast path's
// (datapath BackendCounts); a drain wait counts by a walk of its own.
type connCounter struct {
	dp *datapath.Datapath

	walkMu sync.Mutex // one walk at a time; on-demand callers share it

	mu     sync.Mutex
	counts map[datapath.VIP]map[netip.Addr]datapath.ConnCount
	at     time.Time     // when the last walk started
	took   time.Duration // how long it took
}

func newConnCounter(dp *datapath.Datapath) *connCounter {
	return &connCounter{dp: dp}
}

// run corrects the counts at once (the maps may be adopted or migrated,
// their counts not yet matching the table), then every interval until ctx
// ends.
func (c *connCounter) run(ctx context.Context) {
	c.fresh(0) // an error leaves the counts as they are; the next walk retries
	for {
		c.mu.Lock()
		wait := max(connInterval, 10*c.took)
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		c.fresh(0) // an error leaves the last counts; the next walk retries
	}
}

// fresh returns counts from a walk that started at most maxAge ago,
// walking now if the last is older (callers that ask at once share one).
func (c *connCounter) fresh(maxAge time.Duration) (map[datapath.VIP]map[netip.Addr]datapath.ConnCount, error) {
	asked := time.Now()
	c.walkMu.Lock()
	defer c.walkMu.Unlock()
	c.mu.Lock()
	// A walk that started after the ask, or within maxAge of it, will do.
	if !c.at.IsZero() && (c.at.After(asked) || asked.Sub(c.at) <= maxAge) {
		defer c.mu.Unlock()
		return c.counts, nil
	}
	c.mu.Unlock()
	start := time.Now()
	counts, err := c.dp.CorrectCounts()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.counts, c.at, c.took = counts, start, time.Since(start)
	c.mu.Unlock()
	return counts, nil
}

// BackendConns implements metrics.ConnSource: the fast path's counts.
func (d *Daemon) BackendConns() map[datapath.VIP]map[netip.Addr]datapath.ConnCount {
	if d.dp == nil {
		return nil
	}
	return d.dp.BackendCounts()
}

// connFilter is an api.ConnFilter in the datapath's terms.
type connFilter struct {
	vip     *datapath.VIP
	backend netip.Addr
	state   func(datapath.ConnState) bool
}

// connStates are the names a filter's state takes.
var connStates = map[string]func(datapath.ConnState) bool{
	"active":      datapath.ConnState.Active,
	"inactive":    func(s datapath.ConnState) bool { return !s.Active() },
	"established": func(s datapath.ConnState) bool { return s == datapath.ConnEstablished },
	"syn":         func(s datapath.ConnState) bool { return s == datapath.ConnSYN },
	"fin":         func(s datapath.ConnState) bool { return s == datapath.ConnFIN },
	"closed":      func(s datapath.ConnState) bool { return s == datapath.ConnClosed },
}

func newConnFilter(f api.ConnFilter) (connFilter, error) {
	var out connFilter
	if f.VIP != nil {
		k, err := keyOf(*f.VIP)
		if err != nil {
			return out, err
		}
		out.vip = &k
	}
	out.backend = f.Backend
	if f.State != "" {
		out.state = connStates[f.State]
		if out.state == nil {
			return out, fmt.Errorf("%w: state %q: want one of %s", api.ErrInvalid, f.State, api.ConnStateNames)
		}
	}
	return out, nil
}

func (f connFilter) match(c datapath.Conn) bool {
	return (f.vip == nil || c.VIP == *f.vip) &&
		(!f.backend.IsValid() || c.Backend == f.backend) &&
		(f.state == nil || f.state(c.State))
}

// toAPIConn is a connection entry as the API shows it.
func toAPIConn(c datapath.Conn) api.Conn {
	return api.Conn{
		Protocol: c.Proto.String(), Client: c.Client, Dst: c.Dst,
		VIP:     api.VIPRef{Protocol: c.VIP.Proto.String(), Address: c.VIP.Addr, Port: c.VIP.Port},
		Backend: c.Backend, State: c.State.String(), Idle: c.Idle, ExpiresIn: c.ExpiresIn,
	}
}

// Conns walks the connection table and hands emit the entries the filter
// selects, as it finds them, up to f.Limit (0: all).
func (c *controller) Conns(ctx context.Context, f api.ConnFilter, emit func(api.Conn) error) error {
	flt, err := newConnFilter(f)
	if err != nil {
		return err
	}
	n := 0
	return c.d.dp.WalkConns(func(conn datapath.Conn) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !flt.match(conn) {
			return nil
		}
		if err := emit(toAPIConn(conn)); err != nil {
			return err
		}
		if n++; f.Limit > 0 && n >= f.Limit {
			return datapath.ErrStopWalk
		}
		return nil
	})
}

// FlushConns deletes the entries the filter selects; it must name a VIP
// or a backend, so that a bare flush cannot empty the table by mistake.
func (c *controller) FlushConns(ctx context.Context, f api.ConnFilter) (int, error) {
	if f.VIP == nil && !f.Backend.IsValid() {
		return 0, fmt.Errorf("%w: flush needs a vip or a backend", api.ErrInvalid)
	}
	flt, err := newConnFilter(f)
	if err != nil {
		return 0, err
	}
	n, err := c.d.dp.DeleteConns(flt.match)
	if err != nil {
		return n, err
	}
	c.d.log.Info("connection entries flushed", "vip", f.VIP, "backend", f.Backend, "state", f.State, "deleted", n)
	return n, nil
}

// BackendConns counts a backend's connections by a walk of now; with wait
// above zero it counts again every drainPoll until the active count is 0
// or wait has passed (Empty says which).
func (c *controller) BackendConns(ctx context.Context, ref api.VIPRef, addr netip.Addr, wait time.Duration) (api.BackendConns, error) {
	k, err := keyOf(ref)
	if err != nil {
		return api.BackendConns{}, err
	}
	v, err := c.d.rec.VIP(k)
	if err != nil {
		return api.BackendConns{}, classify(err)
	}
	found := false
	for _, b := range v.Backends {
		found = found || b.Address == addr
	}
	if !found {
		return api.BackendConns{}, fmt.Errorf("%w: vip %s has no backend %s", api.ErrNotFound, ref, addr)
	}
	start := time.Now()
	for {
		// A walk that started after this look: a count from before
		// would miss a flush or a close made just before the call.
		counts, err := c.d.conns.fresh(0)
		if err != nil {
			return api.BackendConns{}, err
		}
		n := counts[k][addr]
		out := api.BackendConns{Active: n.Active, Inactive: n.Inactive, Empty: n.Active == 0, Waited: time.Since(start)}
		if out.Empty || out.Waited >= wait {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-time.After(min(drainPoll, wait-out.Waited)):
		}
	}
}

// connCounts returns the fast path's per-backend counts: current to the
// packet, corrected by the last walk (datapath BackendCounts).
func (d *Daemon) connCounts() map[datapath.VIP]map[netip.Addr]datapath.ConnCount {
	return d.dp.BackendCounts()
}
