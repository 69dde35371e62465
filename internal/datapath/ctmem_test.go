package datapath

import (
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
// implementation this test counted lost writes (see the report in
// docs/connections.md, "Go's writes").
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

	const rounds = 5000 // Go's install-and-flush pairs
	const minPackets = 2000
	syn, rst := c.packet(x.Sport, "S").Build(), c.packet(x.Sport, "R").Build()
	var stop atomic.Bool
	var packets, lost int
	var lostDetail string
	done := make(chan error, 1)
	go func() {
		done <- onCPU(0, func() error {
			want := ConnState(0xff) // no packet yet
			for i := 0; !stop.Load() || packets < minPackets; i++ {
				ct, err := d.lookupConntrack(x)
				if err != nil {
					return err
				}
				if want != 0xff && (ct == nil || ConnState(ct.State) != want) {
					lost++
					if lostDetail == "" {
						lostDetail = fmt.Sprintf("after packet %d the entry is %+v, want state %s", packets, ct, want)
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
					return fmt.Errorf("packet %d: verdict %s, want XDP_TX", packets, verdictNames[verdict])
				}
				packets++
				want = next
			}
			return nil
		})
	}()
	for i := range rounds {
		res, err := d.InstallSynced([]SyncEntry{synced})
		if err != nil || res != (InstallResult{Installed: 1}) {
			stop.Store(true)
			<-done
			t.Fatalf("round %d: install %+v, %v; want 1 installed", i, res, err)
		}
		if err := d.deleteConntrack([]Flow{y}); err != nil {
			stop.Store(true)
			<-done
			t.Fatalf("round %d: flush: %v", i, err)
		}
	}
	stop.Store(true)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if lost > 0 {
		t.Fatalf("%d of %d packets' writes to flow X's way were undone by Go's %d installs and flushes of flow Y in the same bucket; first: %s",
			lost, packets, rounds, lostDetail)
	}
	if v, ok := entry(t, d, y); ok {
		t.Fatalf("flow Y's entry %+v is still there after its last flush", v)
	}
	t.Logf("%d packets of flow X beside %d installs and flushes of flow Y: no write lost", packets, rounds)
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
