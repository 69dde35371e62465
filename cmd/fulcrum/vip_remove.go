package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// vipRemoveCommand removes a VIP. It changes state.
func vipRemoveCommand() *cli.Command {
	return &cli.Command{
		Name:      "remove",
		Aliases:   []string{"rm"},
		Usage:     "remove a VIP: its traffic is no longer balanced (the host sees it again)",
		ArgsUsage: "PROTO/ADDRESS:PORT",
		Action:    vipRemove,
	}
}

func vipRemove(c *cli.Context) error {
	args, err := positional(c, []arg{vipArg})
	if err != nil {
		return err
	}
	ref, err := parseVIP(c, args[0])
	if err != nil {
		return err
	}
	ctx, cancel := apiContext(c)
	defer cancel()
	if err := client(c).RemoveVIP(ctx, ref); err != nil {
		return err
	}
	if !jsonOutput(c) {
		fmt.Fprintf(c.App.Writer, "removed vip %s\n", ref)
	}
	return nil
}
