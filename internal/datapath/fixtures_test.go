package datapath

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
)

// The provisioned state every fixture runs against.
var (
	client4 = "198.19.1.2"
	client6 = "2001:db8:1::2"

	backends4 = []Backend{
		{Addr: addr("198.18.0.11"), MAC: mustMAC("02:00:00:00:0b:11"), Weight: 1},
		{Addr: addr("198.18.0.12"), MAC: mustMAC("02:00:00:00:0b:12"), Weight: 2},
		{Addr: addr("198.18.0.13"), MAC: mustMAC("02:00:00:00:0b:13"), Weight: 3},
	}
	backends6 = []Backend{
		{Addr: addr("2001:db8:2::11"), MAC: mustMAC("02:00:00:00:0b:21"), Weight: 1},
		{Addr: addr("2001:db8:2::12"), MAC: mustMAC("02:00:00:00:0b:22"), Weight: 1},
		{Addr: addr("2001:db8:2::13"), MAC: mustMAC("02:00:00:00:0b:23"), Weight: 1},
	}

	vipWeb4   = VIP{Addr: addr("203.0.113.10"), Port: 80, Proto: TCP}
	vipDNS4   = VIP{Addr: addr("203.0.113.10"), Port: 53, Proto: UDP}  // no conntrack
	vipAll4   = VIP{Addr: addr("203.0.113.20"), Port: 0, Proto: TCP}   // every port
	vipPass4  = VIP{Addr: addr("203.0.113.30"), Port: 80, Proto: TCP}  // passes fragments
	vipEmpty4 = VIP{Addr: addr("203.0.113.40"), Port: 80, Proto: UDP}  // no backends
	vipSrc4   = VIP{Addr: addr("203.0.113.50"), Port: 443, Proto: TCP} // source hash
	vipWeb6   = VIP{Addr: addr("2001:db8:ffff::10"), Port: 80, Proto: TCP}
	vipDNS6   = VIP{Addr: addr("2001:db8:ffff::10"), Port: 53, Proto: UDP} // with conntrack
)

const smallRing = 251

type provisioned struct {
	vip      VIP
	cfg      VIPConfig
	backends []Backend
}

func fixtureState() []provisioned {
	return []provisioned{
		{vipWeb4, VIPConfig{Mode: ModeDSR}, backends4},
		{vipDNS4, VIPConfig{Mode: ModeDSR, NoConntrack: true, RingSize: smallRing}, backends4},
		{vipAll4, VIPConfig{Mode: ModeDSR, RingSize: smallRing}, backends4},
		{vipPass4, VIPConfig{Mode: ModeDSR, PassUnparseable: true, RingSize: smallRing}, backends4},
		{vipEmpty4, VIPConfig{Mode: ModeDSR, RingSize: smallRing}, nil},
		{vipSrc4, VIPConfig{Mode: ModeDSR, SourceHash: true, RingSize: smallRing}, backends4},
		{vipWeb6, VIPConfig{Mode: ModeDSR}, backends6},
		{vipDNS6, VIPConfig{Mode: ModeDSR, RingSize: smallRing}, backends6},
	}
}

func provision(tb testing.TB, d *Datapath) {
	tb.Helper()
	for _, p := range fixtureState() {
		if err := d.AddVIP(p.vip, p.cfg, p.backends); err != nil {
			tb.Fatalf("AddVIP(%s): %v", p.vip, err)
		}
	}
}

func lookupProvisioned(vip VIP) provisioned {
	for _, p := range fixtureState() {
		if p.vip == vip {
			return p
		}
	}
	panic("no such fixture vip " + vip.String())
}

// fixture is one Katran-style case: a packet in, a verdict and a packet
// out, and the counters that must move.
type fixture struct {
	name string
	in   testpacket.Packet
	// raw, if set, replaces in.Build() (for malformed frames).
	raw func(b []byte) []byte
	// forwardTo is the VIP whose ring must choose the backend; the
	// expected frame is the dsr rewrite towards that backend. Zero VIP
	// means the packet must come out untouched.
	forwardTo VIP
	verdict   uint32
	stats     map[Stat]uint64
}

func tcp4(dst string, sport, dport uint16) testpacket.Packet {
	return pkt(client4, dst, TCP, sport, dport)
}

