package main

import (
	"encoding/json"
	"regexp"
	"testing"
)

// TestNodeDrain: drain withdraws, waits while the VIP packet count grows,
// and reports once it has been still for --quiet.
func TestNodeDrain(t *testing.T) {
	d := startDaemon(t)
	d.fake.update(func(f *fakeController) {
		f.bgp = testBGP()
		f.bgp.Peers[0].Advertised = 0
		// Five reads with traffic, then none.
		f.bgpPackets = []uint64{100, 150, 200, 250, 300}
	})
	r := d.run(t, "node", "drain", "--quiet", "300ms", "--wait", "20s")
	want := regexp.MustCompile(`^node: drained; withdrawn: 203.0.113.10/32, 2001:db8:ffff::10/128
node: traffic stopped ([0-9.]+m?s) after the drain \(200 VIP packets meanwhile, none for 300ms since\)
$`)
	if r.code != 0 || r.stderr != "" || !want.MatchString(r.stdout) {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 0 and %s", r.code, r.stdout, r.stderr, want)
	}
	if got := d.fake.lastCall(); got != "BGP" {
		t.Errorf("last call %q, want BGP (the wait's reads)", got)
	}
	d.fake.mu.Lock()
	if !d.fake.bgp.Drained || d.fake.calls[0] != "NodeDrain resume=false" {
		t.Errorf("drained %v, first call %q; want drained by NodeDrain resume=false", d.fake.bgp.Drained, d.fake.calls[0])
	}
	d.fake.mu.Unlock()

	d.run(t, "node", "resume").check(t, 0, "node: resumed; VIPs are announced again where this node can serve them\n", "")
	if got := d.fake.lastCall(); got != "NodeDrain resume=true" {
		t.Errorf("last call %q", got)
	}
}

// TestNodeDrainTimeout: traffic that keeps coming, or a peer that still
// holds a prefix, ends the wait with an error that says so.
func TestNodeDrainTimeout(t *testing.T) {
	d := startDaemon(t)
	packets := make([]uint64, 1000)
	for i := range packets {
		packets[i] = uint64(i)
	}
	d.fake.update(func(f *fakeController) { f.bgp = testBGP(); f.bgpPackets = packets })
	r := d.run(t, "-o", "json", "node", "drain", "--quiet", "1s", "--wait", "500ms")
	if r.code != 1 || r.stderr != "fulcrum: node drain: the node is drained, but traffic did not stop in time; the routers may not have converged ('fulcrum bgp' shows the sessions)\n" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	var rep drainReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Stopped || rep.Packets == 0 || len(rep.Withdrawn) != 2 || len(rep.Holding) != 1 || rep.Holding[0].String() != "198.18.0.1" {
		t.Errorf("report %+v", rep)
	}

	d.run(t, "node", "drain", "--quiet", "0s").check(t, 2, "", "fulcrum: node drain: --wait must not be negative and --quiet must be above zero\n")
}
