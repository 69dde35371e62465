package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// configCommand groups what concerns the daemon's configuration as it
// runs; show only reads.
func configCommand() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "show the running configuration, to save the changes made with the CLI",
		Subcommands: []*cli.Command{
			{
				Name:  "show",
				Usage: "print the daemon's desired state as a config file",
				Description: "Prints the configuration the daemon runs with: the file it started with (or last\n" +
					"applied, or reloaded), with every VIP and backend change made since through the CLI\n" +
					"or the API. 'fulcrum apply -f' and 'fulcrum daemon --config' accept it and give the\n" +
					"same state back. Changes made with the CLI last until the daemon restarts or reloads\n" +
					"its file; to keep them:\n\n" +
					"  fulcrum config show > /etc/fulcrum/fulcrum.yaml.new &&\n" +
					"      mv /etc/fulcrum/fulcrum.yaml.new /etc/fulcrum/fulcrum.yaml\n\n" +
					"Every default is written out. Health checks are written per backend, as resolved.",
				Action: func(c *cli.Context) error {
					if _, err := positional(c, nil); err != nil {
						return err
					}
					return query(c, func(ctx context.Context, d *api.Client) (api.RunningConfig, error) { return d.Config(ctx) },
						func(w io.Writer, rc api.RunningConfig) error {
							_, err := io.WriteString(w, rc.YAML)
							return err
						})
				},
			},
		},
	}
}

// unsavedNotice is printed on stderr after every change to the desired
// VIPs made through the CLI. Each time rather than once: the CLI keeps no
// state between runs, and whoever makes the next change on the node (a
// colleague, a script's log) needs it as much as the first. It goes to
// stderr, so that scripts reading stdout see only the confirmation.
const unsavedNotice = "note: this change lasts until the daemon restarts or reloads its config file; " +
	"to keep it, save the running configuration: fulcrum config show > FILE (see 'fulcrum config show --help')"

// noteUnsaved prints unsavedNotice.
func noteUnsaved(c *cli.Context) {
	fmt.Fprintln(c.App.ErrWriter, unsavedNotice)
}
