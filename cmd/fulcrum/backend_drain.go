package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// backendDrainCommand sets a backend's weight to 0. It changes state.
func backendDrainCommand() *cli.Command {
	return &cli.Command{
		Name:        "drain",
		Usage:       "stop sending new flows to a backend; established flows stay (weight 0)",
		ArgsUsage:   "VIP ADDRESS",
		Description: "Undo with 'fulcrum backend weight VIP ADDRESS N'.",
		Action:      backendDrain,
	}
}

func backendDrain(c *cli.Context) error {
	ref, addr, _, err := backendArgs(c)
	if err != nil {
		return err
	}
	ctx, cancel := apiContext(c)
	defer cancel()
	if err := client(c).SetWeight(ctx, ref, addr, 0); err != nil {
		return err
	}
	if !jsonOutput(c) {
		fmt.Fprintf(c.App.Writer, "draining backend %s of %s: no new flows, established flows stay\n", addr, ref)
	}
	return nil
}
