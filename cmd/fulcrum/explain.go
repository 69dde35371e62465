package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// explainCommand says which backend a packet would reach and why. It
// only reads: the daemon predicts, it sends nothing.
func explainCommand() *cli.Command {
	return &cli.Command{
		Name:      "explain",
		Usage:     "say which backend a packet reaches, and why",
		ArgsUsage: "SRC DST PROTO [SPORT DPORT]",
		Description: "SRC and DST are IP addresses (DST a VIP), or ADDRESS:PORT instead of the\n" +
			"separate ports; PROTO is tcp or udp. A port left out is 0, which only an\n" +
			"all-ports VIP matches.\n\n" +
			"Example: fulcrum explain 198.19.1.2 203.0.113.10 tcp 40000 80 --syn",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "syn", Usage: "the packet is a TCP SYN (it starts a connection)"},
		},
		Action: explain,
	}
}

var (
	srcArg   = arg{"SRC", "the packet's source address, e.g. 198.19.1.2"}
	dstArg   = arg{"DST", "the packet's destination address (a VIP), e.g. 203.0.113.10"}
	protoArg = arg{"PROTO", "tcp or udp"}
	sportArg = arg{"SPORT", "the source port, 0 to 65535"}
	dportArg = arg{"DPORT", "the destination port, 0 to 65535"}
)

func explain(c *cli.Context) error {
	args, err := positional(c, []arg{srcArg, dstArg, protoArg}, sportArg, dportArg)
	if err != nil {
		return err
	}
	if len(args) == 4 {
		return usagef("%s: missing DPORT: give both SPORT and DPORT, or neither", commandPath(c))
	}
	src, sport, err := parseEndpoint(args[0])
	if err != nil {
		return usagef("%s: SRC %v: want ADDRESS or ADDRESS:PORT, e.g. 198.19.1.2", commandPath(c), err)
	}
	dst, dport, err := parseEndpoint(args[1])
	if err != nil {
		return usagef("%s: DST %v: want ADDRESS or ADDRESS:PORT, e.g. 203.0.113.10", commandPath(c), err)
	}
	proto := strings.ToLower(args[2])
	if proto != "tcp" && proto != "udp" {
		return usagef("%s: PROTO %q: want tcp or udp", commandPath(c), args[2])
	}
	if len(args) == 5 {
		if sport, err = parsePort(args[3]); err != nil {
			return usagef("%s: SPORT %v", commandPath(c), err)
		}
		if dport, err = parsePort(args[4]); err != nil {
			return usagef("%s: DPORT %v", commandPath(c), err)
		}
	}
	if src.Is4() != dst.Is4() {
		return usagef("%s: SRC %s and DST %s are of different IP families", commandPath(c), src, dst)
	}
	if c.Bool("syn") && proto != "tcp" {
		return usagef("%s: --syn applies to tcp only", commandPath(c))
	}
	req := api.ExplainRequest{Src: src, Dst: dst, Protocol: proto, Sport: sport, Dport: dport, SYN: c.Bool("syn")}
	return query(c, func(ctx context.Context, d *api.Client) (api.Explanation, error) { return d.Explain(ctx, req) },
		func(w io.Writer, ex api.Explanation) error {
			_, err := fmt.Fprintln(w, explanation(req, ex))
			if line := flowLimitLine(ex); err == nil && line != "" {
				_, err = fmt.Fprintln(w, line)
			}
			if err == nil && ex.Entry != nil {
				_, err = fmt.Fprint(w, entryLines(ex.Entry))
			}
			if err == nil && ex.LeastConn != nil {
				_, err = fmt.Fprint(w, leastConnLines(ex.LeastConn, ex.Backend))
			}
			if err == nil && ex.LeastTime != nil {
				_, err = fmt.Fprint(w, leastTimeLines(ex.LeastTime, ex.Backend))
			}
			return err
		})
}

// entryLines describes the flow's connection entry, e.g. "entry state:
// established\nidle: 3s of 15m0s\n". An expired entry names its backend:
// that is where the flow was before the ring took it back.
func entryLines(e *api.ConnEntry) string {
	// Idle has jiffies resolution; tenths of a second are enough to
	// compare it with a timeout of whole seconds.
	idle := fmt.Sprintf("idle: %s of %s", e.Idle.Round(100*time.Millisecond), e.Timeout)
	if e.Expired {
		idle += fmt.Sprintf(", expired: the ring decides (the entry names %s)", e.Backend)
	}
	return fmt.Sprintf("entry state: %s\n%s\n", orDash(e.State), idle)
}

