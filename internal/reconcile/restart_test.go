package reconcile

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// TestRestartRewritesNothing: a daemon restarted over its pins, told the
// state it wrote before, reports every VIP unchanged and writes none, ipip
// VIPs (whose backends have no MAC) included.
func TestRestartRewritesNothing(t *testing.T) {
	require.BPF(t)
	root := t.TempDir()
	if err := datapath.EnsureBPFFS(root); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })
	opts := datapath.Options{ConntrackEntries: 8192, PinDir: datapath.PinDir(root, "test")}
	encap := datapath.EncapConfig{SourceV4: netip.MustParsePrefix("198.18.1.0/24")}
	// A MAC on an ipip backend is allowed and unused.
	ipip := vip("203.0.113.80", 80, be("198.18.2.11", 1, ""), be("198.18.2.12", 2, "02:00:00:00:02:12"))
	ipip.Mode = "ipip"
	vips := []config.VIP{ipip, vip("203.0.113.10", 80, b1, b2)}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()

	for run := range 2 {
		dp, err := datapath.Load(opts)
		if err != nil {
			t.Fatal(err)
		}
		res, err := New(dp, nil, Options{Log: log}).Apply(ctx, State{VIPs: vips, Encap: encap})
		dp.Close()
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if run == 0 && len(res.Added) != 2 {
			t.Fatalf("first run: added %v, want both vips", res.Added)
		}
		if run == 1 && (res.Unchanged != 2 || len(res.Added)+len(res.Changed)+len(res.Removed) != 0) {
			t.Fatalf("after the restart: added %v, changed %v, removed %v, unchanged %d; want 2 unchanged and nothing written",
				res.Added, res.Changed, res.Removed, res.Unchanged)
		}
	}
}
