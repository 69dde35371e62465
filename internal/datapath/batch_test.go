package datapath

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// TestSetVIPsBatch adds many VIPs with one SetVIPs, then changes some,
// leaves some alone and gets one wrong in a second batch: every VIP
// forwards where Predict says, established flows of changed VIPs keep their
// backends, and the bad change is refused at its index without touching its
// VIP.
func TestSetVIPsBatch(t *testing.T) {
	d := newTestDatapath(t)
	const n = 40
	vips := make([]VIP, n)
	var add []VIPChange
	for i := range vips {
		vips[i] = VIP{Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + i)}), Port: 80, Proto: TCP}
		add = append(add, VIPChange{VIP: vips[i], Config: VIPConfig{Mode: ModeDSR, RingSize: 251}, Backends: backends4})
	}
	for i, err := range d.SetVIPs(add) {
		if err != nil {
			t.Fatalf("SetVIPs: change %d (%s): %v", i, add[i].VIP, err)
		}
	}
	if got := len(d.VIPs()); got != n {
		t.Fatalf("%d VIPs after the batch, want %d", got, n)
	}
	// Every VIP is live: a SYN goes where the ring says, and so does the
	// ACK that follows (its connection entry).
	established := make(map[VIP]netip.Addr)
	for _, v := range vips {
		p := pkt(client4, v.Addr.String(), TCP, 40000, 80)
		want := expectBackend(t, backends4, 251, p.Src, p.Dst, p.Sport, p.Dport, TCP, false).Addr
		if got := sendTo(t, d, p); got != want {
			t.Fatalf("%s: packet went to %s, want %s", v, got, want)
		}
		established[v] = want
	}

	// Second batch: reweight the even VIPs so their rings change, leave the
	// odd ones alone, and give VIP 7 a bad backend set and VIP 9 twice.
	reweighted := slices.Clone(backends4)
	reweighted[0].Weight, reweighted[1].Weight = 20, 1
	bad := slices.Clone(backends4)
	bad[2].MAC = nil
	var change []VIPChange
	for i, v := range vips {
		switch {
		case i == 7:
			change = append(change, VIPChange{VIP: v, Config: VIPConfig{Mode: ModeDSR, RingSize: 251}, Backends: bad})
		case i == 9:
			c := VIPChange{VIP: v, Config: VIPConfig{Mode: ModeDSR, RingSize: 251}, Backends: backends4}
			change = append(change, c, c)
		case i%2 == 0:
			change = append(change, VIPChange{VIP: v, Config: VIPConfig{Mode: ModeDSR, RingSize: 251}, Backends: reweighted})
		default:
			change = append(change, VIPChange{VIP: v, Config: VIPConfig{Mode: ModeDSR, RingSize: 251}, Backends: backends4})
		}
	}
	errs := d.SetVIPs(change)
	for i, err := range errs {
		c := change[i]
		switch {
		case c.VIP == vips[7]:
			if err == nil || !strings.Contains(err.Error(), "MAC") || !strings.Contains(err.Error(), c.VIP.String()) {
				t.Errorf("change %d (vip 7, backend without MAC): err = %v, want one naming the vip and the MAC", i, err)
			}
		case c.VIP == vips[9] && i > 0 && change[i-1].VIP == vips[9]:
			if err == nil || !strings.Contains(err.Error(), "twice") {
				t.Errorf("change %d (vip 9 again): err = %v, want 'appears twice'", i, err)
			}
		case err != nil:
			t.Errorf("change %d (%s): %v", i, c.VIP, err)
		}
	}
	moved := 0
	for i, v := range vips {
		// The established flow stays on its backend whatever changed.
		ack := pkt(client4, v.Addr.String(), TCP, 40000, 80)
		if got := sendTo(t, d, ack); got != established[v] {
			t.Fatalf("%s: established flow moved from %s to %s", v, established[v], got)
		}
		// New flows follow the ring each VIP has now.
		want := backends4
		if i%2 == 0 && i != 7 {
			want = reweighted
		}
		for sport := uint16(41000); sport < 41020; sport++ {
			syn := pkt(client4, v.Addr.String(), TCP, sport, 80)
			syn.SYN = true
			exp := expectBackend(t, want, 251, syn.Src, syn.Dst, sport, 80, TCP, false).Addr
			if got := sendTo(t, d, syn); got != exp {
				t.Fatalf("%s: SYN :%d went to %s, want %s (%s)", v, sport, got, exp, ringName(i))
			}
			if exp != expectBackend(t, backends4, 251, syn.Src, syn.Dst, sport, 80, TCP, false).Addr {
				moved++
			}
		}
	}
	if moved == 0 {
		t.Fatal("the reweight moved no slot the SYNs hash to: the test proves nothing")
	}
	for _, s := range d.VIPs() {
		if s.VIP == vips[7] && !slices.EqualFunc(s.Backends, backends4, func(a, b Backend) bool { return a.Addr == b.Addr && a.Weight == b.Weight }) {
			t.Errorf("vip 7 changed after its change was refused: %+v", s.Backends)
		}
	}
}

