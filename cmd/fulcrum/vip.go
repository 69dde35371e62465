package main

import "github.com/urfave/cli/v2"

// vipCommand groups the VIP commands: list reads (vip_list.go), add and
// remove change state (vip_add.go, vip_remove.go).
func vipCommand() *cli.Command {
	return &cli.Command{
		Name:  "vip",
		Usage: "list, add and remove VIPs",
		Subcommands: []*cli.Command{
			vipAddCommand(),
			vipRemoveCommand(),
			vipListCommand(),
		},
	}
}
