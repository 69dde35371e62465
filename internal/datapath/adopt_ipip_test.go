package datapath

import (
	"reflect"
	"testing"
)

// TestAdoptIPIP: VIPs read back from the pins are the VIPs that were
// written. An ipip backend has no MAC (the mode uses none): the map's six
// zero bytes must read back as none, not as a MAC of zeros, or every
// restart sees every ipip VIP as changed and rewrites it. dsr backends
// keep theirs.
func TestAdoptIPIP(t *testing.T) {
	dir := PinDir(newPinRoot(t), "test")
	d1, err := Load(Options{ConntrackEntries: 8192, PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.SetEncap(ipipEncap); err != nil {
		t.Fatal(err)
	}
	for vip, bs := range map[VIP][]Backend{vip4in4: remote4, vip6in6: remote6, vip4in6: remote6} {
		if err := d1.AddVIP(vip, VIPConfig{Mode: ModeIPIP, RingSize: smallRing}, bs); err != nil {
			t.Fatalf("AddVIP(%s): %v", vip, err)
		}
	}
	if err := d1.AddVIP(vipWeb4, VIPConfig{Mode: ModeDSR, RingSize: smallRing}, backends4); err != nil {
		t.Fatal(err)
	}
	want := d1.VIPs()
	d1.Close()

	d2, err := Load(Options{ConntrackEntries: 8192, PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if !d2.Adopted() {
		t.Fatal("second load did not adopt the pinned state")
	}
	if got := d2.VIPs(); !reflect.DeepEqual(got, want) {
		t.Fatalf("adopted VIPs differ from those written:\ngot  %+v\nwant %+v", got, want)
	}
}
