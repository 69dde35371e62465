package datapath

import (
	"encoding/binary"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/fulcrum-lb/fulcrum/internal/datapath/testprogs"
	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
	"github.com/fulcrum-lb/fulcrum/pkg/flowhash"
)

// TestFlowHashMatchesGo runs the C flow hash (bpf/flowhash.h, behind the
// balancer's own parser) on the shared vectors and compares it with the
// vectors' hashes, which pkg/flowhash is checked against too.
func TestFlowHashMatchesGo(t *testing.T) {
	require.BPF(t)
	var objs testprogs.TestprogsObjects
	if err := testprogs.LoadTestprogsObjects(&objs, nil); err != nil {
		t.Fatalf("load test programs: %v", err)
	}
	defer objs.Close()

	vs, err := flowhash.LoadVectors("../../pkg/flowhash/testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vs {
		p := testpacket.Packet{Src: v.Src, Dst: v.Dst, Proto: layers.IPProtocol(v.Proto), Sport: v.Sport, Dport: v.Dport}
		if i%3 == 0 {
			p.VLANs = []uint16{42} // the parser's offsets must not change the hash
		}
		verdict, out := runProg(t, objs.TestFlowhash, p.Build())
		if verdict != xdpPass {
			t.Fatalf("vector %d: verdict %s, want XDP_PASS (the probe parsed nothing)", i, verdictNames[verdict])
		}
		if got := binary.LittleEndian.Uint32(out[0:4]); got != v.Hash {
			t.Errorf("vector %d %v:%d -> %v:%d/%d: C hash %#08x, want %#08x", i, v.Src, v.Sport, v.Dst, v.Dport, v.Proto, got, v.Hash)
		}
		if got := binary.LittleEndian.Uint32(out[4:8]); got != v.Source {
			t.Errorf("vector %d %v/%d: C source hash %#08x, want %#08x", i, v.Src, v.Proto, got, v.Source)
		}
	}
}
