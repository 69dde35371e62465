package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// applyCommand replaces the daemon's desired state with a config file.
// It changes state.
func applyCommand() *cli.Command {
	return &cli.Command{
		Name:  "apply",
		Usage: "make a config file the desired state: VIPs and backends are added, changed and removed to match",
		Description: "The file is checked whole by the daemon; a bad file changes nothing.\n" +
			"Changes made since through 'vip' and 'backend' commands are replaced.\n\n" +
			"Example: fulcrum apply -f /etc/fulcrum/fulcrum.yaml",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "the YAML config `FILE`, - for standard input"},
		},
		Action: apply,
	}
}

func apply(c *cli.Context) error {
	if _, err := positional(c, nil); err != nil {
		return err
	}
	file := c.String("file")
	if file == "" {
		return usagef("%s: missing -f FILE: want the config file to apply (- for standard input)", commandPath(c))
	}
	var cfg []byte
	var err error
	if file == "-" {
		cfg, err = io.ReadAll(c.App.Reader)
	} else {
		cfg, err = os.ReadFile(file)
	}
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if len(cfg) > api.MaxApplyBody {
		return fmt.Errorf("config %s is %d bytes, over the API's limit of %d", file, len(cfg), api.MaxApplyBody)
	}
	return query(c, func(ctx context.Context, d *api.Client) (api.ApplyResult, error) { return d.Apply(ctx, cfg) },
		func(w io.Writer, res api.ApplyResult) error { return printApplyResult(w, file, res) })
}

// printApplyResult writes a summary line and one line per VIP touched:
// + added, ~ changed, - removed.
func printApplyResult(w io.Writer, file string, res api.ApplyResult) error {
	if file == "-" {
		file = "standard input"
	}
	fmt.Fprintf(w, "applied %s: %d added, %d changed, %d removed, %d unchanged\n",
		file, len(res.Added), len(res.Changed), len(res.Removed), res.Unchanged)
	for _, v := range res.Added {
		fmt.Fprintf(w, "  + %s\n", v)
	}
	for _, v := range res.Changed {
		fmt.Fprintf(w, "  ~ %s\n", v)
	}
	for _, v := range res.Removed {
		fmt.Fprintf(w, "  - %s\n", v)
	}
	return nil
}
