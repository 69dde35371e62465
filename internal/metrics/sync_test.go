package metrics

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// syncFake is a Source with connection sync.
type syncFake struct {
	*fakeSource
	st      api.SyncStatus
	enabled bool
	err     error
}

func (f *syncFake) SyncStats() (api.SyncStatus, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st, f.enabled, f.err
}

// TestSync: every fulcrum_sync_* series while sync runs, none without it;
// a failed read fails the scrape instead of exporting a part.
func TestSync(t *testing.T) {
	f := &syncFake{fakeSource: newFake(), enabled: true, st: api.SyncStatus{
		SentEntries: 300, ReceivedEntries: 20, Installed: 15,
		Skipped:  map[string]uint64{"fresher": 3, "unknown": 2, "full": 0, "expired": 0, "error": 0},
		Dropped:  map[string]uint64{"bad_mac": 4, "replay": 1},
		Overflow: map[string]uint64{"ring": 7, "queue": 0},
		Resyncs:  1,
		// The refresh's counters, distinct from every other value.
		Refreshes: 6, RefreshEntries: 42,
		SendLag: api.Lag{Count: 4, Sum: 200 * time.Millisecond, Max: 80 * time.Millisecond},
		Peers:   []api.SyncPeer{{Address: netip.MustParseAddrPort("198.18.0.3:8473"), Up: true}},
	}}
	m := New(f, "v1", "c")
	want := `
# HELP fulcrum_sync_installed_total Received connection entries installed into the connection table.
# TYPE fulcrum_sync_installed_total counter
fulcrum_sync_installed_total 15
# HELP fulcrum_sync_overflow_total Connection entries lost before they were sent, by where: ring (the fast path's event ring buffer was full) or queue (the send queue was full).
# TYPE fulcrum_sync_overflow_total counter
fulcrum_sync_overflow_total{where="queue"} 0
fulcrum_sync_overflow_total{where="ring"} 7
# HELP fulcrum_sync_dropped_total Received sync datagrams dropped, by reason (forged, replayed, truncated, ...); none of their entries is installed.
# TYPE fulcrum_sync_dropped_total counter
fulcrum_sync_dropped_total{reason="bad_mac"} 4
fulcrum_sync_dropped_total{reason="replay"} 1
# HELP fulcrum_sync_lag_seconds Sync lag: send is the time from an entry's event to its datagram's send (a sample of entries); receive the age of accepted datagrams at receipt (as far as the nodes' clocks agree).
# TYPE fulcrum_sync_lag_seconds summary
fulcrum_sync_lag_seconds_sum{direction="receive"} 0
fulcrum_sync_lag_seconds_count{direction="receive"} 0
fulcrum_sync_lag_seconds_sum{direction="send"} 0.2
fulcrum_sync_lag_seconds_count{direction="send"} 4
# HELP fulcrum_sync_lag_max_seconds The largest sync lag seen since the daemon started, by direction (see fulcrum_sync_lag_seconds).
# TYPE fulcrum_sync_lag_max_seconds gauge
fulcrum_sync_lag_max_seconds{direction="receive"} 0
fulcrum_sync_lag_max_seconds{direction="send"} 0.08
# HELP fulcrum_sync_sent_entries_total Connection entries sent to sync peers (once per peer), resyncs included.
# TYPE fulcrum_sync_sent_entries_total counter
fulcrum_sync_sent_entries_total 300
# HELP fulcrum_sync_received_entries_total Connection entries received in accepted (authenticated, fresh, well-formed) sync datagrams.
# TYPE fulcrum_sync_received_entries_total counter
fulcrum_sync_received_entries_total 20
# HELP fulcrum_sync_resyncs_total Full resyncs sent to a peer that (re)appeared.
# TYPE fulcrum_sync_resyncs_total counter
fulcrum_sync_resyncs_total 1
# HELP fulcrum_sync_refreshes_total Refresh walks made: the forwarding node's periodic re-send of the entries that saw a packet since the previous walk began.
# TYPE fulcrum_sync_refreshes_total counter
fulcrum_sync_refreshes_total 6
# HELP fulcrum_sync_refresh_entries_total Connection entries the refresh walks re-sent (once each, whatever the number of peers); also in fulcrum_sync_sent_entries_total, once per peer.
# TYPE fulcrum_sync_refresh_entries_total counter
fulcrum_sync_refresh_entries_total 42
# HELP fulcrum_sync_peer_up 1 while an authenticated datagram came from the sync peer within the peer timeout, 0 otherwise.
# TYPE fulcrum_sync_peer_up gauge
fulcrum_sync_peer_up{peer="198.18.0.3:8473"} 1
`
	names := []string{"fulcrum_sync_installed_total", "fulcrum_sync_overflow_total", "fulcrum_sync_dropped_total",
		"fulcrum_sync_lag_seconds", "fulcrum_sync_lag_max_seconds", "fulcrum_sync_sent_entries_total", "fulcrum_sync_peer_up",
		"fulcrum_sync_received_entries_total", "fulcrum_sync_resyncs_total", "fulcrum_sync_refreshes_total", "fulcrum_sync_refresh_entries_total"}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(m.Registry(), "fulcrum_sync_skipped_total"); err != nil || n != 5 {
		t.Errorf("skipped: %d series (%v), want one per reason, 5", n, err)
	}
	f.set(func(*fakeSource) { f.err = errors.New("boom") })
	if _, err := m.Registry().Gather(); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("a failed read: gather error %v, want it reported", err)
	}
	f.set(func(*fakeSource) { f.enabled, f.err = false, nil })
	if n, err := testutil.GatherAndCount(m.Registry(), names...); err != nil || n != 0 {
		t.Errorf("without sync: %d series (%v), want none", n, err)
	}
}
