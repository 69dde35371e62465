package main

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// vrrpCommand shows the node's VRRP state; its subcommands hand mastership
// over gracefully (priority 0) and lift that hold again.
func vrrpCommand() *cli.Command {
	return &cli.Command{
		Name:   "vrrp",
		Usage:  "show the VRRP state; 'vrrp handover' steps down gracefully, 'vrrp resume' lifts the hold",
		Action: vrrpShow,
		Subcommands: []*cli.Command{
			{
				Name:   "handover",
				Usage:  "step down: advertise priority 0 so the backup takes over now, and do not preempt until 'vrrp resume'",
				Action: func(c *cli.Context) error { return vrrpHandover(c, false) },
			},
			{
				Name:   "resume",
				Usage:  "lift a handover: the node may preempt again",
				Action: func(c *cli.Context) error { return vrrpHandover(c, true) },
			},
		},
	}
}

func vrrpShow(c *cli.Context) error {
	if _, err := positional(c, nil); err != nil {
		return err
	}
	ctx, cancel := apiContext(c)
	defer cancel()
	v, err := client(c).VRRP(ctx)
	if err != nil {
		return err
	}
	if jsonOutput(c) {
		return printJSON(c.App.Writer, v)
	}
	t := newTable(c.App.Writer)
	row(t, "state:", v.State)
	if v.Enabled {
		row(t, "priority:", fmt.Sprint(v.Priority))
		master := "-"
		if v.Master.IsValid() {
			master = v.Master.String()
		}
		row(t, "master:", master)
		row(t, "adverts:", fmt.Sprintf("%d sent, %d received", v.AdvertsSent, v.AdvertsReceived))
		row(t, "transitions:", fmt.Sprintf("%d, last %s", v.Transitions, humanTime(v.LastTransition, time.Now())))
		var drops []string
		for reason, n := range v.Dropped {
			if n > 0 {
				drops = append(drops, fmt.Sprintf("%s %d", reason, n))
			}
		}
		sort.Strings(drops)
		if len(drops) == 0 {
			drops = []string{"none"}
		}
		row(t, "dropped:", strings.Join(drops, ", "))
		if len(v.Sick) > 0 {
			row(t, "sick:", strings.Join(v.Sick, "; ")+" (priority lowered to 1)")
		}
		if v.State == "master" || v.AdvertsSent > 0 {
			row(t, "sending:", fmt.Sprintf("worst delay %s, worst send call %s, %d late", ms(v.WorstSendDelay), ms(v.WorstSendCall), v.LateSends))
		}
		if v.AdvertsReceived > 0 {
			row(t, "hearing:", fmt.Sprintf("worst gap %s, %d late", ms(v.WorstAdvertGap), v.LateAdverts))
		}
	}
	return t.Flush()
}

func vrrpHandover(c *cli.Context, resume bool) error {
	if _, err := positional(c, nil); err != nil {
		return err
	}
	ctx, cancel := apiContext(c)
	defer cancel()
	if err := client(c).VRRPHandover(ctx, resume); err != nil {
		return err
	}
	if !jsonOutput(c) {
		if resume {
			fmt.Fprintln(c.App.Writer, "vrrp: hold lifted; this node may preempt again")
		} else {
			fmt.Fprintln(c.App.Writer, "vrrp: handed over (priority 0 sent); 'fulcrum vrrp resume' lets this node preempt again")
		}
	}
	return nil
}

// ms renders a duration in milliseconds with one decimal, as the VRRP
// timers are read.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}
