package datapath

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket/layers"

	"github.com/fulcrum-lb/fulcrum/pkg/flowhash"
	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
	"github.com/fulcrum-lb/fulcrum/pkg/testpacket"
)

// XDP verdicts as BPF_PROG_RUN reports them.
const (
	xdpAborted  = 0
	xdpDrop     = 1
	xdpPass     = 2
	xdpTX       = 3
	xdpRedirect = 4
)

var verdictNames = map[uint32]string{0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}

// requireBPF skips on machines where BPF programs cannot be loaded. On the
// project's machines (root, kernel 6.18) it never skips.
func requireBPF(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("skipped: loading BPF programs needs root (CAP_BPF and CAP_NET_ADMIN)")
	}
}

func newTestDatapath(tb testing.TB) *Datapath {
	tb.Helper()
	requireBPF(tb)
	d, err := Load(Options{ConntrackEntries: 8192})
	if err != nil {
		tb.Fatalf("Load: %v", err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
}

// runProg pushes one packet through prog with BPF_PROG_RUN.
func runProg(tb testing.TB, prog *ebpf.Program, in []byte) (uint32, []byte) {
	tb.Helper()
	opts := ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+512)}
	ret, err := prog.Run(&opts)
	if err != nil {
		tb.Fatalf("BPF_PROG_RUN: %v", err)
	}
	return ret, opts.DataOut
}

// expectBackend computes, independently of the datapath's own state, which
// backend the ring gives a flow: Maglev over the backends' addresses and the
// Go flow hash.
func expectBackend(tb testing.TB, backends []Backend, ringSize uint32, src, dst netip.Addr, sport, dport uint16, proto Proto, sourceHash bool) Backend {
	tb.Helper()
	if ringSize == 0 {
		ringSize = maglev.DefaultSize
	}
	in := make([]maglev.Backend, len(backends))
	for i, b := range backends {
		in[i] = maglev.Backend{Name: b.Addr.String(), ID: uint32(i), Weight: b.Weight}
	}
	table, err := maglev.Build(in, ringSize)
	if err != nil {
		tb.Fatalf("maglev.Build: %v", err)
	}
	h := flowhash.Flow(src, dst, sport, dport, uint8(proto))
	if sourceHash {
		h = flowhash.Source(src, uint8(proto))
	}
	id := table[flowhash.Slot(h, ringSize)]
	if id == maglev.Unassigned {
		tb.Fatalf("ring has no backend for %v:%d -> %v:%d", src, sport, dst, dport)
	}
	return backends[id]
}

// dsrRewrite returns the frame the balancer must emit in dsr mode: source
// MAC = the received destination MAC, destination MAC = the backend's.
func dsrRewrite(in []byte, backend net.HardwareAddr) []byte {
	out := bytes.Clone(in)
	copy(out[6:12], in[0:6])
	copy(out[0:6], backend)
	return out
}

// hexDiff renders two frames side by side, 16 bytes a row, marking rows
// that differ.
func hexDiff(got, want []byte) string {
	var sb strings.Builder
	n := max(len(got), len(want))
	for off := 0; off < n; off += 16 {
		g := got[min(off, len(got)):min(off+16, len(got))]
		w := want[min(off, len(want)):min(off+16, len(want))]
		mark := "  "
		if !bytes.Equal(g, w) {
			mark = "!="
		}
		fmt.Fprintf(&sb, "%04x %s got %-32s want %s\n", off, mark, hex.EncodeToString(g), hex.EncodeToString(w))
	}
	return sb.String()
}

func statsDelta(before, after Counters) map[Stat]uint64 {
	out := make(map[Stat]uint64)
	for i := range after.Stats {
		if d := after.Stats[i] - before.Stats[i]; d != 0 {
			out[Stat(i)] = d
		}
	}
	return out
}

func formatStats(m map[Stat]uint64) string {
	var parts []string
	for _, s := range AllStats() {
		if v, ok := m[s]; ok {
			parts = append(parts, fmt.Sprintf("%s=%d", s, v))
		}
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// pkt starts a packet description from a client to a VIP.
func pkt(src, dst string, proto Proto, sport, dport uint16) testpacket.Packet {
	return testpacket.Packet{
		SrcMAC: mustMAC("02:00:00:00:aa:01"), DstMAC: mustMAC("02:00:00:00:1b:01"),
		Src: addr(src), Dst: addr(dst),
		Proto: layers.IPProtocol(proto), Sport: sport, Dport: dport,
		Payload: []byte("fulcrum"),
	}
}