// leastConnLines shows what least-conn compared, a line per backend with
// its cost (active + 1) / weight, the chosen one marked.
func leastConnLines(lc *api.LeastConnChoice, chosen netip.Addr) string {
	var b strings.Builder
	how := "every backend of the pool"
	if lc.Method == "two_choices" {
		how = "two ring slots (the flow's and a rehashed one)"
	}
	fmt.Fprintf(&b, "least-conn compared (active + 1) / weight over %s, counts as read now (a snapshot):\n", how)
	for _, c := range lc.Candidates {
		mark := ""
		if c.Backend == chosen {
			mark = "  chosen"
		}
		cost := "-"
		if c.Weight > 0 {
			cost = fmt.Sprintf("%.2f", float64(c.Active+1)/float64(c.Weight))
		}
		fmt.Fprintf(&b, "  %-20s active %-6d weight %-5d cost %s%s\n", c.Backend, c.Active, c.Weight, cost, mark)
	}
	return b.String()
}

// leastTimeLines shows what least-time compared, a line per backend with
// its load, weight, response time and cost (active + 1) x rt / weight, why
// it did or did not become the best so far, the chosen one marked.
func leastTimeLines(lt *api.LeastConnChoice, chosen netip.Addr) string {
	var b strings.Builder
	how := "every backend of the pool, from a member the flow hash picks"
	if lt.Method == "two_choices" {
		how = "two ring slots (the flow's, then a rehashed one)"
	}
	margin := "1/8"
	if lt.Margin > 0 && lt.Margin != 0.125 {
		margin = fmt.Sprintf("%.3g", lt.Margin)
	}
	fmt.Fprintf(&b, "least-time compared (active + 1) x rt / weight over %s, counts and times as read now (a snapshot); "+
		"a backend replaces the best so far only if its cost is lower by more than %s of it:\n", how, margin)
	for i, c := range lt.Candidates {
		rt, cost := "-", "-"
		if c.RTMicros > 0 {
			rt = fmtMicros(float64(c.RTMicros))
			if c.Weight > 0 {
				cost = fmtMicros(float64(c.Active+1) * float64(c.RTMicros) / float64(c.Weight))
			}
		}
		var why string
		switch {
		case i == 0 && lt.Method == "two_choices":
			why = "the ring's slot: the best so far"
		case i == 0:
			why = "first: the best so far"
		case c.Beat:
			why = "lower by more than " + margin + ": the best so far"
		case c.WithinMargin:
			why = "lower, but within " + margin + ": the best so far stays"
		default:
			why = "not lower"
		}
		if c.RTMicros == 0 {
			why += " (not measured: compared on load alone)"
		}
		if c.Backend == chosen {
			why += "; chosen"
		}
		fmt.Fprintf(&b, "  %-20s active %-6d weight %-5d rt %-9s cost %-9s %s\n", c.Backend, c.Active, c.Weight, rt, cost, why)
	}
	return b.String()
}

// fmtMicros formats a time in µs: "850µs", "12.5ms".
func fmtMicros(us float64) string {
	if us < 1000 {
		return fmt.Sprintf("%.0fµs", us)
	}
	return fmt.Sprintf("%.3gms", us/1000)
}

