package datapath

import (
	"os"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/internal/require"
)

// newPinRoot mounts a private bpffs for one test.
func newPinRoot(t *testing.T) string {
	t.Helper()
	require.BPF(t)
	dir := t.TempDir()
	if err := EnsureBPFFS(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// TestAdoptPinnedState loads a datapath with pins, opens flows, drops the
// datapath as a killed daemon would, and loads again: the new datapath must
// see the same VIPs and backends, keep the connection table (established
// flows hit their entries) and the counters, and write nothing when told the
// same desired state. The VIPs are dsr and ipip: an ipip backend has no MAC
// (the mode uses none), and the six zero bytes the map holds for it must
// read back as none, or every restart would see every ipip VIP changed.
func TestAdoptPinnedState(t *testing.T) {
	dir := PinDir(newPinRoot(t), "test")
	d1, err := Load(Options{ConntrackEntries: 8192, PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if d1.Adopted() {
		t.Fatal("first load says it adopted state from an empty directory")
	}
	provision(t, d1)
	if err := d1.SetEncap(ipipEncap); err != nil {
		t.Fatal(err)
	}
	for vip, bs := range map[VIP][]Backend{vip4in4: remote4, vip6in6: remote6, vip4in6: remote6} {
		if err := d1.AddVIP(vip, VIPConfig{Mode: ModeIPIP, RingSize: smallRing}, bs); err != nil {
			t.Fatalf("AddVIP(%s): %v", vip, err)
		}
	}
	// Churn a little so allocations are not trivially dense.
	if err := d1.RemoveBackend(vipWeb4, backends4[0].Addr); err != nil {
		t.Fatal(err)
	}
	if err := d1.AddBackend(vipWeb4, backends4[0]); err != nil {
		t.Fatal(err)
	}
	flows := flowsByBackend(t, d1, vipWeb4, client4, 50)
	wantVIPs := d1.VIPs()
	c1, _ := d1.Counters()
	d1.Close()

	d2, err := Load(Options{ConntrackEntries: 8192, PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if !d2.Adopted() {
		t.Fatal("second load did not adopt the pinned state")
	}
	if got := d2.VIPs(); !reflect.DeepEqual(got, wantVIPs) {
		t.Fatalf("adopted VIPs differ:\ngot  %+v\nwant %+v", got, wantVIPs)
	}
	c2, _ := d2.Counters()
	if c2.Stat(StatTxDSR) != c1.Stat(StatTxDSR) || c2.VIPs[vipWeb4] != c1.VIPs[vipWeb4] {
		t.Fatalf("counters not kept: tx_dsr %d -> %d, vip %+v -> %+v", c1.Stat(StatTxDSR), c2.Stat(StatTxDSR), c1.VIPs[vipWeb4], c2.VIPs[vipWeb4])
	}
	var ringBefore, ringAfter balancerVipMeta
	if err := lookupMeta(d2, vipWeb4, &ringBefore); err != nil {
		t.Fatal(err)
	}
	for _, p := range fixtureState() {
		if err := d2.SetVIP(p.vip, p.cfg, p.backends); err != nil {
			t.Fatal(err)
		}
	}
	if err := lookupMeta(d2, vipWeb4, &ringAfter); err != nil {
		t.Fatal(err)
	}
	if ringBefore.RingSize == 0 || ringBefore.RingOffset != ringAfter.RingOffset {
		t.Fatalf("re-applying the same state published a new ring (offset %d -> %d)", ringBefore.RingOffset, ringAfter.RingOffset)
	}
	before, _ := d2.Counters()
	n := requireFlowsOn(t, d2, flows, "after the restart")
	after, _ := d2.Counters()
	if hits := statsDelta(before, after)[StatCtHit]; hits != uint64(n) {
		t.Fatalf("ct_hit moved by %d after the restart, want %d: the connection table was not kept", hits, n)
	}
	// New state after adoption must not reuse ids that adopted entries
	// hold: a new VIP with one backend, then the old flows once more.
	newVIP := VIP{Addr: addr("203.0.113.70"), Port: 80, Proto: TCP}
	if err := d2.AddVIP(newVIP, VIPConfig{Mode: ModeDSR, RingSize: smallRing}, backends4[2:]); err != nil {
		t.Fatal(err)
	}
	if got := sendTo(t, d2, pkt(client4, newVIP.Addr.String(), TCP, 61000, 80)); got != backends4[2].Addr {
		t.Fatalf("new vip's flow went to %s, want %s", got, backends4[2].Addr)
	}
	requireFlowsOn(t, d2, flows, "after adding a vip")
	if err := RemovePins(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("pin directory still there after RemovePins: %v", err)
	}
}
