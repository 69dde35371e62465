package main

import (
	"fmt"
	"runtime"

	"github.com/urfave/cli/v2"

	"github.com/fulcrum-lb/fulcrum/internal/version"
)

// versionCommand prints the build's version. It needs no daemon.
func versionCommand() *cli.Command {
	return &cli.Command{
		Name:   "version",
		Usage:  "print the version of this fulcrum binary (needs no daemon; 'status' shows the daemon's)",
		Action: printVersion,
	}
}

// buildInfo is the JSON form of the version.
type buildInfo struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
	Go      string `json:"go"`
}

func printVersion(c *cli.Context) error {
	if _, err := positional(c, nil); err != nil {
		return err
	}
	if jsonOutput(c) {
		return printJSON(c.App.Writer, buildInfo{Version: version.Version, Commit: version.Revision(), Go: runtime.Version()})
	}
	_, err := fmt.Fprintln(c.App.Writer, version.String())
	return err
}