// explanation is one line, e.g. "tcp 198.19.1.2:40000 -> 203.0.113.10:80
// reaches 198.18.0.12 by connection entry (ring slot 1234 of 65537 →
// 198.18.0.12)".
func explanation(req api.ExplainRequest, ex api.Explanation) string {
	flow := fmt.Sprintf("%s %s -> %s", req.Protocol, netip.AddrPortFrom(req.Src, req.Sport), netip.AddrPortFrom(req.Dst, req.Dport))
	if ex.Reason == "source range" {
		return fmt.Sprintf("%s is dropped: the client is outside the source ranges of vip %s (counted as drop_source_range)", flow, ex.VIP)
	}
	if ex.Reason == "pool down" {
		return fmt.Sprintf("%s is dropped: the client is in pool %s of vip %s, which has no backend up, and its fallback is drop (counted as drop_pool_down)", flow, ex.Pool, ex.VIP)
	}
	if ex.Reason == "round-robin" && ex.RoundRobin != nil {
		return roundRobinLine(flow, ex)
	}
	if !ex.Backend.IsValid() {
		return fmt.Sprintf("%s reaches no backend (%s)", flow, orDash(ex.Reason))
	}
	reason := orDash(ex.Reason)
	if ex.RingSize == 0 {
		return fmt.Sprintf("%s reaches %s by %s", flow, ex.Backend, reason)
	}
	ring := ringSlot(ex)
	if ex.Reason == "ring slot" {
		line := fmt.Sprintf("%s reaches %s by %s (flow hash 0x%08x)", flow, ex.Backend, ring, ex.Hash)
		if ex.Scheduler == "round-robin" {
			// Only a flow's first packet takes the sequence.
			line += "\nround-robin vip: a packet that is not a flow's first and has no connection entry takes the Maglev ring"
		}
		return line
	}
	return fmt.Sprintf("%s reaches %s by %s (%s → %s)", flow, ex.Backend, reason, ring, ex.RingBackend)
}

// ringSlot names the ring slot the flow hashes to, and whose ring it is,
// e.g. "ring slot 7 of 251 of pool eu".
func ringSlot(ex api.Explanation) string {
	ring := fmt.Sprintf("ring slot %d of %d", ex.Slot, ex.RingSize)
	switch {
	case ex.Pool != "" && ex.PoolFallback == "vip":
		ring += fmt.Sprintf(" of the vip, as pool %s has no backend up", ex.Pool)
	case ex.Pool != "":
		ring += " of pool " + ex.Pool
	}
	return ring
}

// flowLimitLine says, for a new flow a scheduler decides, where it goes
// instead when the CPU that receives it is over conntrack.new_flow_limit:
// the ring, as the flow gets no entry and its later packets would take
// the ring (bpf/balancer.c sched_choose). Which CPU that is, and how many
// new flows it counted this second, explain cannot know, so the line
// states the condition. "" without a limit, or when the ring names no
// backend (then no backend has a weight, and the scheduler finds none
// either).
func flowLimitLine(ex api.Explanation) string {
	switch ex.Reason {
	case "round-robin", "least-conn", "least-time":
	default:
		return ""
	}
	if ex.NewFlowLimit == 0 || !ex.RingBackend.IsValid() || ex.RingSize == 0 {
		return ""
	}
	return fmt.Sprintf("unless the CPU that receives it is over conntrack.new_flow_limit (%d new flows a second per CPU, all vips together): "+
		"then the ring decides, %s → %s, and the flow gets no connection entry (counted as ct_guard)", ex.NewFlowLimit, ringSlot(ex), ex.RingBackend)
}

// roundRobinLine explains a new flow of a round-robin VIP, e.g. "tcp
// 198.19.1.2:40000 -> 203.0.113.10:80 is a new flow: round-robin: next in
// the weighted sequence of 3 slots (198.18.0.11 ×1, 198.18.0.12 ×2); the
// backend depends on the cursor of the CPU that receives the packet, which
// explain cannot know".
func roundRobinLine(flow string, ex api.Explanation) string {
	rr := ex.RoundRobin
	if len(rr.Shares) == 0 {
		return fmt.Sprintf("%s is a new flow of a round-robin vip whose sequence is empty (no backend has a weight): it reaches no backend", flow)
	}
	shares := make([]string, len(rr.Shares))
	for i, s := range rr.Shares {
		shares[i] = fmt.Sprintf("%s ×%d", s.Backend, s.Slots)
	}
	return fmt.Sprintf("%s is a new flow: round-robin: next in the weighted sequence of %d slots (%s); "+
		"the backend depends on the cursor of the CPU that receives the packet, which explain cannot know",
		flow, rr.Length, strings.Join(shares, ", "))
}

// parseEndpoint parses ADDRESS or ADDRESS:PORT ([IPv6]:PORT).
func parseEndpoint(s string) (netip.Addr, uint16, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr(), ap.Port(), nil
	}
	addr, err := parseAddr(s)
	return addr, 0, err
}

func parsePort(s string) (uint16, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("%q: want a port, 0 to 65535", s)
	}
	return uint16(p), nil
}
