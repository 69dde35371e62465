package main

import (
	"net/netip"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

func TestExplain(t *testing.T) {
	d := startDaemon(t)
	d.run(t, "explain", "198.19.1.2", "203.0.113.10", "tcp", "40000", "80").check(t, 0,
		"tcp 198.19.1.2:40000 -> 203.0.113.10:80 reaches 198.18.0.12 by connection entry (ring slot 1234 of 65537 → 198.18.0.12)\n"+
			"entry state: established\nidle: 3s of 15m0s\n", "")
	if got, want := d.fake.lastCall(), "Explain tcp 198.19.1.2:40000 -> 203.0.113.10:80 syn=false"; got != want {
		t.Errorf("daemon call %q, want %q", got, want)
	}

	// Ports in the addresses, --syn after the arguments, upper-case PROTO.
	d.run(t, "explain", "198.19.1.2:40001", "203.0.113.10:80", "TCP", "--syn").check(t, 0,
		"tcp 198.19.1.2:40001 -> 203.0.113.10:80 reaches 198.18.0.12 by connection entry (ring slot 1234 of 65537 → 198.18.0.12)\n"+
			"entry state: established\nidle: 3s of 15m0s\n", "")
	if got, want := d.fake.lastCall(), "Explain tcp 198.19.1.2:40001 -> 203.0.113.10:80 syn=true"; got != want {
		t.Errorf("daemon call %q, want %q", got, want)
	}

	checkJSON(t, d.run(t, "-o", "json", "explain", "198.19.1.2", "203.0.113.10", "tcp", "40000", "80"), newFake().explain)
}

func TestExplanationText(t *testing.T) {
	req := api.ExplainRequest{Src: netip.MustParseAddr("2001:db8:2::1"), Dst: netip.MustParseAddr("2001:db8::1"), Protocol: "udp", Sport: 5353, Dport: 53}
	b := netip.MustParseAddr("2001:db8:1::2")
	tests := []struct {
		ex   api.Explanation
		want string
	}{
		{api.Explanation{Backend: b, Reason: "ring slot", Hash: 0xbeef, Slot: 7, RingSize: 251, RingBackend: b},
			"udp [2001:db8:2::1]:5353 -> [2001:db8::1]:53 reaches 2001:db8:1::2 by ring slot 7 of 251 (flow hash 0x0000beef)"},
		{api.Explanation{Reason: "no VIP"},
			"udp [2001:db8:2::1]:5353 -> [2001:db8::1]:53 reaches no backend (no VIP)"},
		{api.Explanation{VIP: api.VIPRef{Protocol: "udp", Address: netip.MustParseAddr("2001:db8::1"), Port: 53}, Reason: "source range", RingSize: 251, RingBackend: b},
			"udp [2001:db8:2::1]:5353 -> [2001:db8::1]:53 is dropped: the client is outside the source ranges of vip udp/[2001:db8::1]:53 (counted as drop_source_range)"},
		{api.Explanation{Backend: b, Reason: "ring slot", Hash: 0xbeef, Slot: 7, RingSize: 251, RingBackend: b, Pool: "eu"},
			"udp [2001:db8:2::1]:5353 -> [2001:db8::1]:53 reaches 2001:db8:1::2 by ring slot 7 of 251 of pool eu (flow hash 0x0000beef)"},
		{api.Explanation{Backend: b, Reason: "ring slot", Hash: 0xbeef, Slot: 7, RingSize: 251, RingBackend: b, Pool: "eu", PoolFallback: "vip"},
			"udp [2001:db8:2::1]:5353 -> [2001:db8::1]:53 reaches 2001:db8:1::2 by ring slot 7 of 251 of the vip, as pool eu has no backend up (flow hash 0x0000beef)"},
		{api.Explanation{VIP: api.VIPRef{Protocol: "udp", Address: netip.MustParseAddr("2001:db8::1"), Port: 53}, Reason: "pool down", RingSize: 251, Pool: "eu", PoolFallback: "drop"},
			"udp [2001:db8:2::1]:5353 -> [2001:db8::1]:53 is dropped: the client is in pool eu of vip udp/[2001:db8::1]:53, which has no backend up, and its fallback is drop (counted as drop_pool_down)"},
		{api.Explanation{Backend: b, Reason: "source hash"},
			"udp [2001:db8:2::1]:5353 -> [2001:db8::1]:53 reaches 2001:db8:1::2 by source hash"},
		{api.Explanation{Reason: "round-robin", Scheduler: "round-robin", RingSize: 251, RingBackend: b, RoundRobin: &api.RRSequence{Length: 3,
			Shares: []api.RRShare{{Backend: b, Slots: 1}, {Backend: netip.MustParseAddr("2001:db8:1::3"), Slots: 2}}}},
			"udp [2001:db8:2::1]:5353 -> [2001:db8::1]:53 is a new flow: round-robin: next in the weighted sequence of 3 slots (2001:db8:1::2 ×1, 2001:db8:1::3 ×2); " +
				"the backend depends on the cursor of the CPU that receives the packet, which explain cannot know"},
		{api.Explanation{Reason: "round-robin", Scheduler: "round-robin", RoundRobin: &api.RRSequence{Shares: []api.RRShare{}}},
			"udp [2001:db8:2::1]:5353 -> [2001:db8::1]:53 is a new flow of a round-robin vip whose sequence is empty (no backend has a weight): it reaches no backend"},
		{api.Explanation{Backend: b, Reason: "ring slot", Scheduler: "round-robin", Hash: 0xbeef, Slot: 7, RingSize: 251, RingBackend: b},
			"udp [2001:db8:2::1]:5353 -> [2001:db8::1]:53 reaches 2001:db8:1::2 by ring slot 7 of 251 (flow hash 0x0000beef)\n" +
				"round-robin vip: a packet that is not a flow's first and has no connection entry takes the Maglev ring"},
	}
	for _, tt := range tests {
		if got := explanation(req, tt.ex); got != tt.want {
			t.Errorf("got  %q\nwant %q", got, tt.want)
		}
	}
}

func TestEntryLines(t *testing.T) {
	b := netip.MustParseAddr("2001:db8:1::2")
	tests := []struct {
		e    api.ConnEntry
		want string
	}{
		{api.ConnEntry{Backend: b, State: "fin", Idle: 1250 * time.Millisecond, Timeout: 2 * time.Minute},
			"entry state: fin\nidle: 1.3s of 2m0s\n"},
		{api.ConnEntry{Backend: b, State: "established", Idle: 301 * time.Second, Timeout: 5 * time.Minute, Expired: true},
			"entry state: established\nidle: 5m1s of 5m0s, expired: the ring decides (the entry names 2001:db8:1::2)\n"},
		{api.ConnEntry{Backend: b}, "entry state: -\nidle: 0s of 0s\n"},
	}
	for _, tt := range tests {
		if got := entryLines(&tt.e); got != tt.want {
			t.Errorf("got  %q\nwant %q", got, tt.want)
		}
	}
}

func TestExplainArguments(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"198.19.1.2"}, "fulcrum: explain: missing DST: want the packet's destination address (a VIP), e.g. 203.0.113.10"},
		{[]string{"198.19.1.2", "203.0.113.10"}, "fulcrum: explain: missing PROTO: want tcp or udp"},
		{[]string{"198.19.1.2", "203.0.113.10", "tcp", "40000"}, "fulcrum: explain: missing DPORT: give both SPORT and DPORT, or neither"},
		{[]string{"198.19.1.2", "203.0.113.10", "icmp"}, `fulcrum: explain: PROTO "icmp": want tcp or udp`},
		{[]string{"198.19.1", "203.0.113.10", "tcp"}, `fulcrum: explain: SRC "198.19.1" is not an IP address: want ADDRESS or ADDRESS:PORT, e.g. 198.19.1.2`},
		{[]string{"198.19.1.2", "203.0.113.10:x", "tcp"}, `fulcrum: explain: DST "203.0.113.10:x" is not an IP address: want ADDRESS or ADDRESS:PORT, e.g. 203.0.113.10`},
		{[]string{"198.19.1.2", "203.0.113.10", "tcp", "40000", "http"}, `fulcrum: explain: DPORT "http": want a port, 0 to 65535`},
		{[]string{"198.19.1.2", "203.0.113.10", "tcp", "70000", "80"}, `fulcrum: explain: SPORT "70000": want a port, 0 to 65535`},
		{[]string{"2001:db8::2", "203.0.113.10", "tcp"}, "fulcrum: explain: SRC 2001:db8::2 and DST 203.0.113.10 are of different IP families"},
		{[]string{"198.19.1.2", "203.0.113.10", "udp", "--syn"}, "fulcrum: explain: --syn applies to tcp only"},
		{[]string{"198.19.1.2", "203.0.113.10", "tcp", "1", "2", "3"}, `fulcrum: explain: unexpected argument "3" (usage: fulcrum explain SRC DST PROTO [SPORT DPORT])`},
	}
	for _, tt := range tests {
		// No daemon: argument errors come first.
		runCLI(t, append([]string{"--socket", "/nonexistent/api.sock", "explain"}, tt.args...)...).fails(t, exitUsage, tt.want)
	}
}

