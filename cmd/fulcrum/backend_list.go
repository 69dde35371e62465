package main

import (
	"fmt"
	"io"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/urfave/cli/v2"
)

// backendListCommand lists backends with their health. It only reads.
func backendListCommand() *cli.Command {
	return &cli.Command{
		Name:      "list",
		Aliases:   []string{"ls"},
		Usage:     "list the backends of every VIP, or of one, with weight and health",
		ArgsUsage: "[VIP]",
		Description: "With -o json the output is the list of VIPs (only VIP if given) with\n" +
			"their backends, as 'vip list -o json' prints it.",
		Action: backendList,
	}
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
	ctx, cancel := apiContext(c)
	defer cancel()
	vips, err := client(c).ListVIPs(ctx)
	if err != nil {
		return err
	}
	shown := []api.VIP{}
	for _, v := range vips {
		if only == nil || v.VIPRef == *only {
			shown = append(shown, v)
		}
	}
	if only != nil && len(shown) == 0 {
		return fmt.Errorf("vip %s: %w", only, api.ErrNotFound)
	}
	if jsonOutput(c) {
		return printJSON(c.App.Writer, shown)
	}
	printBackends(c.App.Writer, shown)
	return nil
}

func printBackends(w io.Writer, vips []api.VIP) {
	t := newTable(w)
	row(t, "VIP", "BACKEND", "WEIGHT", "HEALTH", "SINCE", "MAC", "LAST ERROR")
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
			row(t, v.VIPRef, b.Address, weight, orDefault(b.Health, "unknown"), since, orDefault(b.MAC, "(resolved)"), orDefault(b.HealthError, "-"))
		}
		if len(v.Backends) == 0 {
			row(t, v.VIPRef, "(none)", "-", "-", "-")
		}
	}
	t.Flush()
	if len(vips) == 0 {
		fmt.Fprintln(w, "no VIPs")
	}
}
