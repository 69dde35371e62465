package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
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
				// Not Required: urfave/cli would print the help with the error.
				&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "configuration `FILE` (YAML), required"},
			},
			Action: func(c *cli.Context) error {
				if _, err := positional(c, nil); err != nil {
					return err
				}
				if c.String("config") == "" {
					return usagef("%s: missing --config FILE: want the configuration file, e.g. --config /etc/fulcrum/fulcrum.yaml", commandPath(c))
				}
				if os.Geteuid() != 0 {
					return cli.Exit("fulcrum daemon: must run as root (it loads BPF programs and attaches XDP)", exitError)
				}
				if err := daemon.Run(c.Context, daemon.Options{ConfigPath: c.String("config"), LogOutput: c.App.ErrWriter}); err != nil {
					return cli.Exit("fulcrum daemon: "+err.Error(), exitError)
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
					return cli.Exit("fulcrum "+vrrpagent.Command+": "+err.Error(), exitError)
				}
				return nil
			},
		},
		{
			Name:  "detach",
			Usage: "remove the fast path of a stopped daemon: detach XDP and delete the pinned maps (connection table included)",
			Description: "Refuses while the instance's daemon answers on its API socket: the one in --config, else\n" +
				"/run/fulcrum/INSTANCE.sock, and --socket if given.",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "read instance, bpffs and api socket from `FILE`"},
				&cli.StringFlag{Name: "instance", Value: config.DefaultInstance, Usage: "instance `NAME`"},
				&cli.StringFlag{Name: "bpffs", Value: datapath.DefaultBPFFS, Usage: "bpffs mount `DIR` holding the pins"},
			},
			Action: detach,
		},
	}
}

func detach(c *cli.Context) error {
	if _, err := positional(c, nil); err != nil {
		return err
	}
	// The daemon of an instance listens where its config says, by default
	// on the instance's own socket: that, not --socket's default, is where
	// a running daemon of this instance answers.
	instance, bpffs := c.String("instance"), c.String("bpffs")
	socket := api.SocketPath(instance)
	if path := c.String("config"); path != "" {
		cfg, err := config.Load(path)
		if err != nil {
			return cli.Exit("fulcrum detach: "+err.Error(), exitUsage)
		}
		instance, bpffs, socket = cfg.Instance, cfg.BPFFS, cfg.API.Socket
	} else if instance == "" || instance != filepath.Base(instance) || instance == ".." {
		// The instance names a directory under bpffs that is removed
		// whole: it must not reach outside.
		return usagef("%s: --instance %q: want an instance name, e.g. %s", commandPath(c), instance, config.DefaultInstance)
	}
	sockets := []string{socket}
	if c.IsSet("socket") && c.String("socket") != socket {
		sockets = append(sockets, c.String("socket"))
	}
	for i, s := range sockets {
		// A daemon on the instance's own socket is in the way whatever it
		// calls itself; on --socket, only if it is this instance's.
		if err := daemonAt(c.Context, s, instance, i == 0); err != nil {
			return cli.Exit("fulcrum detach: "+err.Error(), exitError)
		}
	}

	msg, err := datapath.Detach(bpffs, instance)
	if err != nil {
		return cli.Exit("fulcrum detach: "+err.Error(), exitError)
	}
	fmt.Fprintln(c.App.Writer, msg)
	return nil
}

// daemonAt returns an error if a daemon of instance (or any daemon, with
// anyInstance) answers on socket, or if it cannot tell: only a socket that
// is missing or that nothing listens on lets detach go ahead.
func daemonAt(ctx context.Context, socket, instance string, anyInstance bool) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := api.NewClient(socket).Status(ctx)
	switch {
	case err == nil && (anyInstance || st.Instance == instance):
		return fmt.Errorf("a daemon is running on %s; stop it first (it would keep the program attached)", socket)
	case err == nil, errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return nil
	}
	return fmt.Errorf("cannot tell whether a daemon is running on %s (%v); stop it first", socket, err)
}