// TestExplainLeastConn: a least-conn decision names the scheduler and
// lists the backends compared, with their counts and costs, the chosen
// one marked.
func TestExplainLeastConn(t *testing.T) {
	a, b, c := netip.MustParseAddr("198.18.0.11"), netip.MustParseAddr("198.18.0.12"), netip.MustParseAddr("198.18.0.13")
	explainSYN(t, api.Explanation{Backend: c, Reason: "least-conn", Hash: 0xbeef, Slot: 1234, RingSize: 65537, RingBackend: a,
		LeastConn: &api.LeastConnChoice{Method: "exact", Candidates: []api.LeastConnCandidate{
			{Backend: b, Active: 4, Weight: 2}, {Backend: c, Active: 5, Weight: 3}, {Backend: a, Active: 2, Weight: 1},
		}},
	}).check(t, 0,
		"tcp 198.19.1.2:40000 -> 203.0.113.10:80 reaches 198.18.0.13 by least-conn (ring slot 1234 of 65537 → 198.18.0.11)\n"+
			"least-conn compared (active + 1) / weight over every backend of the pool, counts as read now (a snapshot):\n"+
			"  198.18.0.12          active 4      weight 2     cost 2.50\n"+
			"  198.18.0.13          active 5      weight 3     cost 2.00  chosen\n"+
			"  198.18.0.11          active 2      weight 1     cost 3.00\n", "")
}

