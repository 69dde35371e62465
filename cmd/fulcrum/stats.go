package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/urfave/cli/v2"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// statsCommand shows the fast path's counters and rates. It only reads.
func statsCommand() *cli.Command {
	return &cli.Command{
		Name:  "stats",
		Usage: "show packet and byte counts and rates per VIP and backend, and verdict counts",
		Action: func(c *cli.Context) error {
			if _, err := positional(c, nil); err != nil {
				return err
			}
			return query(c, func(ctx context.Context, d *api.Client) (api.Stats, error) { return d.Stats(ctx) }, printStats)
		},
	}
}

func printStats(w io.Writer, st api.Stats) error {
	if st.Interval > 0 {
		fmt.Fprintf(w, "rates over %s", humanDuration(st.Interval))
		if !st.Time.IsZero() {
			fmt.Fprintf(w, " to %s", st.Time.Local().Format("15:04:05"))
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w)
	}
	t := newTable(w)
	row(t, "VIP / BACKEND", "PACKETS", "BYTES", "PACKET RATE", "BYTE RATE", "ACTIVE", "INACTIVE")
	counter := func(name string, k api.Counter, active, inactive uint64) {
		row(t, name, humanCount(float64(k.Packets)), humanBytes(float64(k.Bytes)), humanPPS(k.PacketRate), humanBPS(k.ByteRate), active, inactive)
	}
	for _, v := range st.VIPs {
		// A VIP's connections are its backends'.
		var active, inactive uint64
		for _, b := range v.Backends {
			active, inactive = active+b.Active, inactive+b.Inactive
		}
		counter(v.VIP.String(), v.Counter, active, inactive)
		for _, b := range v.Backends {
			counter("  "+b.Address.String(), b.Counter, b.Active, b.Inactive)
		}
	}
	if len(st.VIPs) == 0 {
		row(t, "(no VIPs)")
	}
	if err := t.Flush(); err != nil || len(st.Verdicts) == 0 {
		return err
	}

	fmt.Fprintln(w)
	t = newTable(w)
	row(t, "VERDICT", "PACKETS")
	for _, name := range slices.Sorted(maps.Keys(st.Verdicts)) {
		row(t, name, humanCount(float64(st.Verdicts[name])))
	}
	return t.Flush()
}
