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
			"Changes made since through 'vip' and 'backend' commands are replaced.\n" +
			"With --dry-run the daemon says what it would change and changes nothing: the VIPs\n" +
			"added, removed and changed; for each changed VIP its backends (weight and ring slots\n" +
			"now -> after) and the share of ring slots that move; the settings that need a restart.\n\n" +
			"Example: fulcrum apply --dry-run -f /etc/fulcrum/fulcrum.yaml",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "the YAML config `FILE`, - for standard input"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print what applying the file would change, and change nothing"},
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
	if c.Bool("dry-run") {
		return query(c, func(ctx context.Context, d *api.Client) (api.Plan, error) { return d.Plan(ctx, cfg) },
			func(w io.Writer, p api.Plan) error { return printPlan(w, file, p) })
	}
	return query(c, func(ctx context.Context, d *api.Client) (api.ApplyResult, error) { return d.Apply(ctx, cfg) },
		func(w io.Writer, res api.ApplyResult) error { return printApplyResult(w, file, res) })
}

// printApplyResult writes a summary line and one line per VIP touched:
// + added, ~ changed, - removed.
func printApplyResult(w io.Writer, file string, res api.ApplyResult) error {
	printVIPChanges(w, "applied "+fileName(file), res.Added, res.Changed, res.Removed, res.Unchanged, func(string) { fmt.Fprintln(w) })
	return nil
}

// fileName names a config file in output.
func fileName(file string) string {
	if file == "-" {
		return "standard input"
	}
	return file
}

// printVIPChanges writes the summary line of an apply or a dry run, led by
// head, then the VIPs: + added, ~ changed (each followed by what detail
// writes about it, ending the line), - removed.
func printVIPChanges(w io.Writer, head string, added, changed, removed []string, unchanged int, detail func(vip string)) {
	fmt.Fprintf(w, "%s: %d added, %d changed, %d removed, %d unchanged\n", head, len(added), len(changed), len(removed), unchanged)
	for _, v := range added {
		fmt.Fprintf(w, "  + %s\n", v)
	}
	for _, v := range changed {
		fmt.Fprintf(w, "  ~ %s", v)
		detail(v)
	}
	for _, v := range removed {
		fmt.Fprintf(w, "  - %s\n", v)
	}
}

// printPlan writes what applying the file would do: a summary line, the
// VIPs (+ added, ~ changed, - removed), for each changed VIP its settings,
// the share of ring slots that move and its backends, then the settings
// that only a restart can change.
func printPlan(w io.Writer, file string, p api.Plan) error {
	changed := make([]string, len(p.Changed))
	byVIP := make(map[string]api.VIPPlan, len(p.Changed))
	for i, v := range p.Changed {
		changed[i], byVIP[v.VIP] = v.VIP, v
	}
	var err error
	printVIPChanges(w, "dry run of "+fileName(file)+" (nothing changed)", p.Added, changed, p.Removed, p.Unchanged, func(vip string) {
		v := byVIP[vip]
		fmt.Fprintf(w, ": %d of %d ring slots move (%.2f%%)\n", v.MovedSlots, v.RingSize, 100*v.MovedShare)
		for _, s := range v.Settings {
			fmt.Fprintf(w, "      %s\n", s)
		}
		if len(v.Backends) == 0 {
			return
		}
		t := newTable(w)
		row(t, "      BACKEND", "CHANGE", "WEIGHT", "SLOTS")
		for _, b := range v.Backends {
			change := b.Change
			if change == "" {
				change = "-"
			}
			row(t, "      "+b.Address.String(), change, fmt.Sprintf("%d -> %d", b.OldWeight, b.NewWeight), fmt.Sprintf("%d -> %d", b.OldSlots, b.NewSlots))
		}
		err = t.Flush()
	})
	if err != nil {
		return err
	}
	for _, s := range p.Global {
		fmt.Fprintf(w, "  setting %s\n", s)
	}
	if len(p.Restart) > 0 {
		fmt.Fprintln(w, "apply would refuse this file; a restart is needed:")
		for _, s := range p.Restart {
			fmt.Fprintf(w, "  ! %s\n", s)
		}
	}
	return nil
}
