package datapath

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
	"github.com/fulcrum-lb/fulcrum/pkg/flowhash"
	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
)

// The shared vectors, whose hashes pkg/flowhash is checked against too.
const vectorsPath = "../../pkg/flowhash/testdata/vectors.json"

// TestFlowHashMatchesGo runs the balancer program itself on the shared
// vectors and checks that it hashes each flow as pkg/flowhash does:
//   - the 5-tuple hash, in full: every vector's flow goes to an ipip VIP
//     with IPv6 backends, and the outer source the balancer writes carries
//     the hash in its low 32 bits (ipipEncap's /64 source prefix; encap.h
//     outer_source); the outer destination is the backend Go's Maglev
//     gives the hash's slot;
//   - the source hash, through the ring: every vector's client goes to a
//     source-hash VIP of its family and protocol (dsr) whose ring gives each
//     of its sourceRing slots a backend of its own, so the backend the
//     balancer picks (its MAC) names the slot, which must be
//     flowhash.Slot(Source, sourceRing).
//
// Every third packet carries a VLAN tag: the parser's offsets must not
// change the hash.
func TestFlowHashMatchesGo(t *testing.T) {
	vs, err := flowhash.LoadVectors(vectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	tag := func(i int, p testpacket.Packet) testpacket.Packet {
		if i%3 == 0 {
			p.VLANs = []uint16{42}
		}
		return p
	}

	t.Run("Flow", func(t *testing.T) {
		e := newIPIPEnv(t)
		var changes []VIPChange
		seen := make(map[VIP]bool)
		for _, v := range vs {
			vip := VIP{Addr: v.Dst, Port: v.Dport, Proto: Proto(v.Proto)}
			if !seen[vip] { // two vectors may share a VIP
				seen[vip] = true
				changes = append(changes, VIPChange{VIP: vip, Config: VIPConfig{Mode: ModeIPIP, RingSize: smallRing}, Backends: remote6})
			}
		}
		for i, err := range e.d.SetVIPs(changes) {
			if err != nil {
				t.Fatalf("SetVIPs %s: %v", changes[i].VIP, err)
			}
		}
		for i, v := range vs {
			p := tag(i, pkt(v.Src.String(), v.Dst.String(), Proto(v.Proto), v.Sport, v.Dport))
			verdict, out := e.run(t, p.Build())
			if verdict != xdpTX {
				t.Fatalf("vector %d: verdict %s, want XDP_TX", i, verdictNames[verdict])
			}
			// The outer IPv6 header follows the (kept) L2 header.
			outer := out[14+4*len(p.VLANs):]
			src, _ := netip.AddrFromSlice(outer[8:24])
			dst, _ := netip.AddrFromSlice(outer[24:40])
			if want := OuterSource(e.encap, v.Hash, true); src != want {
				t.Errorf("vector %d %v:%d -> %v:%d/%d: balancer hash %#08x (outer source %s), want %#08x (%s)",
					i, v.Src, v.Sport, v.Dst, v.Dport, v.Proto, binary.LittleEndian.Uint32(outer[20:24]), src, v.Hash, want)
			}
			if want := expectBackend(t, remote6, smallRing, v.Src, v.Dst, v.Sport, v.Dport, Proto(v.Proto), false).Addr; dst != want {
				t.Errorf("vector %d: balancer sent the flow to %s, want %s (ring slot %d of hash %#08x)",
					i, dst, want, flowhash.Slot(v.Hash, smallRing), v.Hash)
			}
		}
	})

	t.Run("Source", func(t *testing.T) {
		d := newTestDatapath(t)
		rings := map[bool]*slotRing{false: newSlotRing(t, false), true: newSlotRing(t, true)}
		vipOf := func(v6 bool, proto Proto) VIP {
			a := addr("203.0.113.200")
			if v6 {
				a = addr("2001:db8:ffff::200")
			}
			return VIP{Addr: a, Port: 80, Proto: proto}
		}
		var changes []VIPChange
		for _, v6 := range []bool{false, true} {
			for _, proto := range []Proto{TCP, UDP} {
				changes = append(changes, VIPChange{VIP: vipOf(v6, proto),
					Config: VIPConfig{Mode: ModeDSR, RingSize: sourceRing, SourceHash: true}, Backends: rings[v6].backends})
			}
		}
		for i, err := range d.SetVIPs(changes) {
			if err != nil {
				t.Fatalf("SetVIPs %s: %v", changes[i].VIP, err)
			}
		}
		for i, v := range vs {
			vip := vipOf(v.Src.Is6(), Proto(v.Proto))
			p := tag(i, pkt(v.Src.String(), vip.Addr.String(), vip.Proto, v.Sport, vip.Port))
			verdict, out := runProg(t, d.Program(), p.Build())
			if verdict != xdpTX {
				t.Fatalf("vector %d: verdict %s, want XDP_TX", i, verdictNames[verdict])
			}
			got, ok := rings[v.Src.Is6()].slotOf(out[0:6])
			if want := flowhash.Slot(v.Source, sourceRing); !ok || got != want {
				t.Errorf("vector %d %v/%d: balancer picked slot %d (backend MAC %x, known %v), want slot %d of source hash %#08x",
					i, v.Src, v.Proto, got, out[0:6], ok, want, v.Source)
			}
		}
	})
}

// sourceRing is the largest prime ring whose one-backend-a-slot VIPs, two
// families by two protocols, fit the backend map (4 × 65521 ≤ MaxBackends):
// a slot names the top 16 bits of the hash.
const sourceRing = 65521

// slotRing is a ring of sourceRing backends in which Maglev gives every
// backend exactly one slot (as many equal backends as slots: each claims
// one slot in the first round, which fills the table).
type slotRing struct {
	backends []Backend
	slot     map[[6]byte]uint32 // backend MAC -> its slot
}

func newSlotRing(t *testing.T, v6 bool) *slotRing {
	t.Helper()
	r := &slotRing{slot: make(map[[6]byte]uint32, sourceRing)}
	in := make([]maglev.Backend, sourceRing)
	for i := range uint32(sourceRing) {
		var a netip.Addr
		if v6 {
			a = netip.AddrFrom16([16]byte{0xfd, 12: byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
		} else {
			a = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		}
		mac := net.HardwareAddr{0x02, 0xfc, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
		r.backends = append(r.backends, Backend{Addr: a, MAC: mac, Weight: 1})
		in[i] = maglev.Backend{Name: a.String(), ID: i, Weight: 1}
	}
	table, err := maglev.Build(in, sourceRing)
	if err != nil {
		t.Fatalf("maglev.Build: %v", err)
	}
	for s, id := range table {
		mac := [6]byte(r.backends[id].MAC)
		if prev, dup := r.slot[mac]; dup {
			t.Fatalf("backend %d has slots %d and %d: the ring does not name slots", id, prev, s)
		}
		r.slot[mac] = uint32(s)
	}
	return r
}

// slotOf returns the slot of the backend with the MAC.
func (r *slotRing) slotOf(mac []byte) (uint32, bool) {
	s, ok := r.slot[[6]byte(mac)]
	return s, ok
}
