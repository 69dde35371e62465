package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// drainPoll is how often `node drain` reads the counters while it waits.
const drainPoll = 100 * time.Millisecond

// nodeCommand groups what takes the node out of the routers' ECMP group
// and puts it back.
func nodeCommand() *cli.Command {
	return &cli.Command{
		Name:  "node",
		Usage: "take this node out of the routers' ECMP group (node drain) and back (node resume)",
		Subcommands: []*cli.Command{
			{
				Name:  "drain",
				Usage: "withdraw every VIP from BGP and wait until no traffic reaches this node",
				Description: "The node stays attached and keeps serving whatever still reaches it; the routers move\n" +
					"its flows to the other nodes, which build the same Maglev rings. It waits until every peer\n" +
					"holds none of its prefixes and no VIP packet has arrived for --quiet, or --wait passes.\n" +
					"Undo with 'fulcrum node resume'. The drain lasts until then, or until the daemon restarts.",
				Flags: []cli.Flag{
					&cli.DurationFlag{Name: "wait", Value: time.Minute, Usage: "give up waiting for the traffic to stop after `DURATION` (0: do not wait)"},
					&cli.DurationFlag{Name: "quiet", Value: 2 * time.Second, Usage: "traffic has stopped once no VIP packet arrived for `DURATION`"},
				},
				Action: nodeDrain,
			},
			{
				Name:   "resume",
				Usage:  "undo 'node drain': announce the VIPs again where this node can serve them",
				Action: changeAction(nodeResume),
			},
		},
	}
}

func nodeResume(c *cli.Context) (change, error) {
	if _, err := positional(c, nil); err != nil {
		return change{}, err
	}
	return change{
		send:    func(ctx context.Context, d *api.Client) error { return d.NodeDrain(ctx, true) },
		confirm: "node: resumed; VIPs are announced again where this node can serve them",
	}, nil
}

// drainReport is what `node drain -o json` prints.
type drainReport struct {
	Withdrawn []netip.Prefix `json:"withdrawn"`
	// Stopped is whether the traffic stopped within --wait.
	Stopped bool `json:"stopped"`
	// Waited is from the drain until the traffic was seen to stop (or
	// until --wait passed).
	Waited time.Duration `json:"waited_ns"`
	// Packets is how many VIP packets arrived after the drain.
	Packets uint64 `json:"packets"`
	// Holding lists the peers that still held a prefix of this node when
	// the wait ended.
	Holding []netip.Addr `json:"holding,omitempty"`
}

func nodeDrain(c *cli.Context) error {
	if _, err := positional(c, nil); err != nil {
		return err
	}
	wait, quiet := c.Duration("wait"), c.Duration("quiet")
	if wait < 0 || quiet <= 0 {
		return usagef("%s: --wait must not be negative and --quiet must be above zero", commandPath(c))
	}
	if _, err := callDaemon(c, func(ctx context.Context, d *api.Client) (struct{}, error) {
		return struct{}{}, d.NodeDrain(ctx, false)
	}); err != nil {
		return err
	}
	start := time.Now()
	read := func() (api.BGP, error) {
		return callDaemon(c, func(ctx context.Context, d *api.Client) (api.BGP, error) { return d.BGP(ctx) })
	}
	b, err := read()
	if err != nil {
		return err
	}
	var rep drainReport
	for _, p := range b.Prefixes {
		rep.Withdrawn = append(rep.Withdrawn, p.Prefix)
	}
	first, last, lastChange := b.VIPPackets, b.VIPPackets, start
	for {
		rep.Holding = rep.Holding[:0]
		for _, p := range b.Peers {
			if p.Advertised > 0 {
				rep.Holding = append(rep.Holding, p.Address)
			}
		}
		if b.VIPPackets != last {
			last, lastChange = b.VIPPackets, time.Now()
		}
		rep.Packets = last - first
		rep.Waited = time.Since(start)
		if len(rep.Holding) == 0 && time.Since(lastChange) >= quiet {
			rep.Stopped, rep.Waited = true, lastChange.Sub(start)
			break
		}
		if rep.Waited >= wait {
			break
		}
		select {
		case <-c.Context.Done():
			return c.Context.Err()
		case <-time.After(drainPoll):
		}
		if b, err = read(); err != nil {
			return err
		}
	}
	if len(rep.Holding) == 0 {
		rep.Holding = nil
	}
	if jsonOutput(c) {
		if err := printJSON(c.App.Writer, rep); err != nil {
			return err
		}
	} else {
		printDrain(c, rep, wait, quiet)
	}
	if !rep.Stopped && wait > 0 {
		return errors.New("node drain: the node is drained, but traffic did not stop in time; the routers may not have converged ('fulcrum bgp' shows the sessions)")
	}
	return nil
}

func printDrain(c *cli.Context, rep drainReport, wait, quiet time.Duration) {
	w := c.App.Writer
	names := make([]string, len(rep.Withdrawn))
	for i, p := range rep.Withdrawn {
		names[i] = p.String()
	}
	list := "none"
	if len(names) > 0 {
		list = strings.Join(names, ", ")
	}
	fmt.Fprintf(w, "node: drained; withdrawn: %s\n", list)
	switch {
	case rep.Stopped:
		fmt.Fprintf(w, "node: traffic stopped %s after the drain (%d VIP packets meanwhile, none for %s since)\n",
			rep.Waited.Round(100*time.Millisecond), rep.Packets, quiet)
	case wait == 0:
		fmt.Fprintln(w, "node: not waiting for the traffic to stop (--wait 0)")
	default:
		holding := ""
		if len(rep.Holding) > 0 {
			holding = fmt.Sprintf("; peers still holding a prefix: %v", rep.Holding)
		}
		fmt.Fprintf(w, "node: traffic still arriving after %s (%d VIP packets since the drain)%s\n", wait, rep.Packets, holding)
	}
}
