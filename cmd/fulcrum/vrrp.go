package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// vrrpCommand shows the node's VRRP state; its subcommands hand mastership
// over gracefully (priority 0) and lift that hold again. now is the clock
// the last transition is measured against.
func vrrpCommand(now func() time.Time) *cli.Command {
	return &cli.Command{
		Name:  "vrrp",
		Usage: "show the VRRP state; 'vrrp handover' steps down gracefully, 'vrrp resume' lifts the hold",
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return groupAction(c) // an unknown subcommand
			}
			return query(c, func(ctx context.Context, d *api.Client) (api.VRRP, error) { return d.VRRP(ctx) },
				func(w io.Writer, v api.VRRP) error { return printVRRP(w, v, now()) })
		},
		Subcommands: []*cli.Command{
			{
				Name:   "handover",
				Usage:  "step down: advertise priority 0 so the backup takes over now, and do not preempt until 'vrrp resume'",
				Action: changeAction(vrrpHandover(false, "vrrp: handed over (priority 0 sent); 'fulcrum vrrp resume' lets this node preempt again")),
			},
			{
				Name:   "resume",
				Usage:  "lift a handover: the node may preempt again",
				Action: changeAction(vrrpHandover(true, "vrrp: hold lifted; this node may preempt again")),
			},
		},
	}
}

func printVRRP(w io.Writer, v api.VRRP, now time.Time) error {
	t := newTable(w)
	row(t, "state:", v.State)
	if v.Enabled {
		row(t, "priority:", v.Priority)
		master := "-"
		if v.Master.IsValid() {
			master = v.Master.String()
		}
		row(t, "master:", master)
		row(t, "adverts:", fmt.Sprintf("%d sent, %d received", v.AdvertsSent, v.AdvertsReceived))
		row(t, "transitions:", fmt.Sprintf("%d, last %s", v.Transitions, humanTime(v.LastTransition, now)))
		var drops []string
		for reason, n := range v.Dropped {
			if n > 0 {
				drops = append(drops, fmt.Sprintf("%s %d", reason, n))
			}
		}
		slices.Sort(drops)
		if len(drops) == 0 {
			drops = []string{"none"}
		}
		row(t, "dropped:", strings.Join(drops, ", "))
		if len(v.Sick) > 0 {
			row(t, "sick:", strings.Join(v.Sick, "; ")+" (priority lowered to 1)")
		}
		if v.State == "master" || v.AdvertsSent > 0 {
			row(t, "sending:", fmt.Sprintf("worst delay %s, worst send call %s, %d late, %d by guards", ms(v.WorstSendDelay), ms(v.WorstSendCall), v.LateSends, v.GuardSent))
		}
		if v.AdvertsReceived > 0 {
			row(t, "hearing:", fmt.Sprintf("worst gap %s, %d late", ms(v.WorstAdvertGap), v.LateAdverts))
		}
	}
	return t.Flush()
}

// vrrpHandover parses `vrrp handover` (resume false) and `vrrp resume`,
// which take no arguments.
func vrrpHandover(resume bool, confirm string) func(*cli.Context) (change, error) {
	return func(c *cli.Context) (change, error) {
		if _, err := positional(c, nil); err != nil {
			return change{}, err
		}
		return change{
			send:    func(ctx context.Context, d *api.Client) error { return d.VRRPHandover(ctx, resume) },
			confirm: confirm,
		}, nil
	}
}

// ms renders a duration in milliseconds with one decimal, as the VRRP
// timers are read.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}
