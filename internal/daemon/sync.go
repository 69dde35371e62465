package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/connsync"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/vrrp"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// syncer runs connection sync (the sync section): the fast path's exported
// entries go to the peers, the peers' into the local table, and a peer that
// (re)appears gets the whole table. It is the Node's Source and Installer.
type syncer struct {
	d      *Daemon
	node   *connsync.Node
	events *datapath.ConnEvents
	listen netip.AddrPort

	mu  sync.Mutex // one Install at a time (the Node's contract), buf reused
	buf []datapath.SyncEntry

	skipped [numSkips]atomic.Uint64
}

// Why a received entry was not installed (api.SyncStatus.Skipped).
const (
	skipFresher = iota
	skipUnknown
	skipFull
	skipExpired
	skipError
	numSkips
)

var skipNames = [numSkips]string{"fresher", "unknown", "full", "expired", "error"}

// startSync starts connection sync: it loads the key (a missing or bad
// key file stops the start), binds the socket, opens the fast path's
// event ring and turns the export on. The goroutines end with ctx, and
// the export is turned off again as they do.
func (d *Daemon) startSync(ctx context.Context, wg *sync.WaitGroup, errc chan<- error, c *config.Sync) error {
	key, err := connsync.LoadKey(c.KeyFile)
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	s := &syncer{d: d, listen: c.Listen()}
	s.node, err = connsync.New(connsync.Config{
		Listen:        c.Listen(),
		Peers:         c.Peers,
		Key:           key,
		FlushInterval: c.Interval,
		// Busy flows' entries are re-sent before their peers' copies
		// expire (docs/connections.md, "Refresh").
		RefreshInterval: func() time.Duration { return refreshInterval(d.dp.RefreshTimeout()) },
		Active:          d.forwarding,
		Logger:          d.log,
	}, s, s)
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	if s.events, err = d.dp.ConnEvents(); err != nil {
		s.node.Close()
		return fmt.Errorf("sync: %w", err)
	}
	if err := d.dp.SetSync(true); err != nil {
		s.events.Close()
		s.node.Close()
		return fmt.Errorf("sync: turn the fast path's export on: %w", err)
	}
	d.sync = s
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := s.node.Run(ctx); err != nil && ctx.Err() == nil {
			errc <- fmt.Errorf("sync: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		s.export()
	}()
	go func() {
		defer wg.Done()
		<-ctx.Done()
		// Nobody reads the ring once the daemon is gone: the fast path
		// stops writing to it (a daemon that dies without this leaves it
		// on; the next start sets it as configured).
		if err := d.dp.SetSync(false); err != nil {
			d.log.Warn("sync: turn the fast path's export off", "err", err)
		}
		s.events.Close()
	}()
	d.log.Info("sync: running", "listen", s.node.Addr().String(), "peers", len(c.Peers))
	return nil
}

// export hands every entry the fast path exports to the Node, until the
// event reader is closed.
func (s *syncer) export() {
	for {
		e, err := s.events.Read()
		if errors.Is(err, os.ErrClosed) {
			return
		}
		if err != nil {
			s.d.log.Error("sync: read the fast path's events; sync sends no new entries", "err", err)
			return
		}
		s.node.Offer(toSync(e))
	}
}

// refreshInterval is how often the refresh walks the table, given the
// shortest timeout it must beat (datapath.RefreshTimeout): a third of it
// less a second. An entry seen since the previous walk began is sent with
// at least timeout-2×interval of life less the second the receiver takes
// off (fromSync), so its copy outlives the next walk by about an
// interval; the walks' own duration and pacing come out of that margin.
// Never under minRefresh: timeouts that short are not refreshed in time.
func refreshInterval(timeout time.Duration) time.Duration {
	if timeout <= 0 {
		return 0
	}
	return max((timeout-time.Second)/3, minRefresh)
}

// minRefresh bounds how often the refresh walks: a walk of a large table
// costs CPU (docs/connections.md, "Refresh").
const minRefresh = 500 * time.Millisecond

// forwarding reports whether this node forwards traffic now: without VRRP
// always; with it, while it is master. A standby's entries are copies of
// the master's, and re-sending them would only send them back.
func (d *Daemon) forwarding() bool {
	return d.vr == nil || d.vr.State() == vrrp.Master
}

// Snapshot implements connsync.Source: the live entries of the table.
func (s *syncer) Snapshot(yield func(connsync.Entry) bool) {
	for e, err := range s.d.dp.SyncEntries() {
		if err != nil {
			s.d.log.Error("sync: list the connection table for a resync", "err", err)
			return
		}
		if !yield(toSync(e)) {
			return
		}
	}
}

// Install implements connsync.Installer.
func (s *syncer) Install(entries []connsync.Entry) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = s.buf[:0]
	for _, e := range entries {
		s.buf = append(s.buf, fromSync(e))
	}
	res, err := s.d.dp.InstallSynced(s.buf)
	for i, n := range [numSkips]int{res.Fresher, res.Unknown, res.Full, res.Expired} {
		s.skipped[i].Add(uint64(n))
	}
	if err != nil {
		// The rest of the batch is lost with it: counted, and logged
		// (a failing map write is not a peer's doing).
		s.skipped[skipError].Add(uint64(len(entries) - res.Installed - res.Fresher - res.Unknown - res.Full - res.Expired))
		s.d.log.Error("sync: install received entries", "err", err)
	}
	return res.Installed
}

