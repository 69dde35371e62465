// Package perf is Fulcrum's benchmark suite: packet rates through real
// (veth) interfaces against a ceiling and against nftables, connection rates
// against HAProxy, control-plane timings and memory, and the fast path's cost
// at full scale. `make bench` runs it; docs/performance.md explains the
// figures.
package perf
