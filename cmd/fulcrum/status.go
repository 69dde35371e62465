package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
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
	layout := "-"
	if st.Layout != 0 {
		layout = fmt.Sprint(st.Layout)
	}
	row(t, "layout:", layout)
	if s := st.Sync; s != nil {
		syncRows(t, s, now)
	}
	return t.Flush()
}

// syncRows shows connection sync: peers, traffic, and what was lost where
// (only the non-zero reasons).
func syncRows(t *tabwriter.Writer, s *api.SyncStatus, now time.Time) {
	row(t, "sync:", "listening on "+s.Listen)
	for _, p := range s.Peers {
		state := "down"
		if p.Up {
			state = "up"
		}
		heard := "never heard"
		if !p.LastHeard.IsZero() {
			heard = "heard " + humanTime(p.LastHeard, now)
		}
		row(t, "  peer:", fmt.Sprintf("%s %s, %s", p.Address, state, heard))
	}
	row(t, "  sent:", fmt.Sprintf("%d entries in %d datagrams (%s, %d entries)", s.SentEntries, s.SentDatagrams, plural(int(s.Resyncs), "resync"), s.ResyncEntries))
	row(t, "  received:", fmt.Sprintf("%d entries in %d datagrams, %d installed", s.ReceivedEntries, s.ReceivedDatagrams, s.Installed))
	row(t, "  skipped:", nonZero(s.Skipped))
	row(t, "  dropped:", nonZero(s.Dropped))
	row(t, "  overflow:", nonZero(s.Overflow))
	row(t, "  lag:", fmt.Sprintf("send mean %s max %s, receive mean %s max %s",
		humanDuration(s.SendLag.Mean()), humanDuration(s.SendLag.Max), humanDuration(s.ReceiveAge.Mean()), humanDuration(s.ReceiveAge.Max)))
}

// nonZero lists a map's non-zero counts by name, "none" if there are none.
func nonZero(m map[string]uint64) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if m[k] != 0 {
			out = append(out, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}
