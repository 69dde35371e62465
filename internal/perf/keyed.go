package perf

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
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

// procCPU returns the CPU time (user and system) a process has used, from
// /proc/PID/stat: on a machine shared with other work, a figure that the
// others' load does not inflate, unlike the wall time.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command (field 2) may hold spaces; the fields after it do not.
	end := strings.LastIndexByte(string(b), ')')
	if end < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command field", pid)
	}
	fs := strings.Fields(string(b[end+1:]))
	if len(fs) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the command, want 13 or more", pid, len(fs))
	}
	var ticks uint64
	for _, f := range fs[11:13] { // utime, stime: fields 14 and 15
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on
// every Linux architecture Fulcrum builds for.
const clockTicks = 100
