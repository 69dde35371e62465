package main

import (
	"fmt"
	"io"
	"sort"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/urfave/cli/v2"
)

// statsCommand shows the fast path's counters and rates. It only reads.
func statsCommand() *cli.Command {
	return &cli.Command{
		Name:   "stats",
		Usage:  "show packet and byte counts and rates per VIP and backend, and verdict counts",
		Action: stats,
	}
}

func stats(c *cli.Context) error {
	if _, err := positional(c, nil); err != nil {
		return err
	}
	ctx, cancel := apiContext(c)
	defer cancel()
	st, err := client(c).Stats(ctx)
	if err != nil {
		return err
	}
	if jsonOutput(c) {
		return printJSON(c.App.Writer, st)
	}
	printStats(c.App.Writer, st)
	return nil
}

func printStats(w io.Writer, st api.Stats) {
	if st.Interval > 0 {
		fmt.Fprintf(w, "rates over %s", humanDuration(st.Interval))
		if !st.Time.IsZero() {
			fmt.Fprintf(w, " to %s", st.Time.Local().Format("15:04:05"))
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w)
	}
	t := newTable(w)
	row(t, "VIP / BACKEND", "PACKETS", "BYTES", "PACKET RATE", "BYTE RATE")
	counter := func(name string, k api.Counter) {
		row(t, name, humanCount(float64(k.Packets)), humanBytes(float64(k.Bytes)), humanPPS(k.PacketRate), humanBPS(k.ByteRate))
	}
	for _, v := range st.VIPs {
		counter(v.VIP.String(), v.Counter)
		for _, b := range v.Backends {
			counter("  "+b.Address.String(), b.Counter)
		}
	}
	if len(st.VIPs) == 0 {
		row(t, "(no VIPs)")
	}
	t.Flush()

	if len(st.Verdicts) == 0 {
		return
	}
	names := make([]string, 0, len(st.Verdicts))
	for name := range st.Verdicts {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Fprintln(w)
	t = newTable(w)
	row(t, "VERDICT", "PACKETS")
	for _, name := range names {
		row(t, name, humanCount(float64(st.Verdicts[name])))
	}
	t.Flush()
}
