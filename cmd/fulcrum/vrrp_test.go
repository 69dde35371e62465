package main

import (
	"testing"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

func TestVRRPShow(t *testing.T) {
	d := startDaemon(t)
	d.run(t, "vrrp").checkGolden(t, "vrrp.golden")
	checkJSON(t, d.run(t, "-o", "json", "vrrp"), newFake().vrrp)

	d.fake.update(func(f *fakeController) { f.vrrp = api.VRRP{State: "disabled"} })
	d.run(t, "vrrp").check(t, 0, "state:  disabled\n", "")
}

func TestVRRPHandoverAndResume(t *testing.T) {
	d := startDaemon(t)
	d.run(t, "vrrp", "handover").check(t, 0, "vrrp: handed over (priority 0 sent); 'fulcrum vrrp resume' lets this node preempt again\n", "")
	if got := d.fake.lastCall(); got != "VRRPHandover" {
		t.Errorf("last call %q, want VRRPHandover", got)
	}
	d.run(t, "vrrp", "resume").check(t, 0, "vrrp: hold lifted; this node may preempt again\n", "")
	if got := d.fake.lastCall(); got != "VRRPResume" {
		t.Errorf("last call %q, want VRRPResume", got)
	}
	d.run(t, "-o", "json", "vrrp", "handover").check(t, 0, "", "")
}
