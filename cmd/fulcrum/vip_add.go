package main

import (
	"fmt"
	"strings"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
	"github.com/urfave/cli/v2"
)

// vipAddCommand adds a VIP. It changes state.
func vipAddCommand() *cli.Command {
	return &cli.Command{
		Name:      "add",
		Usage:     "add a VIP, with its backends",
		ArgsUsage: "PROTO/ADDRESS:PORT",
		Description: "Port 0 means every port. Example:\n\n" +
			"  fulcrum vip add tcp/203.0.113.10:80 --mode dsr \\\n" +
			"      --backend 198.18.0.11 --backend 198.18.0.12,weight=2,mac=02:00:5e:00:53:12",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "mode", Value: config.DefaultMode.String(), Usage: "forwarding `MODE`: " + strings.Join(config.ModeNames(), " or ")},
			&cli.StringFlag{Name: "name", Usage: "a `NAME` for people (shown in listings)"},
			&cli.StringFlag{Name: "scheduler", Usage: "`SCHEDULER` for new flows: " + strings.Join(config.SchedulerNames(), " or "), DefaultText: config.DefaultScheduler.String()},
			&cli.UintFlag{Name: "ring-size", Usage: "Maglev ring size `N`, a prime", DefaultText: fmt.Sprint(maglev.DefaultSize)},
			&cli.BoolFlag{Name: "no-conntrack", Usage: "do not track connections (stateless services)"},
			&cli.StringFlag{Name: "fragments", Usage: "`POLICY` for non-first IPv4 fragments: " + strings.Join(config.FragmentPolicyNames(), " or "), DefaultText: config.DefaultFragments.String()},
			&cli.StringSliceFlag{Name: "backend", Usage: "a backend `SPEC`, ADDRESS[,weight=N][,mac=MAC] (weight default 1); repeat for more"},
		},
		Action: vipAdd,
	}
}

func vipAdd(c *cli.Context) error {
	args, err := positional(c, []arg{vipArg})
	if err != nil {
		return err
	}
	ref, err := parseVIP(c, args[0])
	if err != nil {
		return err
	}
	v := api.VIP{VIPRef: ref, Name: c.String("name"), Backends: []api.Backend{}}
	if v.Mode, err = oneOf(c, "mode", config.ModeNames()); err != nil {
		return err
	}
	if v.Mode == "" {
		return usagef("%s: --mode is empty: want %s", commandPath(c), strings.Join(config.ModeNames(), " or "))
	}
	if v.Scheduler, err = oneOf(c, "scheduler", config.SchedulerNames()); err != nil {
		return err
	}
	if v.Fragments, err = oneOf(c, "fragments", config.FragmentPolicyNames()); err != nil {
		return err
	}
	ring := c.Uint("ring-size")
	if ring > 1<<32-1 {
		return usagef("%s: --ring-size %d: want a prime below 2^32, e.g. 65537", commandPath(c), ring)
	}
	v.RingSize = uint32(ring)
	if c.Bool("no-conntrack") {
		off := false
		v.Conntrack = &off
	}
	seen := map[string]bool{}
	for _, spec := range c.StringSlice("backend") {
		b, err := parseBackendSpec(spec)
		if err != nil {
			return usagef("%s: %v", commandPath(c), err)
		}
		if seen[b.Address.String()] {
			return usagef("%s: --backend %s is given twice", commandPath(c), b.Address)
		}
		seen[b.Address.String()] = true
		v.Backends = append(v.Backends, b)
	}

	ctx, cancel := apiContext(c)
	defer cancel()
	if err := client(c).AddVIP(ctx, v); err != nil {
		return err
	}
	if !jsonOutput(c) {
		fmt.Fprintf(c.App.Writer, "added vip %s (%s, %s)\n", ref, v.Mode, plural(len(v.Backends), "backend"))
	}
	return nil
}
