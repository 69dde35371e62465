package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/urfave/cli/v2"
)

// vipListCommand lists the VIPs. It only reads.
func vipListCommand() *cli.Command {
	return &cli.Command{
		Name:    "list",
		Aliases: []string{"ls"},
		Usage:   "list the VIPs with their settings",
		Action:  vipList,
	}
}

func vipList(c *cli.Context) error {
	if _, err := positional(c, nil); err != nil {
		return err
	}
	ctx, cancel := apiContext(c)
	defer cancel()
	vips, err := client(c).ListVIPs(ctx)
	if err != nil {
		return err
	}
	if jsonOutput(c) {
		if vips == nil {
			vips = []api.VIP{}
		}
		return printJSON(c.App.Writer, vips)
	}
	printVIPs(c.App.Writer, vips)
	return nil
}

func printVIPs(w io.Writer, vips []api.VIP) {
	if len(vips) == 0 {
		fmt.Fprintln(w, "no VIPs (add one with 'fulcrum vip add' or 'fulcrum apply -f FILE')")
		return
	}
	t := newTable(w)
	row(t, "VIP", "NAME", "MODE", "SCHEDULER", "RING", "CONNTRACK", "FRAGMENTS", "BACKENDS")
	for _, v := range vips {
		row(t, v.VIPRef, orDash(v.Name), orDash(v.Mode), orDefault(v.Scheduler, "maglev"),
			ringSize(v.RingSize), conntrack(v.Conntrack), orDefault(v.Fragments, "drop"), backendSummary(v.Backends))
	}
	t.Flush()
}

// orDefault shows the default an empty optional field stands for.
func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func ringSize(n uint32) string {
	if n == 0 {
		return "65537"
	}
	return fmt.Sprint(n)
}

func conntrack(on *bool) string {
	if on != nil && !*on {
		return "off"
	}
	return "on"
}

// backendSummary is e.g. "3 (2 up, 1 down, 1 draining)"; states no
// backend is in are left out, so unchecked backends read "3".
func backendSummary(bs []api.Backend) string {
	counts := map[string]int{}
	for _, b := range bs {
		counts[b.Health]++
		if b.Weight == 0 {
			counts["draining"]++
		}
	}
	var parts []string
	for _, state := range []string{"up", "down", "draining"} {
		if counts[state] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[state], state))
		}
	}
	if len(parts) == 0 {
		return fmt.Sprint(len(bs))
	}
	return fmt.Sprintf("%d (%s)", len(bs), strings.Join(parts, ", "))
}
