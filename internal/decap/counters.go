package decap

import "fmt"

// The counters, by their index in enum decap_stat. A packet moves exactly
// one verdict counter (pass_not_encap, pass_foreign, drop_malformed,
// drop_ecn, decap); a decapsulated one also moves one family counter
// (decap_4in4 ...) and, if it carried a congestion mark, decap_ce.
var counterNames = [...]string{
	decapDecapStatDECAP_STAT_PASS_NOT_ENCAP: "pass_not_encap",
	decapDecapStatDECAP_STAT_PASS_FOREIGN:   "pass_foreign",
	decapDecapStatDECAP_STAT_DROP_MALFORMED: "drop_malformed",
	decapDecapStatDECAP_STAT_DROP_ECN:       "drop_ecn",
	decapDecapStatDECAP_STAT_DECAP:          "decap",
	decapDecapStatDECAP_STAT_DECAP_4IN4:     "decap_4in4",
	decapDecapStatDECAP_STAT_DECAP_6IN4:     "decap_6in4",
	decapDecapStatDECAP_STAT_DECAP_4IN6:     "decap_4in6",
	decapDecapStatDECAP_STAT_DECAP_6IN6:     "decap_6in6",
	decapDecapStatDECAP_STAT_CE:             "decap_ce",
}

// A compile-time check that every counter has a name, and the table in
// C as many entries as the enum.
var (
	_ [int(decapDecapStatDECAP_STAT_MAX) - len(counterNames)]struct{}
	_ [len(decapDecapStatTable{}.Count) - len(counterNames)]struct{}
)

// CounterNames returns the names of the counters that Counters reports,
// verdicts first, in a stable order.
func CounterNames() []string {
	return append([]string(nil), counterNames[:]...)
}

// Counters reads the program's counters, summed over CPUs, by name (see
// CounterNames). Every name is present.
func (d *Decap) Counters() (map[string]uint64, error) {
	var perCPU []decapDecapStatTable
	if err := d.objs.DecapStats.Lookup(uint32(0), &perCPU); err != nil {
		return nil, fmt.Errorf("read decap counters: %w", err)
	}
	out := make(map[string]uint64, len(counterNames))
	for _, name := range counterNames {
		out[name] = 0
	}
	for _, cpu := range perCPU {
		for i, v := range cpu.Count {
			out[counterNames[i]] += v
		}
	}
	return out, nil
}
