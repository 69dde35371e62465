package main

import (
	"fmt"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/urfave/cli/v2"
)

// backendWeightCommand sets a backend's weight. It changes state.
func backendWeightCommand() *cli.Command {
	return &cli.Command{
		Name:      "weight",
		Usage:     "set a backend's share of new flows (0 drains it)",
		ArgsUsage: "VIP ADDRESS N",
		Action:    backendWeight,
	}
}

var weightArg = arg{"N", fmt.Sprintf("the weight, a whole number from 0 to %d (0 drains)", config.MaxWeight)}

func backendWeight(c *cli.Context) error {
	ref, addr, rest, err := backendArgs(c, weightArg)
	if err != nil {
		return err
	}
	weight, err := parseWeight(rest[0])
	if err != nil {
		return usagef("%s: %v", commandPath(c), err)
	}
	ctx, cancel := apiContext(c)
	defer cancel()
	if err := client(c).SetWeight(ctx, ref, addr, weight); err != nil {
		return err
	}
	if !jsonOutput(c) {
		fmt.Fprintf(c.App.Writer, "set weight of backend %s of %s to %d\n", addr, ref, weight)
	}
	return nil
}