// TestExplainLeastTime: a least-time decision names the scheduler and
// lists the backends compared with their load, weight, response time and
// cost, and why each did or did not become the best so far (the margin,
// an unmeasured backend), the chosen one marked.
func TestExplainLeastTime(t *testing.T) {
	a, b, c, e := netip.MustParseAddr("198.18.0.11"), netip.MustParseAddr("198.18.0.12"), netip.MustParseAddr("198.18.0.13"), netip.MustParseAddr("198.18.0.14")
	explainSYN(t, api.Explanation{Backend: c, Reason: "least-time", Scheduler: "least-time", Hash: 0xbeef, Slot: 1234, RingSize: 65537, RingBackend: a,
		LeastTime: &api.LeastConnChoice{Method: "exact", Margin: 0.125, Candidates: []api.LeastConnCandidate{
			{Backend: b, Active: 1, Weight: 1, RTMicros: 400},
			{Backend: a, Active: 1, Weight: 1, RTMicros: 380, WithinMargin: true},
			{Backend: c, Active: 0, Weight: 1, RTMicros: 300, Beat: true},
			{Backend: e, Active: 3, Weight: 1},
		}},
	}).check(t, 0,
		"tcp 198.19.1.2:40000 -> 203.0.113.10:80 reaches 198.18.0.13 by least-time (ring slot 1234 of 65537 → 198.18.0.11)\n"+
			"least-time compared (active + 1) x rt / weight over every backend of the pool, from a member the flow hash picks, counts and times as read now (a snapshot); a backend replaces the best so far only if its cost is lower by more than 1/8 of it:\n"+
			"  198.18.0.12          active 1      weight 1     rt 400µs     cost 800µs     first: the best so far\n"+
			"  198.18.0.11          active 1      weight 1     rt 380µs     cost 760µs     lower, but within 1/8: the best so far stays\n"+
			"  198.18.0.13          active 0      weight 1     rt 300µs     cost 300µs     lower by more than 1/8: the best so far; chosen\n"+
			"  198.18.0.14          active 3      weight 1     rt -         cost -         not lower (not measured: compared on load alone)\n", "")
}