func TestFixtures(t *testing.T) {
	d := newTestDatapath(t)
	provision(t, d)

	syn := func(p testpacket.Packet) testpacket.Packet { p.SYN = true; return p }
	vlan := func(p testpacket.Packet, ids ...uint16) testpacket.Packet { p.VLANs = ids; return p }

	cases := []fixture{
		{name: "v4 tcp syn to vip", in: syn(tcp4("203.0.113.10", 40001, 80)), forwardTo: vipWeb4, verdict: xdpTX,
			stats: map[Stat]uint64{StatCtSYN: 1, StatTxDSR: 1}},
		{name: "v4 tcp ack, no entry: miss and insert", in: tcp4("203.0.113.10", 40002, 80), forwardTo: vipWeb4, verdict: xdpTX,
			stats: map[Stat]uint64{StatCtMiss: 1, StatTxDSR: 1}},
		{name: "v4 tcp ack, same flow: hit", in: tcp4("203.0.113.10", 40002, 80), forwardTo: vipWeb4, verdict: xdpTX,
			stats: map[Stat]uint64{StatCtHit: 1, StatTxDSR: 1}},
		{name: "v4 udp to bypass vip", in: pkt(client4, "203.0.113.10", UDP, 5353, 53), forwardTo: vipDNS4, verdict: xdpTX,
			stats: map[Stat]uint64{StatCtBypass: 1, StatTxDSR: 1}},
		{name: "v4 udp to bypass vip again: still no entry", in: pkt(client4, "203.0.113.10", UDP, 5353, 53), forwardTo: vipDNS4, verdict: xdpTX,
			stats: map[Stat]uint64{StatCtBypass: 1, StatTxDSR: 1}},
		{name: "port-0 vip, any port", in: syn(tcp4("203.0.113.20", 40003, 12345)), forwardTo: vipAll4, verdict: xdpTX,
			stats: map[Stat]uint64{StatCtSYN: 1, StatTxDSR: 1}},
		{name: "port-0 vip, another port", in: tcp4("203.0.113.20", 40003, 22), forwardTo: vipAll4, verdict: xdpTX,
			stats: map[Stat]uint64{StatCtMiss: 1, StatTxDSR: 1}},
		{name: "source-hash vip", in: syn(tcp4("203.0.113.50", 40004, 443)), forwardTo: vipSrc4, verdict: xdpTX,
			stats: map[Stat]uint64{StatCtSYN: 1, StatTxDSR: 1}},
		{name: "802.1Q tag", in: vlan(syn(tcp4("203.0.113.10", 40005, 80)), 100), forwardTo: vipWeb4, verdict: xdpTX,
			stats: map[Stat]uint64{StatCtSYN: 1, StatTxDSR: 1}},
		{name: "two VLAN tags", in: vlan(tcp4("203.0.113.10", 40006, 80), 100, 200), forwardTo: vipWeb4, verdict: xdpTX,
			stats: map[Stat]uint64{StatCtMiss: 1, StatTxDSR: 1}},
		{name: "IPv4 options", in: func() testpacket.Packet {
			p := syn(tcp4("203.0.113.10", 40007, 80))
			p.IPv4Options = []byte{0x94, 0x04, 0, 0, 0x01, 0x01, 0x01, 0x00} // router alert, NOPs, EOL
			return p
		}(), forwardTo: vipWeb4, verdict: xdpTX, stats: map[Stat]uint64{StatCtSYN: 1, StatTxDSR: 1}},
		{name: "IPv4 options, 40 bytes", in: func() testpacket.Packet {
			p := tcp4("203.0.113.10", 40008, 80)
			p.IPv4Options = append([]byte{0x07, 39, 4}, make([]byte, 36)...) // record route, max size
			return p
		}(), forwardTo: vipWeb4, verdict: xdpTX, stats: map[Stat]uint64{StatCtMiss: 1, StatTxDSR: 1}},

		{name: "v6 tcp syn", in: syn(pkt(client6, "2001:db8:ffff::10", TCP, 41001, 80)), forwardTo: vipWeb6, verdict: xdpTX,
			stats: map[Stat]uint64{StatCtSYN: 1, StatTxDSR: 1}},
		{name: "v6 tcp ack, miss", in: pkt(client6, "2001:db8:ffff::10", TCP, 41002, 80), forwardTo: vipWeb6, verdict: xdpTX,
			stats: map[Stat]uint64{StatCtMiss: 1, StatTxDSR: 1}},
		{name: "v6 tcp ack, hit", in: pkt(client6, "2001:db8:ffff::10", TCP, 41002, 80), forwardTo: vipWeb6, verdict: xdpTX,
			stats: map[Stat]uint64{StatCtHit: 1, StatTxDSR: 1}},
		{name: "v6 udp, miss", in: pkt(client6, "2001:db8:ffff::10", UDP, 41003, 53), forwardTo: vipDNS6, verdict: xdpTX,
			stats: map[Stat]uint64{StatCtMiss: 1, StatTxDSR: 1}},
		{name: "v6 udp, hit", in: pkt(client6, "2001:db8:ffff::10", UDP, 41003, 53), forwardTo: vipDNS6, verdict: xdpTX,
			stats: map[Stat]uint64{StatCtHit: 1, StatTxDSR: 1}},
		{name: "v6 hop-by-hop and destination options", in: func() testpacket.Packet {
			p := syn(pkt(client6, "2001:db8:ffff::10", TCP, 41004, 80))
			p.IPv6Ext = []testpacket.IPv6Ext{testpacket.HopByHop(), testpacket.DestOpts()}
			return p
		}(), forwardTo: vipWeb6, verdict: xdpTX, stats: map[Stat]uint64{StatCtSYN: 1, StatTxDSR: 1}},
		{name: "v6 atomic fragment header (offset 0, no M)", in: func() testpacket.Packet {
			p := pkt(client6, "2001:db8:ffff::10", UDP, 41005, 53)
			p.IPv6Ext = []testpacket.IPv6Ext{testpacket.Fragment(0, false)}
			return p
		}(), forwardTo: vipDNS6, verdict: xdpTX, stats: map[Stat]uint64{StatCtMiss: 1, StatTxDSR: 1}},
		{name: "v6 ext chain longer than the walk", in: func() testpacket.Packet {
			p := pkt(client6, "2001:db8:ffff::10", TCP, 41006, 80)
			p.IPv6Ext = []testpacket.IPv6Ext{testpacket.HopByHop(), testpacket.DestOpts(), testpacket.DestOpts(), testpacket.DestOpts(), testpacket.DestOpts()}
			return p
		}(), verdict: xdpDrop, stats: map[Stat]uint64{StatDropMalformed: 1}},

		// Not ours: untouched, to the host.
		{name: "v4 to no vip", in: tcp4("203.0.113.99", 40010, 80), verdict: xdpPass, stats: map[Stat]uint64{StatPassNoVIP: 1}},
		{name: "v4 to vip address, other port", in: tcp4("203.0.113.10", 40011, 8080), verdict: xdpPass, stats: map[Stat]uint64{StatPassNoVIP: 1}},
		{name: "v4 udp to tcp-only vip port", in: pkt(client4, "203.0.113.10", UDP, 40012, 80), verdict: xdpPass, stats: map[Stat]uint64{StatPassNoVIP: 1}},
		{name: "v6 to no vip", in: pkt(client6, "2001:db8:ffff::99", TCP, 41010, 80), verdict: xdpPass, stats: map[Stat]uint64{StatPassNoVIP: 1}},
		{name: "ICMP to vip address", in: pkt(client4, "203.0.113.10", Proto(layers.IPProtocolICMPv4), 0, 0), verdict: xdpPass, stats: map[Stat]uint64{StatPassNotL4: 1}},
		{name: "ICMPv6 to vip address", in: pkt(client6, "2001:db8:ffff::10", Proto(layers.IPProtocolICMPv6), 0, 0), verdict: xdpPass, stats: map[Stat]uint64{StatPassNotL4: 1}},
		{name: "ARP", in: tcp4("203.0.113.10", 1, 80), raw: func(b []byte) []byte {
			b[12], b[13] = 0x08, 0x06
			return b[:42]
		}, verdict: xdpPass, stats: map[Stat]uint64{StatPassNotIP: 1}},

		// Truncated and malformed.
		// BPF_PROG_RUN refuses frames under 14 bytes, so the shortest
		// case is an Ethernet header that announces IPv4 and ends.
		{name: "ethernet header only", in: tcp4("203.0.113.10", 1, 80), raw: func(b []byte) []byte { return b[:14] },
			verdict: xdpPass, stats: map[Stat]uint64{StatPassNotIP: 1}},
		{name: "truncated VLAN tag", in: vlan(tcp4("203.0.113.10", 1, 80), 5), raw: func(b []byte) []byte { return b[:16] },
			verdict: xdpPass, stats: map[Stat]uint64{StatPassNotIP: 1}},
		{name: "truncated IPv4 header", in: tcp4("203.0.113.10", 1, 80), raw: func(b []byte) []byte { return b[:14+19] },
			verdict: xdpPass, stats: map[Stat]uint64{StatPassNotIP: 1}},
		{name: "truncated IPv6 header", in: pkt(client6, "2001:db8:ffff::10", TCP, 1, 80), raw: func(b []byte) []byte { return b[:14+39] },
			verdict: xdpPass, stats: map[Stat]uint64{StatPassNotIP: 1}},
		{name: "TCP header cut to 19 bytes for a vip", in: tcp4("203.0.113.10", 40013, 80), raw: func(b []byte) []byte {
			b = b[:14+20+19]
			b[16], b[17] = 0, 20+19 // tot_len consistent with the cut
			return b
		}, verdict: xdpDrop, stats: map[Stat]uint64{StatDropMalformed: 1}},
		{name: "tot_len beyond the frame", in: tcp4("203.0.113.10", 40014, 80), raw: func(b []byte) []byte {
			b[16], b[17] = 0x05, 0xdc
			return b
		}, verdict: xdpDrop, stats: map[Stat]uint64{StatDropMalformed: 1}},
		{name: "IHL below 5", in: tcp4("203.0.113.10", 40015, 80), raw: func(b []byte) []byte {
			b[14] = 0x44
			return b
		}, verdict: xdpDrop, stats: map[Stat]uint64{StatDropMalformed: 1}},
		{name: "IPv4 version field 6 in an IPv4 frame", in: tcp4("203.0.113.10", 40016, 80), raw: func(b []byte) []byte {
			b[14] = 0x65
			return b
		}, verdict: xdpDrop, stats: map[Stat]uint64{StatDropMalformed: 1}},
		{name: "TCP data offset below 5", in: tcp4("203.0.113.10", 40017, 80), raw: func(b []byte) []byte {
			b[14+20+12] = 0x40
			return b
		}, verdict: xdpDrop, stats: map[Stat]uint64{StatDropMalformed: 1}},
		{name: "UDP length below 8", in: pkt(client4, "203.0.113.10", UDP, 40018, 53), raw: func(b []byte) []byte {
			b[14+20+4], b[14+20+5] = 0, 7
			return b
		}, verdict: xdpDrop, stats: map[Stat]uint64{StatDropMalformed: 1}},
		{name: "IPv6 payload length beyond the frame", in: pkt(client6, "2001:db8:ffff::10", TCP, 41011, 80), raw: func(b []byte) []byte {
			b[18], b[19] = 0x05, 0xdc
			return b
		}, verdict: xdpDrop, stats: map[Stat]uint64{StatDropMalformed: 1}},
		{name: "malformed, to no vip: host's business", in: tcp4("203.0.113.99", 40019, 80), raw: func(b []byte) []byte {
			b[14] = 0x44
			return b
		}, verdict: xdpPass, stats: map[Stat]uint64{StatPassNoVIP: 1}},
		{name: "malformed, to a pass vip", in: tcp4("203.0.113.30", 40020, 80), raw: func(b []byte) []byte {
			b[14] = 0x44
			return b
		}, verdict: xdpPass, stats: map[Stat]uint64{StatPassUnparseable: 1}},

		// Fragments.
		{name: "IPv4 first fragment (MF) to vip", in: func() testpacket.Packet {
			p := tcp4("203.0.113.10", 40021, 80)
			p.MoreFragments = true
			return p
		}(), verdict: xdpDrop, stats: map[Stat]uint64{StatDropFragment: 1}},
		{name: "IPv4 later fragment to vip", in: func() testpacket.Packet {
			p := pkt(client4, "203.0.113.10", UDP, 40022, 53)
			p.FragOffset = 185
			return p
		}(), verdict: xdpDrop, stats: map[Stat]uint64{StatDropFragment: 1}},
		{name: "IPv4 fragment to a pass vip", in: func() testpacket.Packet {
			p := tcp4("203.0.113.30", 40023, 80)
			p.FragOffset = 185
			return p
		}(), verdict: xdpPass, stats: map[Stat]uint64{StatPassUnparseable: 1}},
		{name: "IPv4 fragment to no vip", in: func() testpacket.Packet {
			p := tcp4("203.0.113.99", 40024, 80)
			p.MoreFragments = true
			return p
		}(), verdict: xdpPass, stats: map[Stat]uint64{StatPassNoVIP: 1}},
		{name: "IPv6 fragment to vip", in: func() testpacket.Packet {
			p := pkt(client6, "2001:db8:ffff::10", UDP, 41012, 53)
			p.IPv6Ext = []testpacket.IPv6Ext{testpacket.Fragment(0, true)}
			return p
		}(), verdict: xdpDrop, stats: map[Stat]uint64{StatDropFragment: 1}},

		{name: "vip without backends", in: pkt(client4, "203.0.113.40", UDP, 40025, 80), verdict: xdpDrop,
			stats: map[Stat]uint64{StatDropNoBackend: 1}},
	}

	for i, c := range cases {
		t.Run(fmt.Sprintf("%02d %s", i, c.name), func(t *testing.T) {
			in := c.in.Build()
			if c.raw != nil {
				in = c.raw(in)
			}
			want := bytes.Clone(in)
			if c.forwardTo != (VIP{}) {
				p := lookupProvisioned(c.forwardTo)
				be := expectBackend(t, p.backends, p.cfg.RingSize, c.in.Src, c.in.Dst, c.in.Sport, c.in.Dport, Proto(c.in.Proto), p.cfg.SourceHash)
				want = dsrRewrite(in, be.MAC)
			}
			before, err := d.Counters()
			if err != nil {
				t.Fatal(err)
			}
			verdict, out := runProg(t, d.Program(), bytes.Clone(in))
			after, err := d.Counters()
			if err != nil {
				t.Fatal(err)
			}
			if verdict != c.verdict {
				t.Errorf("verdict = %s, want %s", verdictNames[verdict], verdictNames[c.verdict])
			}
			if !bytes.Equal(out, want) {
				t.Errorf("output frame differs:\n%s", hexDiff(out, want))
			}
			if got := statsDelta(before, after); formatStats(got) != formatStats(c.stats) {
				t.Errorf("counters moved %s, want %s", formatStats(got), formatStats(c.stats))
			}
		})
	}
}

