package datapath

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// TestGoWritesKeepPacketWrites: Go's installs and flushes in a bucket do
// not undo what packets write into another way of it meanwhile. The table
// is one bucket, so every flow shares it. A pinned thread runs flow X's
// packets through the balancer (BPF_PROG_RUN), alternating a SYN (a new
// entry written in X's way, state syn) and an RST (its state closed),
// and before each packet checks that X's entry is in the state its last
// packet left; meanwhile Go installs flow Y from sync and flushes it,
// again and again. A write of the whole bucket (read, then written back)
// that straddles one of X's packets puts X's older entry back: with that
// implementation this test counted lost writes (docs/connections.md,
// "Go's writes").
func TestGoWritesKeepPacketWrites(t *testing.T) {
	require.BPF(t)
	d, err := Load(Options{ConntrackEntries: ctWays})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	provision(t, d)
	c := ctCases()[0] // v4 tcp
	x, y := c.flow(50000), c.flow(50001)
	if px, py := placeOf(x, 1), placeOf(y, 1); px.bucket != 0 || py.bucket != 0 {
		t.Fatalf("a one-bucket table puts the flows in buckets %d and %d", px.bucket, py.bucket)
	}
	synced := SyncEntry{Flow: y, VIP: c.vip, Backend: backends4[1].Addr, State: ConnEstablished, Lifetime: time.Minute}

	const minRounds = 5000  // Go's install-and-flush pairs
	const minPackets = 5000 // packets run while Go writes
	syn, rst := c.packet(x.Sport, "S").Build(), c.packet(x.Sport, "R").Build()
	var stop atomic.Bool
	var packets atomic.Int64
	var lost int
	var lostDetail string
	done := make(chan error, 1)
	go func() {
		done <- onCPU(0, func() error {
			want := ConnState(0xff) // no packet yet
			for i := 0; !stop.Load(); i++ {
				ct, err := d.lookupConntrack(x)
				if err != nil {
					return err
				}
				if want != 0xff && (ct == nil || ConnState(ct.State) != want) {
					lost++
					if lostDetail == "" {
						lostDetail = fmt.Sprintf("after packet %d the entry is %+v, want state %s", packets.Load(), ct, want)
					}
				}
				frame, next := syn, ConnSYN
				if i%2 == 1 {
					frame, next = rst, ConnClosed
				}
				opts := ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+512)}
				verdict, err := d.Program().Run(&opts)
				if err != nil {
					return err
				}
				if verdict != xdpTX {
					return fmt.Errorf("packet %d: verdict %s, want XDP_TX", packets.Load(), verdictNames[verdict])
				}
				packets.Add(1)
				want = next
			}
			return nil
		})
	}()
	// Go's writes start after the packets' and end before them.
	require.Eventually(t, 10*time.Second, func() error {
		if packets.Load() == 0 {
			return fmt.Errorf("no packet run yet")
		}
		return nil
	})
	// Go writes on the other CPU, so that the two run at once: at least
	// rounds pairs, and until minPackets packets ran meanwhile.
	var rounds int
	var during int64
	werr := onCPU(1, func() error {
		first := packets.Load()
		deadline := time.Now().Add(30 * time.Second)
		for ; rounds < minRounds || during < minPackets; rounds++ {
			if time.Now().After(deadline) {
				return fmt.Errorf("%d packets ran during Go's %d installs and flushes in 30s, want at least %d", during, rounds, minPackets)
			}
			res, err := d.InstallSynced([]SyncEntry{synced})
			if err != nil || res != (InstallResult{Installed: 1}) {
				return fmt.Errorf("round %d: install %+v, %v; want 1 installed", rounds, res, err)
			}
			if err := d.deleteConntrack([]Flow{y}); err != nil {
				return fmt.Errorf("round %d: flush: %v", rounds, err)
			}
			during = packets.Load() - first
		}
		return nil
	})
	stop.Store(true)
	if err := errors.Join(werr, <-done); err != nil {
		t.Fatal(err)
	}
	if lost > 0 {
		t.Fatalf("%d of %d packets' writes to flow X's way were undone by Go's %d installs and flushes of flow Y in the same bucket; first: %s",
			lost, packets.Load(), rounds, lostDetail)
	}
	if v, ok := entry(t, d, y); ok {
		t.Fatalf("flow Y's entry %+v is still there after its last flush", v)
	}
	t.Logf("%d packets of flow X (%d during Go's writes) beside %d installs and flushes of flow Y: no write lost", packets.Load(), during, rounds)
}

// TestLayoutReported: Layout is the layout the loaded maps are of, as the
// pin marker records it (the test layout a test build sets included).
func TestLayoutReported(t *testing.T) {
	d := newTestDatapath(t)
	if got := d.Layout().Version; got != LayoutVersion {
		t.Fatalf("Layout %d, want %d", got, LayoutVersion)
	}
	t.Setenv(TestLayoutEnv, "9")
	if got := d.Layout().Version; got != 9 {
		t.Fatalf("Layout %d with %s=9, want 9", got, TestLayoutEnv)
	}
}
