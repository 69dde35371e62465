package datapath

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"

	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
	"github.com/fulcrum-lb/fulcrum/pkg/flowhash"
	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
)

// The shared fast-path test helpers, under the names this package's tests use.
const (
	xdpAborted  = testpacket.XDPAborted
	xdpDrop     = testpacket.XDPDrop
	xdpPass     = testpacket.XDPPass
	xdpTX       = testpacket.XDPTX
	xdpRedirect = testpacket.XDPRedirect
)

var (
	verdictNames = testpacket.VerdictNames
	runProg      = testpacket.Run
	hexDiff      = testpacket.HexDiff
)

// onCPU runs f on a thread pinned to cpu, so that the packets it runs
// through BPF_PROG_RUN use that CPU's slot of the per-CPU maps.
func onCPU(cpu int, f func() error) error {
	done := make(chan error)
	go func() {
		// Never unlocked: the pinned thread ends with the goroutine.
		runtime.LockOSThread()
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			done <- fmt.Errorf("pin to cpu %d: %w", cpu, err)
			return
		}
		done <- f()
	}()
	return <-done
}

func newTestDatapath(tb testing.TB) *Datapath {
	tb.Helper()
	require.BPF(tb)
	d, err := Load(Options{ConntrackEntries: 8192})
	if err != nil {
		tb.Fatalf("Load: %v", err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
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
