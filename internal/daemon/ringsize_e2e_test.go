package daemon_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/require"
	"github.com/fulcrum-lb/fulcrum/internal/ringsize"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
)

// TestRingSizeAuto runs the daemon on a file whose root says ring_size:
// auto: every VIP's pinned ring has the size ringsize chooses for its
// backends and weights, the API and `fulcrum vip list` say that size, and
// `fulcrum config show` notes it. A reweight applied from the file that
// needs more slots gets a larger ring.
func TestRingSizeAuto(t *testing.T) {
	h := newHarness(t)
	auto := func(weights ...int) string {
		return strings.Replace(h.config(weights...), "vips:\n", "ring_size: auto\nvips:\n", 1)
	}
	h.writeConfig(auto())
	h.startDaemon()
	h.ringDigests() // every ring written

	// expect returns the size ringsize chooses for v's backends.
	expect := func(v api.VIP) uint32 {
		bs := make([]ringsize.Backend, len(v.Backends))
		for i, b := range v.Backends {
			bs[i] = ringsize.Backend{Name: b.Address.String(), Weight: b.Weight}
		}
		c, err := ringsize.Choose(bs, maglev.DefaultSize)
		if err != nil {
			t.Fatal(err)
		}
		return c.Size
	}
	// sizes waits until every pinned ring has the chosen size of its VIP
	// and the listing says it, and returns the sizes by VIP.
	sizes := func() map[string]uint32 {
		var out map[string]uint32
		require.Eventually(t, 10*time.Second, func() error {
			vips, rings, err := h.listedRings()
			if err != nil {
				return err
			}
			out = make(map[string]uint32)
			for _, v := range vips {
				want := expect(v)
				ring := len(ringOf(rings, v))
				if !v.RingSizeAuto || v.RingSizeMax != maglev.DefaultSize || v.RingSize != want || ring != int(want) {
					return fmt.Errorf("vip %s: listed auto=%v max %d size %d, pinned ring of %d slots; want auto up to %d, %d slots",
						v.VIPRef, v.RingSizeAuto, v.RingSizeMax, v.RingSize, ring, maglev.DefaultSize, want)
				}
				out[v.VIPRef.String()] = want
			}
			return nil
		})
		return out
	}
	web := "tcp/" + vip4.String() + ":80"
	before := sizes()
	if before[web] == 0 || before[web] >= maglev.DefaultSize {
		t.Fatalf("%d equal backends: %s has %d slots; want fewer than %d", len(h.topo.Backends), web, before[web], maglev.DefaultSize)
	}

	out, err := h.cli("vip", "list")
	if err != nil || !strings.Contains(out, fmt.Sprintf(" %d auto ", before[web])) {
		t.Errorf("fulcrum vip list does not say %d auto: %v\n%s", before[web], err, out)
	}
	out, err = h.cli("config", "show")
	if err != nil || strings.Count(out, fmt.Sprintf("ring_size: auto # chosen: %d slots\n", before[web])) == 0 {
		t.Errorf("fulcrum config show does not note the chosen size %d: %v\n%s", before[web], err, out)
	}

	// One backend of weight 1000 leaves the others a share that the small
	// ring cannot give within 1%.
	h.writeConfig(auto(1000, 1, 1))
	if out, err := h.cli("apply", "-f", h.cfgPath); err != nil {
		t.Fatalf("fulcrum apply: %v\n%s", err, out)
	}
	after := sizes()
	if after[web] <= before[web] {
		t.Errorf("after the reweight %s has %d slots, before %d; want more", web, after[web], before[web])
	}
	t.Logf("%s: %d slots with equal weights, %d with weights 1000, 1, 1", web, before[web], after[web])
}

// listedRings returns the VIPs the API lists and the rings pinned, read
// in that order.
func (h *harness) listedRings() ([]api.VIP, map[datapath.VIP][]netip.Addr, error) {
	vips, err := h.client.ListVIPs(bg())
	if err != nil {
		return nil, nil, err
	}
	rings, err := datapath.ReadRings(datapath.PinDir(h.dir, "e2e"))
	return vips, rings, err
}

// ringOf returns the pinned ring of the listed VIP v, nil if none.
func ringOf(rings map[datapath.VIP][]netip.Addr, v api.VIP) []netip.Addr {
	for k, r := range rings {
		if k.Addr == v.Address && k.Port == v.Port && k.Proto.String() == v.Protocol {
			return r
		}
	}
	return nil
}
