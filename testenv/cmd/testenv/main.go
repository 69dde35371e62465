// Command testenv brings the canonical test topology up and down by hand,
// for poking at it with `ip netns exec`:
//
//	testenv up [-backends N] [-lb2] [-remote] [-vip 203.0.113.10,2001:db8:ffff::10]
//	testenv down PREFIX
//	testenv list
//
// "up" prints the prefix of the new namespaces and leaves them in place;
// "down" deletes every namespace of a prefix (it does not know about
// processes started in them: stop those first).
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/fulcrum-lb/fulcrum/testenv"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "up":
		err = up(os.Args[2:])
	case "down":
		if len(os.Args) != 3 {
			usage()
		}
		err = testenv.RemovePrefix(os.Args[2])
	case "list":
		err = list()
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: testenv up [-backends N] [-lb2] [-remote] [-vip ADDR,...] | down PREFIX | list")
	os.Exit(2)
}

func up(args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	backends := fs.Int("backends", 3, "number of backends")
	lb2 := fs.Bool("lb2", false, "add a second load balancer (lb2)")
	remote := fs.Bool("remote", false, "put the backends on their own segment behind the router (sw2, 198.18.2.0/24)")
	vips := fs.String("vip", "203.0.113.10,2001:db8:ffff::10", "comma-separated VIPs to put on the backends' lo")
	fs.Parse(args)
	opts := testenv.Options{Backends: *backends, SecondLB: *lb2, RemoteBackends: *remote}
	for _, s := range strings.Split(*vips, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return err
		}
		opts.VIPs = append(opts.VIPs, a)
	}
	topo, err := testenv.Build(opts)
	if err != nil {
		return err
	}
	fmt.Printf("prefix %s (remove with: scripts/testenv.sh down %s)\n", topo.Prefix, topo.Prefix)
	for _, h := range topo.Hosts() {
		fmt.Printf("  %-20s %-5s %-12s %-16s %s\n", h.Name, h.Iface, ipString(h.IPv4), ipString(h.IPv6), h.MAC)
	}
	if len(topo.VIPs) > 0 {
		fmt.Printf("VIPs %v routed by the router via lb1\n", topo.VIPs)
	}
	return nil
}

func ipString(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}

func list() error {
	names, err := filepath.Glob("/run/netns/fc*-*")
	if err != nil {
		return err
	}
	byPrefix := map[string][]string{}
	for _, n := range names {
		base := filepath.Base(n)
		p, role, _ := strings.Cut(base, "-")
		byPrefix[p] = append(byPrefix[p], role)
	}
	prefixes := make([]string, 0, len(byPrefix))
	for p := range byPrefix {
		prefixes = append(prefixes, p)
	}
	sort.Strings(prefixes)
	for _, p := range prefixes {
		fmt.Printf("%s: %s\n", p, strings.Join(byPrefix[p], " "))
	}
	return nil
}