// TestVIPAndBackendCounters checks the per-VIP and per-backend counters
// against the fixture traffic that reached them.
func TestVIPAndBackendCounters(t *testing.T) {
	d := newTestDatapath(t)
	provision(t, d)
	in := pkt(client4, "203.0.113.10", UDP, 7000, 53).Build()
	const n = 5
	for range n {
		runProg(t, d.Program(), bytes.Clone(in))
	}
	p := lookupProvisioned(vipDNS4)
	be := expectBackend(t, p.backends, p.cfg.RingSize, addr(client4), vipDNS4.Addr, 7000, 53, UDP, false)
	c, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	want := Counter{Packets: n, Bytes: n * uint64(len(in))}
	if got := c.VIPs[vipDNS4]; got != want {
		t.Errorf("vip %s counter = %+v, want %+v", vipDNS4, got, want)
	}
	for _, b := range p.backends {
		w := Counter{}
		if b.Addr == be.Addr {
			w = want
		}
		if got := c.Backends[vipDNS4][b.Addr]; got != w {
			t.Errorf("backend %s counter = %+v, want %+v", b.Addr, got, w)
		}
	}
	if got := c.VIPs[vipWeb4]; got != (Counter{}) {
		t.Errorf("vip %s counter = %+v, want zero", vipWeb4, got)
	}
}

// send runs one packet and returns the backend MAC it went to, or fails.
func sendTo(t *testing.T, d *Datapath, p testpacket.Packet) netip.Addr {
	t.Helper()
	verdict, out := runProg(t, d.Program(), p.Build())
	if verdict != xdpTX {
		t.Fatalf("%v:%d -> %v:%d: verdict %s, want XDP_TX", p.Src, p.Sport, p.Dst, p.Dport, verdictNames[verdict])
	}
	for _, set := range [][]Backend{backends4, backends6} {
		for _, b := range set {
			if bytes.Equal(out[0:6], b.MAC) {
				return b.Addr
			}
		}
	}
	t.Fatalf("frame went to unknown MAC %x", out[0:6])
	return netip.Addr{}
}
