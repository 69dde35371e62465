package main

import (
	"fmt"
	"io"

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

// backendSummary is e.g. "3 (2 up, 1 draining)".
func backendSummary(bs []api.Backend) string {
	up, draining := 0, 0
	for _, b := range bs {
		if b.Health == "up" {
			up++
		}
		if b.Weight == 0 {
			draining++
		}
	}
	s := fmt.Sprintf("%d (%d up", len(bs), up)
	if draining > 0 {
		s += fmt.Sprintf(", %d draining", draining)
	}
	return s + ")"
}
