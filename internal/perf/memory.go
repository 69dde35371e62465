package perf

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
)

// mapMemory is the kernel memory of a program's maps, as the kernel
// accounts it (the "memlock" of each map's fdinfo), with the inner maps of
// map-in-map maps counted under their outer map's name.
type mapMemory struct {
	Total  uint64
	ByName map[string]uint64
	// Inner counts the inner maps found.
	Inner int
}

// measureMapMemory sums the memlock of every map prog uses.
func measureMapMemory(prog *ebpf.Program) (mapMemory, error) {
	mm := mapMemory{ByName: make(map[string]uint64)}
	info, err := prog.Info()
	if err != nil {
		return mm, err
	}
	ids, ok := info.MapIDs()
	if !ok {
		return mm, errors.New("the kernel does not report a program's maps")
	}
	for _, id := range ids {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			return mm, fmt.Errorf("open map %d: %w", id, err)
		}
		mi, err := m.Info()
		if err != nil {
			m.Close()
			return mm, err
		}
		n, _ := mi.Memlock()
		mm.ByName[mi.Name] += n
		mm.Total += n
		if m.Type() == ebpf.ArrayOfMaps || m.Type() == ebpf.HashOfMaps {
			inner, count, err := innerMemory(m)
			if err != nil {
				m.Close()
				return mm, err
			}
			mm.ByName[mi.Name+" (inner)"] += inner
			mm.Total += inner
			mm.Inner += count
		}
		m.Close()
	}
	return mm, nil
}

// innerMemory sums the memlock of the maps held by a map-in-map.
func innerMemory(outer *ebpf.Map) (total uint64, count int, err error) {
	var key uint32
	var inner *ebpf.Map
	it := outer.Iterate()
	for it.Next(&key, &inner) {
		mi, err := inner.Info()
		if err != nil {
			inner.Close()
			return 0, 0, err
		}
		n, _ := mi.Memlock()
		total += n
		count++
	}
	if inner != nil {
		inner.Close()
	}
	return total, count, it.Err()
}

// summary renders the biggest entries, e.g. "rings (inner) 262.1 MiB,
// ct_v4 80.0 MiB, ...".
func (mm mapMemory) summary(n int) string {
	type entry struct {
		name string
		size uint64
	}
	var es []entry
	for k, v := range mm.ByName {
		es = append(es, entry{k, v})
	}
	slices.SortFunc(es, func(a, b entry) int {
		if a.size != b.size {
			if a.size > b.size {
				return -1
			}
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	var parts []string
	var rest uint64
	for i, e := range es {
		if i < n {
			parts = append(parts, fmt.Sprintf("%s %.1f", e.name, mib(e.size)))
		} else {
			rest += e.size
		}
	}
	if rest > 0 {
		parts = append(parts, fmt.Sprintf("%d others %.1f", len(es)-n, mib(rest)))
	}
	return strings.Join(parts, ", ") + " MiB"
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// procStatus returns a field of /proc/PID/status in bytes, e.g. "VmRSS".
func procStatus(pid int, field string) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, field+":")
		if !ok {
			continue
		}
		fs := strings.Fields(rest)
		if len(fs) != 2 || fs[1] != "kB" {
			return 0, fmt.Errorf("%s: unexpected %q", field, line)
		}
		kb, err := strconv.ParseUint(fs[0], 10, 64)
		return kb << 10, err
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}
