package perf

import (
	"bytes"
	"strings"
	"testing"
)

// TestKeyedLines: the table ends with one `control KEY ms=N` line per keyed
// figure, in its order, the median converted to ms; unkeyed figures and
// figures in units that are not durations give none.
func TestKeyedLines(t *testing.T) {
	res := sampleResults()
	for _, f := range []Figure{
		newFigure(SectionControl, "API add backend → live ring, 1 VIP", "ms", []float64{4, 6, 5}),
		newFigure(SectionControl, "API apply of 1000 VIPs", "s", []float64{1.5, 2.5, 2}),
		newFigure(SectionControl, "BPF map memory", "MiB", []float64{752}),
		newFigure(SectionControl, "daemon RSS", "MiB", []float64{100}),
	} {
		res.add(f)
	}
	res.Figures[len(res.Figures)-4].Key = "api-live-1vip"
	res.Figures[len(res.Figures)-3].Key = "apply-1000vip"
	res.Figures[len(res.Figures)-2].Key = "memory" // not a duration: no line
	var out bytes.Buffer
	res.PrintTable(&out)
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if strings.HasPrefix(l, "control ") {
			got = append(got, l)
		}
	}
	want := []string{"control api-live-1vip ms=5.00", "control apply-1000vip ms=2000.00"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("control lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if last := lines[len(lines)-1]; last != want[len(want)-1] {
		t.Fatalf("the table ends with %q, want the control lines last", last)
	}
}
