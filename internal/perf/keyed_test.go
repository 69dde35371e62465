package perf

import (
	"bytes"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
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

// TestProcCPU: this process's CPU time, by /proc/self/stat, grows while it
// spins, and by no more than the wall time it spun on its CPUs.
func TestProcCPU(t *testing.T) {
	before, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var used time.Duration
	for used < 50*time.Millisecond {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("after 20 s of spinning, %v of CPU by /proc/self/stat, want 50 ms or more", used)
		}
		for deadline := time.Now().Add(10 * time.Millisecond); time.Now().Before(deadline); {
		}
		after, err := procCPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		used = after - before
	}
	if wall := time.Since(start); used > wall*time.Duration(runtime.NumCPU())+20*time.Millisecond {
		t.Fatalf("%v of CPU in %v of wall time on %d CPUs", used, wall, runtime.NumCPU())
	}
}
