package perf

import (
	"bytes"
	"net"
	"net/netip"
	"runtime"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/internal/testpacket"
)

// TestGenFlows checks dsr-1m's generator: frame i on CPU 0 is flow
// i mod wide_flows, the source port from the flow's low 14 bits and the
// address from the rest, with checksums as a freshly built frame has them
// (byte for byte), wrapping at the end of the CPU's share.
func TestGenFlows(t *testing.T) {
	require.BPF(t)
	var objs perfObjects
	if err := loadPerfObjects(&objs, nil); err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	// The generator picks the flow set by the CPU it runs on.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	restore, err := pinThread(0)
	if err != nil {
		t.Fatal(err)
	}
	defer restore()

	const wide = rigWideFlows / 2 // CPU 0's share with two CPUs
	srcMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	dstMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
	for _, kind := range []string{FrameUDP, FrameTCP} {
		var plan perfGenPlan
		copy(plan.Frame[:], clientFrame(kind, srcMAC, dstMAC, rigClient, rigSportBase))
		plan.SportBase, plan.Flows, plan.WideFlows = rigSportBase, rigFlows, wide
		if err := objs.GenConfig.Put(uint32(0), plan); err != nil {
			t.Fatal(err)
		}
		// Start just before the last flow of the share, to see the wrap.
		start := uint64(3*wide - 2)
		seq := make([]uint64, runtime.NumCPU())
		seq[0] = start
		if err := objs.GenSeq.Put(uint32(0), seq); err != nil {
			t.Fatal(err)
		}
		for i := range uint64(4) {
			f := uint32((start + i) % wide)
			a := rigClient.As4()
			a[3] += byte(f >> 14)
			src := netip.AddrFrom4(a)
			want := clientFrame(kind, srcMAC, dstMAC, src, rigSportBase+uint16(f&(1<<14-1)))
			verdict, got := testpacket.Run(t, objs.GenFlows, make([]byte, genFrameLen))
			if verdict != testpacket.XDPTX {
				t.Fatalf("%s frame %d: verdict %s, want XDP_TX", kind, i, testpacket.VerdictNames[verdict])
			}
			if !bytes.Equal(got[:genFrameLen], want) {
				t.Errorf("%s frame %d (flow %d, %s): got the frame on the left\n%s", kind, i, f, src,
					testpacket.HexDiff(got[:genFrameLen], want))
			}
		}
	}
}
