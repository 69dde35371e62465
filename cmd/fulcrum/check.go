package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/fulcrum-lb/fulcrum/internal/config"
)

// checkCommand validates a config file offline: the checks and the
// messages are those of the daemon (config.Load), which runs the same
// code when it starts or reloads. It needs no daemon and no privilege.
func checkCommand() *cli.Command {
	return &cli.Command{
		Name:  "check",
		Usage: "check a config file offline, as the daemon would at start or reload (needs no daemon)",
		Description: "Prints every problem, one per line, as the daemon would (FILE: FIELD: MESSAGE (line N)).\n" +
			"Exit status: 0 if the file is good, 1 if it has problems or cannot be read, 2 for a bad command line.\n" +
			"Settings that only a restart can change are not compared with a running daemon.\n\n" +
			"Example: fulcrum check -f /etc/fulcrum/fulcrum.yaml",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "the YAML config `FILE`, - for standard input"},
		},
		Action: check,
	}
}

// checkResult is the JSON form of a check.
type checkResult struct {
	File     string           `json:"file"`
	Valid    bool             `json:"valid"`
	Problems []config.Problem `json:"problems"`
	// Counts of a valid file.
	Interfaces int `json:"interfaces"`
	VIPs       int `json:"vips"`
	Backends   int `json:"backends"`
}

func check(c *cli.Context) error {
	if _, err := positional(c, nil); err != nil {
		return err
	}
	file := c.String("file")
	if file == "" {
		return usagef("%s: missing -f FILE: want the config file to check (- for standard input)", commandPath(c))
	}
	var cfg *config.Config
	var err error
	if file == "-" {
		var data []byte
		if data, err = io.ReadAll(c.App.Reader); err != nil {
			return fmt.Errorf("check: read standard input: %w", err)
		}
		cfg, err = config.Parse(data)
	} else {
		cfg, err = config.Load(file)
	}
	res := checkResult{File: file, Valid: err == nil, Problems: []config.Problem{}}
	if err != nil {
		invalid, ok := errors.AsType[*config.ValidationError](err)
		if !ok {
			// The file could not be read: say so as the daemon would.
			return cli.Exit("fulcrum check: "+err.Error(), exitError)
		}
		res.Problems = invalid.Problems
		if !jsonOutput(c) {
			// The daemon's own words: `fulcrum daemon` prints the same
			// lines after "fulcrum daemon: ".
			return cli.Exit("fulcrum check: "+err.Error(), exitError)
		}
	} else {
		res.Interfaces, res.VIPs = len(cfg.Interfaces), len(cfg.VIPs)
		for _, v := range cfg.VIPs {
			res.Backends += len(v.Backends)
		}
	}
	if jsonOutput(c) {
		if err := printJSON(c.App.Writer, res); err != nil {
			return err
		}
		if !res.Valid {
			return cli.Exit("", exitError)
		}
		return nil
	}
	if file == "-" {
		file = "standard input"
	}
	_, err = fmt.Fprintf(c.App.Writer, "%s: good: %s, %s, %s\n", file,
		plural(res.Interfaces, "interface"), plural(res.VIPs, "VIP"), plural(res.Backends, "backend"))
	return err
}
