package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// printJSON writes v as indented JSON, for scripts.
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// newTable returns a writer that aligns tab-separated columns, for
// people. Call Flush when done.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
}

// row writes one table row.
func row(w io.Writer, cells ...any) {
	for i, c := range cells {
		if i > 0 {
			io.WriteString(w, "\t")
		}
		fmt.Fprint(w, c)
	}
	io.WriteString(w, "\n")
}

// scaled renders v with an SI prefix (k, M, G, T, P): 950, 1.2k, 3.4M.
// Values under 1000 keep one decimal only when they have a fraction.
func scaled(v float64, space string) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "?"
	}
	if v < 1000 {
		if v == math.Trunc(v) {
			return fmt.Sprintf("%.0f%s", v, space)
		}
		return fmt.Sprintf("%.1f%s", v, space)
	}
	const prefixes = "kMGTPE"
	i := -1
	for v >= 999.95 && i < len(prefixes)-1 {
		v /= 1000
		i++
	}
	return fmt.Sprintf("%.1f%s%c", v, space, prefixes[i])
}

// humanCount renders a count: 950, 1.2k, 3.4M.
func humanCount(n float64) string { return scaled(n, "") }

// humanBytes renders a byte count in SI units: 950 B, 1.2 kB, 3.4 MB.
func humanBytes(n float64) string { return scaled(n, " ") + "B" }

// humanPPS renders a packet rate: 1.2k pps.
func humanPPS(r float64) string { return humanCount(r) + " pps" }

// humanBPS renders a byte rate: 3.4 MB/s.
func humanBPS(r float64) string { return humanBytes(r) + "/s" }

// humanDuration rounds d for display: 1.5ms, 3m20s, 4h2m.
func humanDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(10 * time.Microsecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	s := d.Round(time.Minute).String()
	return strings.TrimSuffix(s, "0s")
}

// humanTime renders a moment with how long ago it was; zero is "never".
func humanTime(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	ago := now.Sub(t)
	if ago < 0 {
		return t.Local().Format("2006-01-02 15:04:05 MST")
	}
	return fmt.Sprintf("%s (%s ago)", t.Local().Format("2006-01-02 15:04:05 MST"), humanDuration(ago))
}

// orDash renders an empty string as "-".
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// plural renders a count of things: "1 backend", "2 backends".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