func ringName(i int) string {
	if i%2 == 0 && i != 7 {
		return "reweighted"
	}
	return fmt.Sprintf("unchanged (vip %d)", i)
}

// TestRemoveVIPsBatch removes half of many VIPs, and one that does not
// exist, with one RemoveVIPs: the unknown one fails at its index, the
// removed ones pass to the host and are gone from VIPs, and the rest still
// forward where their rings say. A VIP added afterwards reuses a freed
// index with a ring of its own.
func TestRemoveVIPsBatch(t *testing.T) {
	d := newTestDatapath(t)
	const n = 20
	var add []VIPChange
	for i := range n {
		v := VIP{Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + i)}), Port: 80, Proto: TCP}
		add = append(add, VIPChange{VIP: v, Config: VIPConfig{Mode: ModeDSR, RingSize: 251}, Backends: backends4})
	}
	for i, err := range d.SetVIPs(add) {
		if err != nil {
			t.Fatalf("SetVIPs: change %d: %v", i, err)
		}
	}
	unknown := VIP{Addr: netip.AddrFrom4([4]byte{203, 0, 113, 99}), Port: 80, Proto: TCP}
	var remove []VIP
	for i := 0; i < n; i += 2 {
		remove = append(remove, add[i].VIP)
	}
	remove = append(remove, unknown)
	errs := d.RemoveVIPs(remove)
	for i, err := range errs {
		switch {
		case remove[i] == unknown:
			if err == nil || !strings.Contains(err.Error(), "no such vip") {
				t.Errorf("remove %s: err = %v, want 'no such vip'", unknown, err)
			}
		case err != nil:
			t.Errorf("remove %s: %v", remove[i], err)
		}
	}
	if got := len(d.VIPs()); got != n/2 {
		t.Fatalf("%d VIPs after removing %d of %d, want %d", got, n/2, n, n/2)
	}
	// The removed VIPs' rings are freed, not only unreachable: a grace
	// period after the removal, the arena's free slots are all but the
	// kept VIPs' rings.
	require.Eventually(t, 5*time.Second, func() error {
		free, retired := d.arena.freeSlots()
		if want := d.arena.size - uint32(n/2)*251; free != want || retired != 0 {
			return fmt.Errorf("%d arena slots free and %d retired, want %d free and none retired", free, retired, want)
		}
		return nil
	})
	for i, c := range add {
		p := pkt(client4, c.VIP.Addr.String(), TCP, 40000, 80)
		if i%2 == 0 {
			if verdict, _ := runProg(t, d.Program(), p.Build()); verdict != xdpPass {
				t.Fatalf("%s (removed): verdict %s, want XDP_PASS", c.VIP, verdictNames[verdict])
			}
			continue
		}
		want := expectBackend(t, backends4, 251, p.Src, p.Dst, p.Sport, p.Dport, TCP, false).Addr
		if got := sendTo(t, d, p); got != want {
			t.Fatalf("%s (kept): packet went to %s, want %s", c.VIP, got, want)
		}
	}
	if err := d.AddVIP(add[0].VIP, VIPConfig{Mode: ModeDSR, RingSize: 251}, backends4[:1]); err != nil {
		t.Fatal(err)
	}
	if got := sendTo(t, d, pkt(client4, add[0].VIP.Addr.String(), TCP, 40001, 80)); got != backends4[0].Addr {
		t.Fatalf("re-added %s with one backend: packet went to %s, want %s", add[0].VIP, got, backends4[0].Addr)
	}
}
