package main

import "github.com/urfave/cli/v2"

// backendCommand groups the backend commands: list reads
// (backend_list.go); add, remove, drain and weight change state.
func backendCommand() *cli.Command {
	return &cli.Command{
		Name:  "backend",
		Usage: "list, add, remove, drain and weight a VIP's backends",
		Subcommands: []*cli.Command{
			backendAddCommand(),
			backendRemoveCommand(),
			backendDrainCommand(),
			backendWeightCommand(),
			backendListCommand(),
		},
	}
}
