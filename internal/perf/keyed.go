package perf

import (
	"fmt"
	"io"
)

// printKeyed writes one line per figure with a Key, in ms, for scripts:
//
//	control KEY ms=N
//
// N is the median of the figure's runs.
func printKeyed(w io.Writer, figs []Figure) {
	for _, f := range figs {
		if f.Key == "" {
			continue
		}
		ms, ok := toMS(f.Median, f.Unit)
		if !ok {
			continue
		}
		fmt.Fprintf(w, "control %s ms=%.2f\n", f.Key, ms)
	}
}

// toMS converts a value in unit (a duration's) to milliseconds.
func toMS(v float64, unit string) (float64, bool) {
	switch unit {
	case "ms":
		return v, true
	case "s":
		return v * 1e3, true
	case "ns/op":
		return v / 1e6, true
	}
	return 0, false
}
