// Package linkset keeps the attachments of one BPF program, a link per
// interface index: what internal/datapath, internal/decap and internal/healthsteer each
// need to list and detach the interfaces their program is on. It does no
// locking; each owner guards its Set with its own mutex.
package linkset

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/cilium/ebpf/link"
)

// Set maps an interface index to the program's link on it.
type Set map[int]link.Link

// Indexes returns the interface indexes, sorted.
func (s Set) Indexes() []int {
	return slices.Sorted(maps.Keys(s))
}

// Close closes every link and forgets those it closed; a link that fails
// to close stays, so that a later call can try again. what names the
// attachment in errors: "detach WHAT from ifindex N: ...".
func (s Set) Close(what string) error {
	var errs []error
	for ifindex, l := range s {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach %s from ifindex %d: %w", what, ifindex, err))
			continue
		}
		delete(s, ifindex)
	}
	return errors.Join(errs...)
}
