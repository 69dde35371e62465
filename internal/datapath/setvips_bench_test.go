package datapath

import (
	"net"
	"net/netip"
	"testing"
)

// bulkChanges returns vips VIPs of backends backends each, at the default
// ring size: the shape of the control-plane figures (internal/perf).
func bulkChanges(vips, backends int) []VIPChange {
	bs := make([]Backend, backends)
	for j := range bs {
		bs[j] = Backend{Addr: netip.AddrFrom4([4]byte{198, 18, byte(8 + j/250), byte(1 + j%250)}),
			MAC: net.HardwareAddr{0x02, 0xfc, 0x08, 0, byte(j >> 8), byte(j)}, Weight: 1}
	}
	out := make([]VIPChange, vips)
	for v := range out {
		out[v] = VIPChange{VIP: VIP{Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(1 + v%250)}), Port: uint16(1000 + v/250), Proto: TCP},
			Config: VIPConfig{Mode: ModeDSR}, Backends: bs}
	}
	return out
}

// BenchmarkSetVIPsBulk adds 1000 VIPs of 100 backends (M = 65537) with one
// SetVIPs and removes them again, timing the add.
func BenchmarkSetVIPsBulk(b *testing.B) {
	d := newTestDatapath(b)
	changes := bulkChanges(1000, 100)
	vips := make([]VIP, len(changes))
	for i, c := range changes {
		vips[i] = c.VIP
	}
	for b.Loop() {
		for i, err := range d.SetVIPs(changes) {
			if err != nil {
				b.Fatalf("change %d: %v", i, err)
			}
		}
		b.StopTimer()
		for i, err := range d.RemoveVIPs(vips) {
			if err != nil {
				b.Fatalf("remove %s: %v", vips[i], err)
			}
		}
		b.StartTimer()
	}
}

// BenchmarkSetVIPOne changes one backend's weight of one VIP of 100
// backends (M = 65537), back and forth: the datapath's share of an API
// edit (the api-live figures), a build and the ring's publication.
func BenchmarkSetVIPOne(b *testing.B) {
	d := newTestDatapath(b)
	c := bulkChanges(1, 100)[0]
	if err := d.SetVIP(c.VIP, c.Config, c.Backends); err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		if err := d.SetWeight(c.VIP, c.Backends[0].Addr, uint32(1+i%2)); err != nil {
			b.Fatal(err)
		}
	}
}
