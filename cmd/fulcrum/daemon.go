package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/internal/daemon"
	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/vrrpagent"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// daemonCommands are the commands that run or remove the fast path itself
// rather than talk to a running daemon.
func daemonCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:  "daemon",
			Usage: "run the load balancer: attach the fast path, reconcile, serve the API and metrics",
			Description: "Stopping the daemon (or killing it) leaves the XDP program attached and its maps " +
				"pinned, so traffic keeps flowing; a restarted daemon adopts them. 'fulcrum detach' removes them. " +
				"SIGHUP reloads the configuration file.",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "configuration `FILE` (YAML)", Required: true},
			},
			Action: func(c *cli.Context) error {
				if os.Geteuid() != 0 {
					return cli.Exit("fulcrum daemon: must run as root (it loads BPF programs and attaches XDP)", 1)
				}
				if err := daemon.Run(c.Context, daemon.Options{ConfigPath: c.String("config"), LogOutput: c.App.ErrWriter}); err != nil {
					return cli.Exit("fulcrum daemon: "+err.Error(), 1)
				}
				return nil
			},
		},
		{
			// The daemon starts it (internal/vrrpagent); it is of no use by hand.
			Name:   vrrpagent.Command,
			Hidden: true,
			Usage:  "run the VRRP protocol for the daemon that started it",
			Action: func(c *cli.Context) error {
				if err := vrrpagent.Serve(c.Context); err != nil {
					return cli.Exit("fulcrum "+vrrpagent.Command+": "+err.Error(), 1)
				}
				return nil
			},
		},
		{
			Name:  "detach",
			Usage: "remove the fast path of a stopped daemon: detach XDP and delete the pinned maps (connection table included)",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "read instance, bpffs and api socket from `FILE`"},
				&cli.StringFlag{Name: "instance", Value: "default", Usage: "instance `NAME`"},
				&cli.StringFlag{Name: "bpffs", Value: datapath.DefaultBPFFS, Usage: "bpffs mount `DIR` holding the pins"},
			},
			Action: func(c *cli.Context) error {
				instance, bpffs, socket := c.String("instance"), c.String("bpffs"), c.String("socket")
				if path := c.String("config"); path != "" {
					cfg, err := config.Load(path)
					if err != nil {
						return cli.Exit("fulcrum detach: "+err.Error(), 2)
					}
					instance, bpffs, socket = cfg.Instance, cfg.BPFFS, cfg.API.Socket
				}
				if socket != "" {
					ctx, cancel := context.WithTimeout(c.Context, time.Second)
					_, err := api.NewClient(socket).Status(ctx)
					cancel()
					if err == nil {
						return cli.Exit(fmt.Sprintf("fulcrum detach: a daemon is running on %s; stop it first (it would keep the program attached)", socket), 1)
					}
				}
				msg, err := datapath.Detach(bpffs, instance)
				if err != nil {
					return cli.Exit("fulcrum detach: "+err.Error(), 1)
				}
				fmt.Fprintln(c.App.Writer, msg)
				return nil
			},
		},
	}
}
