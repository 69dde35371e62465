package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// backendCommand groups the backend commands: list reads; add, remove,
// drain and weight change state.
func backendCommand() *cli.Command {
	return &cli.Command{
		Name:  "backend",
		Usage: "list, add, remove, drain and weight a VIP's backends",
		Subcommands: []*cli.Command{
			{
				Name:        "add",
				Usage:       "add a backend to a VIP",
				ArgsUsage:   "VIP ADDRESS",
				Description: "Example: fulcrum backend add tcp/203.0.113.10:80 198.18.0.13 --weight 2",
				Flags: []cli.Flag{
					&cli.UintFlag{Name: "weight", Value: 1, Usage: fmt.Sprintf("share of new flows, `N` from 0 to %d (0 adds it drained)", config.MaxWeight)},
					&cli.StringFlag{Name: "mac", Usage: "the backend's `MAC` in dsr mode", DefaultText: "resolved by the daemon"},
				},
				Action: changeAction(backendAdd),
			},
			{
				Name:      "remove",
				Aliases:   []string{"rm"},
				Usage:     "remove a backend from a VIP (its flows move; drain it first to let them finish)",
				ArgsUsage: "VIP ADDRESS",
				Action:    changeAction(backendRemove),
			},
			{
				Name:      "drain",
				Usage:     "stop sending new flows to a backend; established flows stay (weight 0)",
				ArgsUsage: "VIP ADDRESS",
				Description: "With --wait it then waits until the backend holds no active (established) connection: exit\n" +
					"status 0 when none is left, 3 when --timeout passes first. Undo with 'fulcrum backend weight'.",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "wait", Usage: "wait until the backend's active connections have ended"},
					&cli.DurationFlag{Name: "timeout", Value: 5 * time.Minute,
						Usage: "with --wait, give up waiting after `DURATION` (exit status 3); without, give up on the daemon after it"},
				},
				Action: func(c *cli.Context) error {
					if !c.Bool("wait") {
						return changeAction(backendDrain)(c)
					}
					ref, addr, _, err := backendArgs(c)
					if err != nil {
						return err
					}
					return backendDrainWait(c, ref, addr)
				},
			},
			{
				Name:      "weight",
				Usage:     "set a backend's share of new flows (0 drains it)",
				ArgsUsage: "VIP ADDRESS N",
				Action:    changeAction(backendWeight),
			},
			{
				Name:      "list",
				Aliases:   []string{"ls"},
				Usage:     "list the backends of every VIP, or of one, with weight and health",
				ArgsUsage: "[VIP]",
				Description: "With -o json the output is the list of VIPs (only VIP if given) with\n" +
					"their backends, as 'vip list -o json' prints it.",
				Action: backendList,
			},
		},
	}
}

func backendAdd(c *cli.Context) (change, error) {
	ref, addr, _, err := backendArgs(c)
	if err != nil {
		return change{}, err
	}
	b := api.Backend{Address: addr}
	w := c.Uint("weight")
	if w > config.MaxWeight {
		return change{}, usagef("%s: --weight %d: want a whole number from 0 to %d", commandPath(c), w, config.MaxWeight)
	}
	b.Weight = uint32(w)
	if c.String("mac") != "" {
		if b.MAC, err = parseMAC(c.String("mac")); err != nil {
			return change{}, usagef("%s: --%v", commandPath(c), err)
		}
	}
	return change{
		send:    func(ctx context.Context, d *api.Client) error { return d.AddBackend(ctx, ref, b) },
		confirm: fmt.Sprintf("added backend %s to %s (weight %d)", addr, ref, b.Weight),
		unsaved: true,
	}, nil
}

func backendRemove(c *cli.Context) (change, error) {
	ref, addr, _, err := backendArgs(c)
	if err != nil {
		return change{}, err
	}
	return change{
		send:    func(ctx context.Context, d *api.Client) error { return d.RemoveBackend(ctx, ref, addr) },
		confirm: fmt.Sprintf("removed backend %s from %s", addr, ref),
		unsaved: true,
	}, nil
}

func backendDrain(c *cli.Context) (change, error) {
	ref, addr, _, err := backendArgs(c)
	if err != nil {
		return change{}, err
	}
	return change{
		send:    setWeight(ref, addr, 0),
		confirm: fmt.Sprintf("draining backend %s of %s: no new flows, established flows stay", addr, ref),
		unsaved: true,
	}, nil
}

var weightArg = arg{"N", fmt.Sprintf("the weight, a whole number from 0 to %d (0 drains)", config.MaxWeight)}

func backendWeight(c *cli.Context) (change, error) {
	ref, addr, rest, err := backendArgs(c, weightArg)
	if err != nil {
		return change{}, err
	}
	weight, err := parseWeight(rest[0])
	if err != nil {
		return change{}, usagef("%s: %v", commandPath(c), err)
	}
	return change{
		send:    setWeight(ref, addr, weight),
		confirm: fmt.Sprintf("set weight of backend %s of %s to %d", addr, ref, weight),
		unsaved: true,
	}, nil
}

func setWeight(ref api.VIPRef, addr netip.Addr, weight uint32) func(context.Context, *api.Client) error {
	return func(ctx context.Context, d *api.Client) error { return d.SetWeight(ctx, ref, addr, weight) }
}

func backendList(c *cli.Context) error {
	args, err := positional(c, nil, vipArg)
	if err != nil {
		return err
	}
	var only *api.VIPRef
	if len(args) == 1 {
		ref, err := parseVIP(c, args[0])
		if err != nil {
			return err
		}
		only = &ref
	}
	return query(c, func(ctx context.Context, d *api.Client) ([]api.VIP, error) {
		vips, err := listVIPs(ctx, d)
		if err != nil || only == nil {
			return vips, err
		}
		for _, v := range vips {
			if v.VIPRef == *only {
				return []api.VIP{v}, nil
			}
		}
		return nil, fmt.Errorf("vip %s: %w", only, api.ErrNotFound)
	}, printBackends)
}

func printBackends(w io.Writer, vips []api.VIP) error {
	t := newTable(w)
	row(t, "VIP", "BACKEND", "WEIGHT", "ACTIVE", "INACTIVE", "RT", "HEALTH", "SINCE", "MAC", "LAST ERROR")
	for _, v := range vips {
		for _, b := range v.Backends {
			weight := fmt.Sprint(b.Weight)
			if b.Weight == 0 {
				weight = "0 (draining)"
			}
			since := "-"
			if !b.HealthSince.IsZero() {
				since = b.HealthSince.Local().Format("15:04:05")
			}
			row(t, v.VIPRef, b.Address, weight, b.Active, b.Inactive, responseText(b.ResponseTime), orDefault(b.Health, "unknown"), since, orDefault(b.MAC, "(resolved)"), orDefault(b.HealthError, "-"))
		}
		if len(v.Backends) == 0 {
			row(t, v.VIPRef, "(none)", "-", "-", "-", "-", "-", "-", "-", "-")
		}
	}
	if err := t.Flush(); err != nil {
		return err
	}
	if len(vips) == 0 {
		_, err := fmt.Fprintln(w, "no VIPs")
		return err
	}
	return nil
}

// responseText is a backend's response time for the RT column: its cost
// to µs, "(none yet)" before the first sample, "-" for a VIP that does
// not measure.
func responseText(rt *api.ResponseTime) string {
	switch {
	case rt == nil:
		return "-"
	case rt.Cost <= 0:
		return "(none yet)"
	}
	return rt.Cost.Round(time.Microsecond).String()
}
