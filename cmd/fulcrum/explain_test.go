package main

import (
	"net/netip"
	"testing"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

func TestExplain(t *testing.T) {
	d := startDaemon(t)
	d.run(t, "explain", "198.19.1.2", "203.0.113.10", "tcp", "40000", "80").expect(t, 0, []string{
		"tcp 198.19.1.2:40000 -> 203.0.113.10:80 reaches 198.18.0.12 by connection entry (ring slot 1234 of 65537 → 198.18.0.12)\n",
	})
	if got, want := d.fake.lastCall(), "Explain tcp 198.19.1.2:40000 -> 203.0.113.10:80 syn=false"; got != want {
		t.Errorf("daemon call %q, want %q", got, want)
	}

	// Ports in the addresses, --syn after the arguments, upper-case PROTO.
	d.run(t, "explain", "198.19.1.2:40001", "203.0.113.10:80", "TCP", "--syn").expect(t, 0, []string{"reaches 198.18.0.12"})
	if got, want := d.fake.lastCall(), "Explain tcp 198.19.1.2:40001 -> 203.0.113.10:80 syn=true"; got != want {
		t.Errorf("daemon call %q, want %q", got, want)
	}
}

func TestExplainJSON(t *testing.T) {
	d := startDaemon(t)
	r := d.run(t, "-o", "json", "explain", "198.19.1.2", "203.0.113.10", "tcp", "40000", "80")
	r.expect(t, 0, nil)
	var ex api.Explanation
	decodeJSON(t, r.stdout, &ex)
	if ex.Slot != 1234 || ex.Reason != "connection entry" || ex.Backend != netip.MustParseAddr("198.18.0.12") {
		t.Errorf("decoded %+v", ex)
	}
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
		{api.Explanation{Backend: b, Reason: "source hash"},
			"udp [2001:db8:2::1]:5353 -> [2001:db8::1]:53 reaches 2001:db8:1::2 by source hash"},
	}
	for _, tt := range tests {
		if got := explanation(req, tt.ex); got != tt.want {
			t.Errorf("got  %q\nwant %q", got, tt.want)
		}
	}
}

func TestExplainArguments(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"198.19.1.2"}, "fulcrum: explain: missing DST: want the packet's destination address"},
		{[]string{"198.19.1.2", "203.0.113.10"}, "fulcrum: explain: missing PROTO: want tcp or udp"},
		{[]string{"198.19.1.2", "203.0.113.10", "tcp", "40000"}, "missing DPORT: give both SPORT and DPORT, or neither"},
		{[]string{"198.19.1.2", "203.0.113.10", "icmp"}, `PROTO "icmp": want tcp or udp`},
		{[]string{"198.19.1", "203.0.113.10", "tcp"}, `SRC "198.19.1" is not an IP address: want ADDRESS or ADDRESS:PORT`},
		{[]string{"198.19.1.2", "203.0.113.10", "tcp", "40000", "http"}, `DPORT "http": want a port, 0 to 65535`},
		{[]string{"198.19.1.2", "203.0.113.10", "tcp", "70000", "80"}, `SPORT "70000"`},
		{[]string{"2001:db8::2", "203.0.113.10", "tcp"}, "different IP families"},
		{[]string{"198.19.1.2", "203.0.113.10", "udp", "--syn"}, "--syn applies to tcp only"},
		{[]string{"198.19.1.2", "203.0.113.10", "tcp", "1", "2", "3"}, `unexpected argument "3"`},
	}
	for _, tt := range tests {
		// No daemon: argument errors come first.
		r := runCLI(t, append([]string{"--socket", "/nonexistent/api.sock", "explain"}, tt.args...)...)
		r.expect(t, 2, nil, tt.want)
	}
}