// TestExplainNewFlowLimit: a new flow a scheduler decides, with a
// new_flow_limit set, gets a line saying where it goes over the limit (the
// ring's slot and backend); without a limit, or when no scheduler decides,
// none.
func TestExplainNewFlowLimit(t *testing.T) {
	a, c := netip.MustParseAddr("198.18.0.11"), netip.MustParseAddr("198.18.0.13")
	explainSYN(t, api.Explanation{Backend: c, Reason: "least-conn", Scheduler: "least-conn", Hash: 0xbeef, Slot: 1234, RingSize: 65537, RingBackend: a,
		NewFlowLimit: 5000,
		LeastConn: &api.LeastConnChoice{Method: "exact", Candidates: []api.LeastConnCandidate{
			{Backend: a, Active: 2, Weight: 1}, {Backend: c, Active: 0, Weight: 1},
		}},
	}).check(t, 0,
		"tcp 198.19.1.2:40000 -> 203.0.113.10:80 reaches 198.18.0.13 by least-conn (ring slot 1234 of 65537 → 198.18.0.11)\n"+
			"unless the CPU that receives it is over conntrack.new_flow_limit (5000 new flows a second per CPU, all vips together): "+
			"then the ring decides, ring slot 1234 of 65537 → 198.18.0.11, and the flow gets no connection entry (counted as ct_guard)\n"+
			"least-conn compared (active + 1) / weight over every backend of the pool, counts as read now (a snapshot):\n"+
			"  198.18.0.11          active 2      weight 1     cost 3.00\n"+
			"  198.18.0.13          active 0      weight 1     cost 1.00  chosen\n", "")

	rr := &api.RRSequence{Length: 1, Shares: []api.RRShare{{Backend: a, Slots: 1}}}
	tests := []struct {
		name string
		ex   api.Explanation
		want string
	}{
		{"round-robin", api.Explanation{Reason: "round-robin", Scheduler: "round-robin", Slot: 7, RingSize: 251, RingBackend: a, RoundRobin: rr, NewFlowLimit: 1},
			"unless the CPU that receives it is over conntrack.new_flow_limit (1 new flows a second per CPU, all vips together): " +
				"then the ring decides, ring slot 7 of 251 → 198.18.0.11, and the flow gets no connection entry (counted as ct_guard)"},
		{"least-time", api.Explanation{Backend: c, Reason: "least-time", Scheduler: "least-time", Slot: 7, RingSize: 251, RingBackend: a, NewFlowLimit: 100},
			"unless the CPU that receives it is over conntrack.new_flow_limit (100 new flows a second per CPU, all vips together): " +
				"then the ring decides, ring slot 7 of 251 → 198.18.0.11, and the flow gets no connection entry (counted as ct_guard)"},
		{"no limit", api.Explanation{Reason: "round-robin", Scheduler: "round-robin", Slot: 7, RingSize: 251, RingBackend: a, RoundRobin: rr}, ""},
		{"the ring decides", api.Explanation{Backend: a, Reason: "ring slot", Scheduler: "round-robin", Slot: 7, RingSize: 251, RingBackend: a, NewFlowLimit: 1}, ""},
		{"an entry decides", api.Explanation{Backend: c, Reason: "connection entry", Scheduler: "least-conn", Slot: 7, RingSize: 251, RingBackend: a, NewFlowLimit: 1}, ""},
		{"refused", api.Explanation{Reason: "source range", Scheduler: "least-conn", Slot: 7, RingSize: 251, RingBackend: a, NewFlowLimit: 1}, ""},
		{"no backend has a weight", api.Explanation{Reason: "round-robin", Scheduler: "round-robin", Slot: 7, RingSize: 251,
			RoundRobin: &api.RRSequence{Shares: []api.RRShare{}}, NewFlowLimit: 1}, ""},
	}
	for _, tt := range tests {
		if got := flowLimitLine(tt.ex); got != tt.want {
			t.Errorf("%s: got  %q\nwant %q", tt.name, got, tt.want)
		}
	}
}

// explainSYN has a fake daemon answer ex (for its VIP) and runs explain of
// a SYN from 198.19.1.2:40000 to 203.0.113.10:80.
func explainSYN(t *testing.T, ex api.Explanation) result {
	d := startDaemon(t)
	d.fake.mu.Lock()
	ex.VIP = d.fake.explain.VIP
	d.fake.explain = ex
	d.fake.mu.Unlock()
	return d.run(t, "explain", "198.19.1.2", "203.0.113.10", "tcp", "40000", "80", "--syn")
}
