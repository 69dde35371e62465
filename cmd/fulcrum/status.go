package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// statusCommand shows the daemon's overall state. It only reads; now is
// the clock the start and the last apply are measured against.
func statusCommand(now func() time.Time) *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the daemon's state: interfaces, VIPs, VRRP role, last apply",
		Action: func(c *cli.Context) error {
			if _, err := positional(c, nil); err != nil {
				return err
			}
			return query(c, func(ctx context.Context, d *api.Client) (api.Status, error) { return d.Status(ctx) },
				func(w io.Writer, st api.Status) error { return printStatus(w, st, now()) })
		},
	}
}

func printStatus(w io.Writer, st api.Status, now time.Time) error {
	t := newTable(w)
	row(t, "daemon:", fmt.Sprintf("fulcrum %s, instance %s", orDash(st.Version), orDash(st.Instance)))
	row(t, "started:", humanTime(st.Started, now))
	row(t, "config:", orDash(st.ConfigFile))
	var ifaces []string
	for _, i := range st.Interfaces {
		ifaces = append(ifaces, fmt.Sprintf("%s (ifindex %d, %s XDP)", i.Name, i.Ifindex, i.XDPMode))
	}
	if len(ifaces) == 0 {
		ifaces = []string{"none"}
	}
	row(t, "interfaces:", strings.Join(ifaces, ", "))
	row(t, "vips:", fmt.Sprintf("%d (%s)", st.VIPs, plural(st.Backends, "backend")))
	row(t, "vrrp:", orDash(st.VRRP))
	row(t, "last apply:", humanTime(st.LastApply, now))
	row(t, "reconcile:", humanDuration(st.Reconcile))
	adopted := "no: started with fresh state"
	if st.Adopted {
		adopted = "yes: took over the pinned fast path at start"
	}
	row(t, "adopted:", adopted)
	return t.Flush()
}
