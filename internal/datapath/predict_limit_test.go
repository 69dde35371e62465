package datapath

import (
	"testing"
)

// TestPredictNewFlowLimit: for a new flow that a scheduler decides,
// Predict gives conntrack.new_flow_limit (explain's "unless the CPU is
// over new_flow_limit, when the ring decides"), and the condition holds:
// with a limit of one new flow per CPU, every flow the fast path guarded
// (ct_guard) went to Predict's RingBackend, not the scheduler's pick.
// Without a limit, or when an entry decides, it gives none.
func TestPredictNewFlowLimit(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  VIPConfig
	}{
		{"round-robin", rrCfg},
		{"least-conn", VIPConfig{Mode: ModeDSR, RingSize: smallRing, LeastConn: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := newTestDatapath(t)
			if err := d.AddVIP(vipLC4, c.cfg, backends4); err != nil {
				t.Fatal(err)
			}
			flow := func(sport uint16) Flow {
				return Flow{Src: addr(client4), Dst: vipLC4.Addr, Sport: sport, Dport: vipLC4.Port, Proto: TCP}
			}
			if p, err := d.Predict(flow(40000), true); err != nil || p.NewFlowLimit != 0 {
				t.Fatalf("no limit: Predict = %+v, %v; want NewFlowLimit 0", p, err)
			}
			if err := d.SetNewFlowLimit(1); err != nil {
				t.Fatal(err)
			}
			guarded := 0
			for i := range 12 {
				sport := uint16(40000 + i)
				p, err := d.Predict(flow(sport), true)
				if err != nil {
					t.Fatal(err)
				}
				if p.NewFlowLimit != 1 || !p.RingBackend.IsValid() {
					t.Fatalf("limit 1: Predict = %+v; want NewFlowLimit 1 and the ring's backend", p)
				}
				before, _ := d.Counters()
				in := pkt(client4, vipLC4.Addr.String(), TCP, sport, vipLC4.Port)
				in.SYN = true
				got := sendTo(t, d, in)
				after, _ := d.Counters()
				if statsDelta(before, after)[StatCtGuard] == 0 {
					// Under the limit: an entry, which decides from now.
					if q, err := d.Predict(flow(sport), false); err != nil || !q.Conntrack || q.NewFlowLimit != 0 {
						t.Fatalf("flow :%d with an entry: Predict = %+v, %v; want the entry's, no NewFlowLimit", sport, q, err)
					}
					continue
				}
				guarded++
				if got != p.RingBackend {
					t.Errorf("flow :%d over the limit went to %s, want the ring's %s", sport, got, p.RingBackend)
				}
			}
			// One new flow per CPU and second passes; 12 on a machine's
			// few CPUs within a second or two leave most over it.
			if guarded == 0 {
				t.Fatal("no flow of 12 was over a limit of 1 per CPU: the condition went untested")
			}
		})
	}
}
