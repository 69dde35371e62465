package perf

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Sections of the results, in the order they are printed.
const (
	SectionPackets     = "packet-rate"
	SectionConnections = "connection-rate"
	SectionControl     = "control-plane"
	SectionScale       = "scale"
)

// Figure is one measured quantity: every run, and their median, minimum and
// maximum.
type Figure struct {
	Section string `json:"section"`
	// Name identifies the figure within its section, e.g. "dsr udp 1cpu".
	Name string `json:"name"`
	// Config, Frame and CPUs describe packet-rate figures.
	Config string `json:"config,omitempty"`
	Frame  string `json:"frame,omitempty"`
	CPUs   int    `json:"cpus,omitempty"`

	Unit   string    `json:"unit"`
	Runs   []float64 `json:"runs"`
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	// Ratio is Median divided by the median of the figure RatioTo names.
	Ratio   float64 `json:"ratio,omitempty"`
	RatioTo string  `json:"ratio_to,omitempty"`
	// Command reproduces the figure.
	Command string `json:"command"`
	// Note says what else was seen: losses, breakdowns.
	Note string `json:"note,omitempty"`
	// Key names a control-plane figure that scripts read: PrintTable
	// ends with a line `control KEY ms=N` for it.
	Key string `json:"key,omitempty"`
	// Spread is how a packet-rate figure's frames were shared out among
	// the backends, over all its runs.
	Spread *Spread `json:"spread,omitempty"`
	// ConnTable is the connection table of a dsr-1m figure, over all its
	// runs.
	ConnTable *ConnTable `json:"conn_table,omitempty"`
}

// ConnTable is the state of a balancer's IPv4 connection table during a
// packet-rate figure: how full it was when the runs started, and what
// their lookups found.
type ConnTable struct {
	// Entries is the fewest the table held before a run, of Capacity.
	Entries  int `json:"entries"`
	Capacity int `json:"capacity"`
	// Hits are packets forwarded by their entry; Misses found none live
	// (evicted, expired or never made) and took the ring.
	Hits   uint64 `json:"hits"`
	Misses uint64 `json:"misses"`
}

// String says whether the table was full and whether it evicted.
func (t ConnTable) String() string {
	fill := "full"
	if t.Entries < t.Capacity {
		fill = fmt.Sprintf("%d free", t.Capacity-t.Entries)
	}
	state := "steady, no entry lost"
	if t.Misses > 0 {
		state = "evicting or expiring"
	}
	hitPct := 0.0
	if n := t.Hits + t.Misses; n > 0 {
		hitPct = 100 * float64(t.Hits) / float64(n)
	}
	return fmt.Sprintf("connection table %d of %d entries (%s); %.2f%% of lookups hit, %d missed (%s)",
		t.Entries, t.Capacity, fill, hitPct, t.Misses, state)
}

// Spread describes how evenly backends received frames.
type Spread struct {
	Backends int `json:"backends"`
	Received int `json:"received"` // backends that received any
	// MinPct and MaxPct are the smallest and largest backend's count as a
	// percentage of the mean.
	MinPct float64 `json:"min_pct"`
	MaxPct float64 `json:"max_pct"`
}

// newFigure computes a figure's statistics from its runs.
func newFigure(section, name, unit string, runs []float64) Figure {
	f := Figure{Section: section, Name: name, Unit: unit, Runs: slices.Clone(runs)}
	if len(runs) > 0 {
		f.Median = median(runs)
		f.Min = slices.Min(runs)
		f.Max = slices.Max(runs)
	}
	return f
}

// median returns the median of xs (the mean of the middle two for an even
// count), 0 for none.
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	switch {
	case len(s) == 0:
		return 0
	case len(s)%2 == 1:
		return s[len(s)/2]
	default:
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
}

// Results are everything a suite run measured.
type Results struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Kernel   string    `json:"kernel"`
	CPUs     int       `json:"cpus"`
	// Command is how the suite was run.
	Command string   `json:"command"`
	Figures []Figure `json:"figures"`
	// Errors lists the sections that failed, with why.
	Errors []string `json:"errors,omitempty"`
	// Notes are remarks about the run as a whole (skipped parts, limits).
	Notes []string `json:"notes,omitempty"`
}

// add records a figure, stamping it with the suite's command.
func (r *Results) add(f Figure) *Figure {
	if f.Command == "" {
		f.Command = r.Command
	}
	r.Figures = append(r.Figures, f)
	return &r.Figures[len(r.Figures)-1]
}

// find returns the figure of a section with the given name, or nil.
func (r *Results) find(section, name string) *Figure {
	for i := range r.Figures {
		if r.Figures[i].Section == section && r.Figures[i].Name == name {
			return &r.Figures[i]
		}
	}
	return nil
}

// section returns the figures of one section, in the order they were added.
func (r *Results) section(s string) []Figure {
	var out []Figure
	for _, f := range r.Figures {
		if f.Section == s {
			out = append(out, f)
		}
	}
	return out
}

// WriteJSON writes the results to dir/results.json.
func (r *Results) WriteJSON(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "results.json")
	return path, os.WriteFile(path, append(b, '\n'), 0o644)
}

// packetName names a packet-rate figure.
func packetName(config, frame string, cpus int) string {
	return fmt.Sprintf("%s %s %dcpu", config, frame, cpus)
}

