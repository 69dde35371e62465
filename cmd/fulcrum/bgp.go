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

// bgpCommand shows the BGP speaker: its sessions, and each VIP address
// with whether it is announced and why not. now is the clock the sessions'
// ages are measured against.
func bgpCommand(now func() time.Time) *cli.Command {
	return &cli.Command{
		Name:  "bgp",
		Usage: "show the BGP sessions and which VIP prefixes are announced or withdrawn, and why",
		Action: func(c *cli.Context) error {
			if _, err := positional(c, nil); err != nil {
				return err
			}
			return query(c, func(ctx context.Context, d *api.Client) (api.BGP, error) { return d.BGP(ctx) },
				func(w io.Writer, b api.BGP) error { return printBGP(w, b, now()) })
		},
	}
}

func printBGP(w io.Writer, b api.BGP, now time.Time) error {
	if !b.Enabled {
		_, err := fmt.Fprintln(w, "bgp: not configured (no bgp section)")
		return err
	}
	t := newTable(w)
	row(t, "asn:", b.ASN)
	row(t, "router id:", b.RouterID)
	listen := "off (dials its peers)"
	if b.ListenPort > 0 {
		listen = fmt.Sprintf("port %d", b.ListenPort)
	}
	row(t, "listen:", listen)
	node := "announcing"
	switch {
	case b.Drained:
		node = "drained ('fulcrum node resume' announces again)"
	case len(b.Sick) > 0:
		node = "sick: " + strings.Join(b.Sick, "; ")
	}
	row(t, "node:", node)
	row(t, "announced:", fmt.Sprintf("%d of %d prefixes", b.Announced, len(b.Prefixes)))
	if err := t.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	t = newTable(w)
	row(t, "PEER", "ASN", "STATE", "SINCE", "HOLD", "ADVERTISED", "RECEIVED", "MD5", "MULTIHOP")
	for _, p := range b.Peers {
		since, hold := "-", "-"
		if p.State == "established" {
			since, hold = humanTime(p.Since, now), p.HoldTime.String()
		}
		multihop := "-"
		if p.Multihop > 0 {
			multihop = fmt.Sprintf("ttl %d", p.Multihop)
		}
		row(t, p.Address, p.ASN, p.State, since, hold, p.Advertised, p.Received, yesNo(p.MD5), multihop)
	}
	if err := t.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	if len(b.Prefixes) == 0 {
		_, err := fmt.Fprintln(w, "no VIPs: nothing to announce")
		return err
	}
	t = newTable(w)
	row(t, "PREFIX", "STATE", "COMMUNITIES", "MED", "VIPS")
	for _, p := range b.Prefixes {
		state := "announced"
		if !p.Announced {
			state = "withdrawn (" + p.Reason + ")"
		}
		comm, med := "-", "-"
		if len(p.Communities) > 0 {
			comm = strings.Join(p.Communities, ",")
		}
		if p.MED != nil {
			med = fmt.Sprint(*p.MED)
		}
		row(t, p.Prefix, state, comm, med, strings.Join(p.VIPs, ","))
	}
	return t.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