// SyncStats implements metrics.SyncSource.
func (d *Daemon) SyncStats() (api.SyncStatus, bool, error) {
	if d.sync == nil {
		return api.SyncStatus{}, false, nil
	}
	st, err := d.sync.status()
	return st, true, err
}

// status is what `fulcrum status`, the API and the metrics show.
func (s *syncer) status() (api.SyncStatus, error) {
	n := s.node.Stats()
	st := api.SyncStatus{
		Listen:            s.node.Addr().String(),
		SentEntries:       n.SentEntries,
		SentDatagrams:     n.SentDatagrams,
		ReceivedEntries:   n.ReceivedEntries,
		ReceivedDatagrams: n.ReceivedDatagrams,
		Installed:         n.Installed,
		Skipped:           make(map[string]uint64, numSkips),
		Dropped:           n.Dropped,
		Overflow:          map[string]uint64{"queue": n.QueueOverflow},
		Resyncs:           n.Resyncs,
		ResyncEntries:     n.ResyncEntries,
		Refreshes:         n.Refreshes,
		RefreshEntries:    n.RefreshEntries,
		SendLag:           n.SendLag,
		ReceiveAge:        n.ReceiveAge,
	}
	for i, name := range skipNames {
		st.Skipped[name] = s.skipped[i].Load()
	}
	for _, p := range n.Peers {
		st.Peers = append(st.Peers, api.SyncPeer{Address: p.Address, Up: p.Up, LastHeard: p.LastHeard})
	}
	c, err := s.d.dp.Counters()
	if err != nil {
		return st, err
	}
	st.Overflow["ring"] = c.Stat(datapath.StatCtExportFull)
	return st, nil
}

// toSync and fromSync convert between the table's entries and the
// protocol's; states by name, as connsync asks.
func toSync(e datapath.SyncEntry) connsync.Entry {
	return connsync.Entry{
		Client:   netip.AddrPortFrom(e.Flow.Src, e.Flow.Sport),
		VIP:      netip.AddrPortFrom(e.Flow.Dst, e.Flow.Dport),
		Proto:    uint8(e.Flow.Proto),
		Backend:  e.Backend,
		State:    syncStates[e.State&3],
		Lifetime: e.Lifetime,
		Idle:     e.Idle,
	}
}

func fromSync(e connsync.Entry) datapath.SyncEntry {
	f := datapath.Flow{Src: e.Client.Addr(), Dst: e.VIP.Addr(), Sport: e.Client.Port(), Dport: e.VIP.Port(), Proto: datapath.Proto(e.Proto)}
	var s datapath.ConnState
	for ds, cs := range syncStates {
		if cs == e.State {
			s = datapath.ConnState(ds)
		}
	}
	return datapath.SyncEntry{
		Flow:    f,
		VIP:     datapath.VIP{Addr: f.Dst, Port: f.Dport, Proto: f.Proto},
		Backend: e.Backend,
		State:   s,
		// A copy never claims more life than its original has left:
		// the wire rounds lifetimes up to whole seconds, so a second
		// comes off. Otherwise an entry sent back and forth (two nodes
		// that both forward, both refreshing) would gain up to a second
		// a trip and could outlive its flow.
		Lifetime: max(e.Lifetime-time.Second, 0),
	}
}

// syncStates maps the table's states to the protocol's, by name.
var syncStates = [4]connsync.State{
	datapath.ConnEstablished: connsync.StateEstablished,
	datapath.ConnSYN:         connsync.StateSYN,
	datapath.ConnFIN:         connsync.StateFIN,
	datapath.ConnClosed:      connsync.StateClosed,
}
