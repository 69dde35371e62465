package main

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

func TestStatus(t *testing.T) {
	d := startDaemon(t)
	d.run(t, "status").checkGolden(t, "status.golden")
	if got := d.fake.lastCall(); got != "Status" {
		t.Errorf("daemon call %q, want Status", got)
	}
	checkJSON(t, d.run(t, "-o", "json", "status"), newFake().status)
}

// TestStatusEmpty: what a status with nothing filled in reads as.
func TestStatusEmpty(t *testing.T) {
	var buf bytes.Buffer
	if err := printStatus(&buf, api.Status{}, testNow); err != nil {
		t.Fatal(err)
	}
	golden(t, "status_empty.golden", buf.String())
}

// TestStatusSync: a daemon running connection sync shows its peers, what
// it sent and received, and only the losses that happened.
func TestStatusSync(t *testing.T) {
	st := newFake().status
	st.Sync = &api.SyncStatus{
		Listen: "[::]:8473",
		Peers: []api.SyncPeer{
			{Address: netip.MustParseAddrPort("198.18.0.3:8473"), Up: true, LastHeard: testNow.Add(-700 * time.Millisecond)},
			{Address: netip.MustParseAddrPort("198.18.0.4:8473")},
		},
		SentEntries: 1200, SentDatagrams: 40, Resyncs: 1, ResyncEntries: 900,
		ReceivedEntries: 30, ReceivedDatagrams: 3, Installed: 27,
		Skipped:    map[string]uint64{"fresher": 2, "unknown": 1, "full": 0},
		Dropped:    map[string]uint64{"bad_mac": 0, "replay": 0},
		Overflow:   map[string]uint64{"ring": 5, "queue": 0},
		SendLag:    api.Lag{Count: 75, Sum: 75 * 12 * time.Millisecond, Max: 51 * time.Millisecond},
		ReceiveAge: api.Lag{Count: 3, Sum: 3 * time.Millisecond, Max: 2 * time.Millisecond},
	}
	var buf bytes.Buffer
	if err := printStatus(&buf, st, testNow); err != nil {
		t.Fatal(err)
	}
	golden(t, "status_sync.golden", buf.String())
}
