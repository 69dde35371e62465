package reconcile

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// bulkConfig renders a config file of vips VIPs × backends backends, the
// shape of the control-plane figures (internal/perf).
func bulkConfig(vips, backends int) string {
	var sb strings.Builder
	sb.WriteString("instance: bench\ninterfaces:\n  - name: eth0\nvips:\n")
	for v := range vips {
		fmt.Fprintf(&sb, "  - address: %s\n    port: %d\n    protocol: tcp\n    backends:",
			netip.AddrFrom4([4]byte{203, 0, 113, byte(1 + v%250)}), 1000+v/250)
		if v > 0 {
			sb.WriteString(" *backends\n")
			continue
		}
		sb.WriteString(" &backends\n")
		for j := range backends {
			a := netip.AddrFrom4([4]byte{198, 18, byte(8 + j/250), byte(1 + j%250)})
			fmt.Fprintf(&sb, "      - {address: %s, mac: \"%s\"}\n", a, net.HardwareAddr{0x02, 0xfc, 0x08, 0, byte(j >> 8), byte(j)})
		}
	}
	return sb.String()
}

// BenchmarkApplyBulk parses a config of 1000 VIPs × 100 backends and
// applies it whole to a fresh datapath, timing both: what the daemon's
// start-up and the API's apply spend beyond process start and HTTP.
func BenchmarkApplyBulk(b *testing.B) {
	require.BPF(b)
	data := []byte(bulkConfig(1000, 100))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var parse, apply time.Duration
	for b.Loop() {
		dp, err := datapath.Load(datapath.Options{ConntrackEntries: 8192})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		cfg, err := config.Parse(data)
		if err != nil {
			b.Fatal(err)
		}
		parse += time.Since(start)
		start = time.Now()
		res, err := New(dp, nil, Options{Log: log}).Apply(context.Background(), StateOf(cfg))
		if err != nil {
			b.Fatal(err)
		}
		apply += time.Since(start)
		if len(res.Added) != 1000 {
			b.Fatalf("added %d VIPs, want 1000", len(res.Added))
		}
		b.StopTimer()
		dp.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(parse.Milliseconds())/float64(b.N), "parse-ms/op")
	b.ReportMetric(float64(apply.Milliseconds())/float64(b.N), "apply-ms/op")
}

// BenchmarkEditAtScale adds a backend to one VIP of 1000 VIPs × 100
// backends and removes it again, timing each edit until SetVIPs returned
// (so including the RCU wait of the ring swap, which the fast path does
// not wait for).
func BenchmarkEditAtScale(b *testing.B) {
	for _, vips := range []int{1, 1000} {
		b.Run(fmt.Sprintf("vips=%d", vips), func(b *testing.B) { benchmarkEdit(b, vips) })
	}
}

func benchmarkEdit(b *testing.B, vips int) {
	require.BPF(b)
	cfg, err := config.Parse([]byte(bulkConfig(vips, 100)))
	if err != nil {
		b.Fatal(err)
	}
	dp, err := datapath.Load(datapath.Options{ConntrackEntries: 8192})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dp.Close() })
	r := New(dp, nil, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx := context.Background()
	if _, err := r.Apply(ctx, StateOf(cfg)); err != nil {
		b.Fatal(err)
	}
	key := Key(cfg.VIPs[0])
	extra := config.Backend{Address: netip.MustParseAddr("198.18.15.1"), Weight: 1, MAC: net.HardwareAddr{2, 0xfc, 0x0f, 0, 0, 1}}
	for b.Loop() {
		if err := r.AddBackend(ctx, key, extra); err != nil {
			b.Fatal(err)
		}
		if err := r.RemoveBackend(ctx, key, extra.Address); err != nil {
			b.Fatal(err)
		}
	}
}
