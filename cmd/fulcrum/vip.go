package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
)

// vipCommand groups the VIP commands: list reads; add and remove change
// state.
func vipCommand() *cli.Command {
	return &cli.Command{
		Name:  "vip",
		Usage: "list, add and remove VIPs",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add a VIP, with its backends",
				ArgsUsage: "PROTO/ADDRESS:PORT",
				Description: "Port 0 means every port. Example:\n\n" +
					"  fulcrum vip add tcp/203.0.113.10:80 --mode dsr \\\n" +
					"      --backend 198.18.0.11 --backend 198.18.0.12,weight=2,mac=02:00:5e:00:53:12",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "mode", Value: config.DefaultMode.String(), Usage: "forwarding `MODE`: " + strings.Join(config.ModeNames(), " or ")},
					&cli.StringFlag{Name: "name", Usage: "a `NAME` for people (shown in listings)"},
					&cli.StringFlag{Name: "scheduler", Usage: "`SCHEDULER` for new flows: " + strings.Join(config.SchedulerNames(), ", ") + " (docs/schedulers.md)", DefaultText: config.DefaultScheduler.String()},
					&cli.StringFlag{Name: "ring-size", Usage: "Maglev ring `SIZE`: a prime, or auto (the daemon chooses it from the backends and weights; docs/datapath.md)", DefaultText: fmt.Sprint(maglev.DefaultSize)},
					&cli.UintFlag{Name: "ring-size-max", Usage: "with --ring-size auto, the largest size `N` chosen, a prime", DefaultText: fmt.Sprint(maglev.DefaultSize)},
					&cli.BoolFlag{Name: "no-conntrack", Usage: "do not track connections (stateless services)"},
					&cli.StringFlag{Name: "fragments", Usage: "`POLICY` for IP fragments and malformed packets to the VIP's address: " + strings.Join(config.FragmentPolicyNames(), " or "), DefaultText: config.DefaultFragments.String()},
					&cli.StringSliceFlag{Name: "source-range", Usage: "a client `PREFIX` the VIP serves, e.g. 198.51.100.0/24; repeat for more (default: every client)"},
					&cli.StringSliceFlag{Name: "backend", Usage: "a backend `SPEC`, ADDRESS[,weight=N][,mac=MAC] (weight default 1); repeat for more"},
				},
				Action: changeAction(vipAdd),
			},
			{
				Name:      "remove",
				Aliases:   []string{"rm"},
				Usage:     "remove a VIP: its traffic is no longer balanced (the host sees it again)",
				ArgsUsage: "PROTO/ADDRESS:PORT",
				Action:    changeAction(vipRemove),
			},
			{
				Name:    "list",
				Aliases: []string{"ls"},
				Usage:   "list the VIPs with their settings",
				Action:  vipList,
			},
		},
	}
}

func vipAdd(c *cli.Context) (change, error) {
	ref, err := vipArgs(c)
	if err != nil {
		return change{}, err
	}
	v := api.VIP{VIPRef: ref, Name: c.String("name"), Backends: []api.Backend{}}
	if v.Mode, err = oneOf(c, "mode", config.ModeNames()); err != nil {
		return change{}, err
	}
	if v.Mode == "" {
		return change{}, usagef("%s: --mode is empty: want %s", commandPath(c), strings.Join(config.ModeNames(), " or "))
	}
	if v.Scheduler, err = oneOf(c, "scheduler", config.SchedulerNames()); err != nil {
		return change{}, err
	}
	if v.Fragments, err = oneOf(c, "fragments", config.FragmentPolicyNames()); err != nil {
		return change{}, err
	}
	if err := ringFlags(c, &v); err != nil {
		return change{}, err
	}
	if c.Bool("no-conntrack") {
		off := false
		v.Conntrack = &off
	}
	v.SourceRanges = c.StringSlice("source-range") // checked by the daemon, as a file's
	seen := map[string]bool{}
	for _, spec := range c.StringSlice("backend") {
		b, err := parseBackendSpec(spec)
		if err != nil {
			return change{}, usagef("%s: %v", commandPath(c), err)
		}
		if seen[b.Address.String()] {
			return change{}, usagef("%s: --backend %s is given twice", commandPath(c), b.Address)
		}
		seen[b.Address.String()] = true
		v.Backends = append(v.Backends, b)
	}
	return change{
		send:    func(ctx context.Context, d *api.Client) error { return d.AddVIP(ctx, v) },
		confirm: fmt.Sprintf("added vip %s (%s, %s)", ref, v.Mode, plural(len(v.Backends), "backend")),
		unsaved: true,
	}, nil
}