// display renders a figure's value for the table: ns/op in ms, one run
// without a range.
func display(f Figure) string {
	unit, scale := f.Unit, 1.0
	if unit == "ns/op" {
		unit, scale = "ms/op", 1e-6
	}
	g := Figure{Median: f.Median * scale, Min: f.Min * scale, Max: f.Max * scale}
	prec := 2
	if g.Median >= 1000 {
		prec = 0
	}
	if len(f.Runs) == 1 {
		return fmt.Sprintf("%.*f %s (1 run)", prec, g.Median, unit)
	}
	return fmt.Sprintf("%-28s %s", span(g, prec), unit)
}

// span renders "median [min–max]" with the given precision.
func span(f Figure, prec int) string {
	return fmt.Sprintf("%.*f [%.*f–%.*f]", prec, f.Median, prec, f.Min, prec, f.Max)
}

// PrintTable writes the human-readable table, ending with one line per
// packet-rate configuration that scripts read:
//
//	e2e CONFIG mpps=N x_ceiling=R
//
// for each of E2EConfigs, taken from the UDP, 1 vCPU figures.
func (r *Results) PrintTable(w io.Writer) {
	fmt.Fprintf(w, "\nFulcrum benchmark suite — kernel %s, %d vCPUs, %s\n", r.Kernel, r.CPUs, r.Started.UTC().Format(time.RFC3339))

	if figs := r.section(SectionPackets); len(figs) > 0 {
		fmt.Fprintf(w, "\nPacket rate: generator ─ LB ─ sink over veth, 64-byte frames, %d flows per CPU; Mpps delivered, median [min–max] of %d runs; x = ratio to the ceiling\n", rigFlows, len(figs[0].Runs))
		fmt.Fprintf(w, "  %-10s %-8s %-26s %6s   %-26s %6s\n", "config", "frames", "1 vCPU", "x", "2 vCPUs", "x")
		for _, frame := range []string{FrameUDP, FrameTCP} {
			for _, c := range PacketConfigs {
				cols, measured := []string{}, false
				for _, cpus := range []int{1, 2} {
					f := r.find(SectionPackets, packetName(c, frame, cpus))
					if f == nil {
						cols = append(cols, fmt.Sprintf("%-26s %6s", "-", "-"))
						continue
					}
					measured = true
					cols = append(cols, fmt.Sprintf("%-26s %6.2f", span(*f, 2), f.Ratio))
				}
				if !measured { // a configuration left out (-perf.configs)
					continue
				}
				fmt.Fprintf(w, "  %-10s %-8s %s   %s\n", c, frame, cols[0], cols[1])
			}
		}
		// How the backends were served, per configuration over every
		// frame kind and CPU count.
		for _, c := range PacketConfigs {
			var parts []string
			for _, f := range figs {
				if f.Config != c || f.Spread == nil {
					continue
				}
				parts = append(parts, fmt.Sprintf("%s/%dcpu %d/%d at %.0f–%.0f%%", f.Frame, f.CPUs, f.Spread.Received, f.Spread.Backends, f.Spread.MinPct, f.Spread.MaxPct))
			}
			if len(parts) > 0 {
				fmt.Fprintf(w, "  %s backends receiving, at min–max %% of the mean: %s\n", c, strings.Join(parts, ", "))
			}
		}
		for _, f := range figs {
			if f.Note != "" {
				fmt.Fprintf(w, "  %s: %s\n", f.Name, f.Note)
			}
		}
	}

	if figs := r.section(SectionConnections); len(figs) > 0 {
		fmt.Fprintf(w, "\nConnection rate: client ─ router ─ LB ─ echo backends, real TCP (connect, write, read, close); median [min–max] of %d runs; x = ratio to direct\n", len(figs[0].Runs))
		for _, f := range figs {
			fmt.Fprintf(w, "  %-28s %-30s %-8s x %.2f", f.Name, span(f, 1), f.Unit, f.Ratio)
			if f.Note != "" {
				fmt.Fprintf(w, "   (%s)", f.Note)
			}
			fmt.Fprintln(w)
		}
	}

	for _, s := range []struct{ section, title string }{
		{SectionControl, "Control plane"},
		{SectionScale, "Scale"},
	} {
		figs := r.section(s.section)
		if len(figs) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s: median [min–max] of the runs\n", s.title)
		for _, f := range figs {
			fmt.Fprintf(w, "  %-60s %s", f.Name, display(f))
			if f.RatioTo != "" {
				fmt.Fprintf(w, "  x %.2f vs %s", f.Ratio, f.RatioTo)
			}
			fmt.Fprintln(w)
			if f.Note != "" {
				fmt.Fprintf(w, "      %s\n", f.Note)
			}
		}
	}

	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "FAILED: %s\n", e)
	}
	fmt.Fprintln(w)
	for _, c := range E2EConfigs {
		f := r.find(SectionPackets, packetName(c, FrameUDP, 1))
		if f == nil {
			continue
		}
		fmt.Fprintf(w, "e2e %s mpps=%.2f x_ceiling=%.2f\n", c, f.Median, f.Ratio)
	}
	printKeyed(w, r.Figures)
}

// kernelRelease returns uname -r.
func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}
