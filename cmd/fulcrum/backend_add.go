package main

import (
	"fmt"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/urfave/cli/v2"
)

// backendAddCommand adds a backend to a VIP. It changes state.
func backendAddCommand() *cli.Command {
	return &cli.Command{
		Name:        "add",
		Usage:       "add a backend to a VIP",
		ArgsUsage:   "VIP ADDRESS",
		Description: "Example: fulcrum backend add tcp/203.0.113.10:80 198.18.0.13 --weight 2",
		Flags: []cli.Flag{
			&cli.UintFlag{Name: "weight", Value: 1, Usage: fmt.Sprintf("share of new flows, `N` from 0 to %d (0 adds it drained)", config.MaxWeight)},
			&cli.StringFlag{Name: "mac", Usage: "the backend's `MAC` in dsr mode", DefaultText: "resolved by the daemon"},
		},
		Action: backendAdd,
	}
}

func backendAdd(c *cli.Context) error {
	ref, addr, _, err := backendArgs(c)
	if err != nil {
		return err
	}
	b := api.Backend{Address: addr}
	if w := c.Uint("weight"); w > config.MaxWeight {
		return usagef("%s: --weight %d: want a whole number from 0 to %d", commandPath(c), w, config.MaxWeight)
	} else {
		b.Weight = uint32(w)
	}
	if c.String("mac") != "" {
		if b.MAC, err = parseMAC(c.String("mac")); err != nil {
			return usagef("%s: --%v", commandPath(c), err)
		}
	}
	ctx, cancel := apiContext(c)
	defer cancel()
	if err := client(c).AddBackend(ctx, ref, b); err != nil {
		return err
	}
	if !jsonOutput(c) {
		fmt.Fprintf(c.App.Writer, "added backend %s to %s (weight %d)\n", addr, ref, b.Weight)
	}
	return nil
}