// ringFlags sets v's ring size from --ring-size and --ring-size-max; the
// daemon checks the values (a prime, in range), as a file's.
func ringFlags(c *cli.Context, v *api.VIP) error {
	switch s := c.String("ring-size"); {
	case s == "auto":
		v.RingSizeAuto = true
	case s != "":
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return usagef("%s: --ring-size %q: want auto or a prime below 2^32, e.g. 65537", commandPath(c), s)
		}
		v.RingSize = uint32(n)
	}
	if c.IsSet("ring-size-max") {
		if !v.RingSizeAuto {
			return usagef("%s: --ring-size-max applies only with --ring-size auto", commandPath(c))
		}
		n := c.Uint("ring-size-max")
		if n > 1<<32-1 {
			return usagef("%s: --ring-size-max %d: want a prime below 2^32, e.g. 65537", commandPath(c), n)
		}
		v.RingSizeMax = uint32(n)
	}
	return nil
}

func vipRemove(c *cli.Context) (change, error) {
	ref, err := vipArgs(c)
	if err != nil {
		return change{}, err
	}
	return change{
		send:    func(ctx context.Context, d *api.Client) error { return d.RemoveVIP(ctx, ref) },
		confirm: fmt.Sprintf("removed vip %s", ref),
		unsaved: true,
	}, nil
}

func vipList(c *cli.Context) error {
	if _, err := positional(c, nil); err != nil {
		return err
	}
	return query(c, listVIPs, printVIPs)
}

// listVIPs asks for the VIPs; no VIPs is an empty list, which prints as
// [] rather than null.
func listVIPs(ctx context.Context, d *api.Client) ([]api.VIP, error) {
	vips, err := d.ListVIPs(ctx)
	if vips == nil {
		vips = []api.VIP{}
	}
	return vips, err
}

func printVIPs(w io.Writer, vips []api.VIP) error {
	if len(vips) == 0 {
		_, err := fmt.Fprintln(w, "no VIPs (add one with 'fulcrum vip add' or 'fulcrum apply -f FILE')")
		return err
	}
	t := newTable(w)
	row(t, "VIP", "NAME", "MODE", "SCHEDULER", "RING", "CONNTRACK", "FRAGMENTS", "BACKENDS", "SOURCES", "POOLS")
	for _, v := range vips {
		row(t, v.VIPRef, orDash(v.Name), orDash(v.Mode), orDefault(v.Scheduler, config.DefaultScheduler.String()),
			ringSize(v), conntrack(v.Conntrack), orDefault(v.Fragments, config.DefaultFragments.String()), backendSummary(v.Backends),
			orDefault(strings.Join(v.SourceRanges, ","), "all"), poolSummary(v.Pools))
	}
	return t.Flush()
}

// poolSummary is a VIP's pools in a listing: each one's name and prefix
// count, e.g. "eu:1204,us:87"; "-" for none.
func poolSummary(pools []api.Pool) string {
	if len(pools) == 0 {
		return "-"
	}
	out := make([]string, len(pools))
	for i, p := range pools {
		out[i] = fmt.Sprintf("%s:%d", p.Name, p.PrefixCount)
	}
	return strings.Join(out, ",")
}

// orDefault shows the default an empty optional field stands for.
func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// ringSize is the ring size, followed by "auto" when the daemon chose
// it ("auto" alone before it did).
func ringSize(v api.VIP) string {
	n := v.RingSize
	switch {
	case v.RingSizeAuto && n == 0:
		return "auto"
	case v.RingSizeAuto:
		return fmt.Sprintf("%d auto", n)
	case n == 0:
		n = maglev.DefaultSize
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
