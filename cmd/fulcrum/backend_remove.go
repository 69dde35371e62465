package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// backendRemoveCommand removes a backend from a VIP. It changes state.
func backendRemoveCommand() *cli.Command {
	return &cli.Command{
		Name:      "remove",
		Aliases:   []string{"rm"},
		Usage:     "remove a backend from a VIP (its flows move; drain it first to let them finish)",
		ArgsUsage: "VIP ADDRESS",
		Action:    backendRemove,
	}
}

func backendRemove(c *cli.Context) error {
	ref, addr, _, err := backendArgs(c)
	if err != nil {
		return err
	}
	ctx, cancel := apiContext(c)
	defer cancel()
	if err := client(c).RemoveBackend(ctx, ref, addr); err != nil {
		return err
	}
	if !jsonOutput(c) {
		fmt.Fprintf(c.App.Writer, "removed backend %s from %s\n", addr, ref)
	}
	return nil
}
