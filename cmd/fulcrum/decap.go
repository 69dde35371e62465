package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/fulcrum-lb/fulcrum/internal/decap"
)

// decapCommand runs the backend-side decapsulation program in the
// foreground. It needs no daemon.
func decapCommand() *cli.Command {
	return &cli.Command{
		Name:  "decap",
		Usage: "on a backend: strip the balancer's ipip encapsulation from packets to the VIPs and hand them to the local stack",
		Description: "Attaches an XDP program to the interface that receives the tunnel traffic. An IPv4 or IPv6 packet\n" +
			"carrying IPv4 (protocol 4) or IPv6 (protocol 41) whose inner destination is a --vip loses its outer\n" +
			"header and goes to the stack, which must hold the VIP (on lo). Runs until SIGINT or SIGTERM, then\n" +
			"detaches and prints its counters. See docs/decap.md.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "interface", Aliases: []string{"i"}, Usage: "the `IFACE` that receives the encapsulated traffic"},
			&cli.StringSliceFlag{Name: "vip", Usage: "decapsulate packets to `ADDRESS` (repeat for more VIPs)"},
			&cli.BoolFlag{Name: "generic", Usage: "attach in generic (skb) mode, for interfaces without native XDP"},
		},
		Action: runDecap,
	}
}

// decapArgs checks the command line and returns the interface name and the
// VIPs.
func decapArgs(c *cli.Context) (string, []netip.Addr, error) {
	if _, err := positional(c, nil); err != nil {
		return "", nil, err
	}
	ifname := c.String("interface")
	if ifname == "" {
		return "", nil, usagef("decap: missing --interface: want the interface that receives the encapsulated traffic, e.g. --interface eth0")
	}
	raw := c.StringSlice("vip")
	if len(raw) == 0 {
		return "", nil, usagef("decap: missing --vip: want at least one VIP address, e.g. --vip 203.0.113.10")
	}
	vips := make([]netip.Addr, 0, len(raw))
	for _, s := range raw {
		a, err := parseAddr(s)
		if err == nil {
			err = decap.CheckVIP(a)
		}
		if err != nil {
			return "", nil, usagef("decap: --vip: %v", err)
		}
		vips = append(vips, a)
	}
	return ifname, vips, nil
}

func runDecap(c *cli.Context) error {
	ifname, vips, err := decapArgs(c)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return cli.Exit("fulcrum decap: must run as root (it loads a BPF program and attaches XDP)", 1)
	}
	fail := func(err error) error { return cli.Exit("fulcrum decap: "+err.Error(), 1) }
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return fail(fmt.Errorf("interface %s: %w", ifname, err))
	}

	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d, err := decap.Load()
	if err != nil {
		return fail(err)
	}
	defer d.Close()
	if err := d.SetVIPs(vips); err != nil {
		return fail(err)
	}
	if err := d.Attach(ifi.Index, c.Bool("generic")); err != nil {
		return fail(fmt.Errorf("interface %s: %w", ifname, err))
	}
	mode := "native"
	if c.Bool("generic") {
		mode = "generic"
	}
	names := make([]string, len(vips))
	for i, v := range vips {
		names[i] = v.String()
	}
	log := slog.New(slog.NewTextHandler(c.App.ErrWriter, nil))
	log.Info("decapsulating", "interface", ifname, "ifindex", ifi.Index, "xdp", mode, "vips", strings.Join(names, ","))

	<-ctx.Done()

	counters, cerr := d.Counters()
	if err := d.Detach(); err != nil {
		return fail(err)
	}
	if cerr != nil {
		return fail(cerr)
	}
	if jsonOutput(c) {
		return printJSON(c.App.Writer, counters)
	}
	printDecapCounters(c.App.Writer, counters)
	return nil
}

// printDecapCounters prints the counters as a table, in the program's
// order.
func printDecapCounters(w io.Writer, counters map[string]uint64) {
	t := newTable(w)
	row(t, "COUNTER", "PACKETS")
	for _, name := range decap.CounterNames() {
		row(t, name, counters[name])
	}
	t.Flush()
}
