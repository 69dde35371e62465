package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// connCommand lists and flushes the connection table's entries, as
// `conntrack -L` / `ipvsadm -Lcn` and `conntrack -D` do.
func connCommand() *cli.Command {
	return &cli.Command{
		Name:  "conn",
		Usage: "list or flush the connection table's entries (which backend each flow is pinned to)",
		Subcommands: []*cli.Command{
			{
				Name:      "list",
				Aliases:   []string{"ls"},
				Usage:     "list the live connection entries, of every VIP or of one",
				ArgsUsage: "[VIP]",
				Description: "Entries are printed as the daemon walks the table, so a listing of a large table starts\n" +
					"at once and holds little memory. With -o json each entry is one JSON object a line.\n" +
					"State active is established; inactive is syn, fin and closed (IPVS's classes).",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "backend", Usage: "only the entries of backend `ADDRESS`"},
					&cli.StringFlag{Name: "state", Usage: "only the entries in `STATE`: " + api.ConnStateNames},
					&cli.UintFlag{Name: "limit", Usage: "stop after `N` entries (0: all)"},
				},
				Action: connList,
			},
			{
				Name:        "flush",
				Usage:       "delete the connection entries of a VIP or of a backend (their flows take the ring again)",
				ArgsUsage:   "[VIP]",
				Description: "Give a VIP, --backend, or both. Asks on a terminal unless --yes; refuses without a terminal and --yes.",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "backend", Usage: "the entries of backend `ADDRESS`"},
					&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "do not ask for confirmation"},
				},
				Action: connFlush,
			},
		},
	}
}

// connFilter reads the filter of conn list and conn flush.
func connFilter(c *cli.Context) (api.ConnFilter, error) {
	var f api.ConnFilter
	args, err := positional(c, nil, vipArg)
	if err != nil {
		return f, err
	}
	if len(args) == 1 {
		ref, err := parseVIP(c, args[0])
		if err != nil {
			return f, err
		}
		f.VIP = &ref
	}
	if s := c.String("backend"); s != "" {
		if f.Backend, err = parseBackendAddr(c, s); err != nil {
			return f, err
		}
	}
	if c.Command.Names()[0] == "list" {
		if s := strings.ToLower(c.String("state")); s != "" {
			switch s {
			case "active", "inactive", "established", "syn", "fin", "closed":
				f.State = s
			default:
				return f, usagef("%s: --state %q: want %s", commandPath(c), c.String("state"), api.ConnStateNames)
			}
		}
		f.Limit = int(c.Uint("limit"))
	}
	return f, nil
}

// connColumns is the layout of conn list's rows: fixed widths, since rows
// are printed as they arrive (a tabwriter would hold them all).
const connColumns = "%-3s  %-11s  %7s  %7s  %-21s  %-21s  %s\n"

func connList(c *cli.Context) error {
	f, err := connFilter(c)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(c.App.Writer)
	defer w.Flush()
	enc := json.NewEncoder(w)
	if !jsonOutput(c) {
		fmt.Fprintf(w, connColumns, "PRO", "STATE", "IDLE", "EXPIRES", "CLIENT", "VIRTUAL", "BACKEND")
	}
	n := 0
	_, err = callDaemon(c, func(ctx context.Context, d *api.Client) (struct{}, error) {
		return struct{}{}, d.Conns(ctx, f, func(conn api.Conn) error {
			n++
			if jsonOutput(c) {
				return enc.Encode(conn)
			}
			_, err := fmt.Fprintf(w, connColumns, conn.Protocol, conn.State, humanSeconds(conn.Idle), humanSeconds(conn.ExpiresIn),
				conn.Client, conn.Dst, conn.Backend)
			return err
		})
	})
	if err != nil {
		return err
	}
	if !jsonOutput(c) {
		fmt.Fprintln(w, entries(n, ""))
	}
	return nil
}

// humanSeconds renders a duration to the second: 59s, 14m59s, 2h0m0s.
func humanSeconds(d time.Duration) string {
	return d.Round(time.Second).String()
}

// stdinTerminal reports whether stdin is a terminal; tests replace it.
var stdinTerminal = func() bool {
	_, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS)
	return err == nil
}

// stdin is where conn flush reads its confirmation; tests replace it.
var stdin io.Reader = os.Stdin

func connFlush(c *cli.Context) error {
	f, err := connFilter(c)
	if err != nil {
		return err
	}
	if f.VIP == nil && !f.Backend.IsValid() {
		return usagef("%s: give a VIP, --backend ADDRESS, or both (a flush of the whole table is not offered)", commandPath(c))
	}
	what := describeFilter(f)
	if !c.Bool("yes") {
		if !stdinTerminal() {
			return usagef("%s: stdin is not a terminal, so it cannot ask; pass --yes to delete the entries of %s", commandPath(c), what)
		}
		fmt.Fprintf(c.App.ErrWriter, "delete the connection entries of %s? Their flows will take the ring again. [y/N] ", what)
		answer, _ := bufio.NewReader(stdin).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			return fmt.Errorf("%s: not confirmed; nothing deleted", commandPath(c))
		}
	}
	n, err := callDaemon(c, func(ctx context.Context, d *api.Client) (int, error) { return d.FlushConns(ctx, f) })
	if err != nil {
		return err
	}
	if jsonOutput(c) {
		return printJSON(c.App.Writer, api.FlushResult{Deleted: n})
	}
	_, err = fmt.Fprintf(c.App.Writer, "deleted %s of %s\n", entries(n, "connection "), what)
	return err
}

// describeFilter names what a flush selects: "tcp/203.0.113.10:80",
// "backend 198.18.0.12" or both.
func describeFilter(f api.ConnFilter) string {
	var parts []string
	if f.VIP != nil {
		parts = append(parts, f.VIP.String())
	}
	if f.Backend.IsValid() {
		parts = append(parts, "backend "+f.Backend.String())
	}
	return strings.Join(parts, " ")
}

// backendDrainWait is `backend drain --wait`: drain, then wait for the
// backend's active connections to end, or for --timeout.
func backendDrainWait(c *cli.Context, ref api.VIPRef, addr netip.Addr) error {
	wait := c.Duration("timeout")
	if wait <= 0 || wait > api.MaxDrainWait {
		return usagef("%s: --timeout %v: want a duration above 0 and at most %v", commandPath(c), wait, api.MaxDrainWait)
	}
	// The call lasts the wait and a margin for the daemon's answer.
	ctx, cancel := context.WithTimeout(c.Context, wait+10*time.Second)
	defer cancel()
	n, err := api.NewClient(c.String("socket")).DrainBackend(ctx, ref, addr, wait)
	if err != nil {
		return err
	}
	noteUnsaved(c)
	if jsonOutput(c) {
		if err := printJSON(c.App.Writer, n); err != nil {
			return err
		}
	} else if n.Empty {
		fmt.Fprintf(c.App.Writer, "drained backend %s of %s: no active connection left after %s (%d inactive)\n",
			addr, ref, humanDuration(n.Waited), n.Inactive)
	}
	if !n.Empty {
		return cli.Exit(fmt.Sprintf("fulcrum: backend drain: backend %s of %s still holds %s after %s (it takes no new flows)",
			addr, ref, plural(int(n.Active), "active connection"), wait), exitTimeout)
	}
	return nil
}

// entries renders a count of entries: "1 entry", "3 connection entries".
func entries(n int, kind string) string {
	if n == 1 {
		return "1 " + kind + "entry"
	}
	return fmt.Sprintf("%d %sentries", n, kind)
}
