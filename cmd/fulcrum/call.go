package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// Every command that talks to the daemon has one of two shapes, written
// once here: a change (parse the command line, send one request, confirm
// it in one line) or a query (parse, send one request, print the answer as
// a table or as JSON). Command-line errors are usageErrors (exit 2); an
// error of the call, whatever the daemon's reason, is returned as it is
// and exits 1 (see report).

// A change is a request that changes the daemon's state, with the line
// that confirms it.
type change struct {
	send    func(context.Context, *api.Client) error
	confirm string
	// unsaved: the change edits the desired VIPs, which a restart or a
	// reload replaces with the config file's (see noteUnsaved).
	unsaved bool
}

// changeAction returns the action of a command that changes state: parse
// reads its command line into the change to make. With -o json the
// confirmation is left out: the exit status says it all.
func changeAction(parse func(*cli.Context) (change, error)) cli.ActionFunc {
	return func(c *cli.Context) error {
		ch, err := parse(c)
		if err != nil {
			return err
		}
		if _, err := callDaemon(c, func(ctx context.Context, d *api.Client) (struct{}, error) {
			return struct{}{}, ch.send(ctx, d)
		}); err != nil {
			return err
		}
		if !jsonOutput(c) {
			_, err = fmt.Fprintln(c.App.Writer, ch.confirm)
		}
		if ch.unsaved {
			noteUnsaved(c)
		}
		return err
	}
}

// query sends the request of a command whose command line is parsed, and
// prints the answer: indented JSON with -o json, else table's rendering.
func query[T any](c *cli.Context, ask func(context.Context, *api.Client) (T, error), table func(io.Writer, T) error) error {
	answer, err := callDaemon(c, ask)
	if err != nil {
		return err
	}
	if jsonOutput(c) {
		return printJSON(c.App.Writer, answer)
	}
	return table(c.App.Writer, answer)
}

// callDaemon makes one call to the daemon at --socket, bounded by
// --timeout.
func callDaemon[T any](c *cli.Context, call func(context.Context, *api.Client) (T, error)) (T, error) {
	ctx := c.Context
	if d := c.Duration("timeout"); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	return call(ctx, api.NewClient(c.String("socket")))
}
