package config

import (
	"net"
	"net/netip"

	"go.yaml.in/yaml/v3"
)

// VIPFields are a VIP's settings as a program gives them (the API), not as
// a file writes them. A zero value means the field is omitted and takes
// the default a file's omitted field takes.
type VIPFields struct {
	Name      string
	Address   netip.Addr
	Port      uint16 // 0 = every port
	Protocol  string
	Mode      string
	Scheduler string
	RingSize  uint32
	// RingSizeAuto asks for ring_size: auto (RingSize must then be 0),
	// RingSizeMax for its ring_size_max (0 = omitted).
	RingSizeAuto bool
	RingSizeMax  uint32
	Conntrack    *bool
	Fragments    string
	// SourceRanges are client prefixes as text; nil or empty = every
	// client.
	SourceRanges []string
	Backends     []BackendFields
}

// BackendFields are a backend's settings as a program gives them.
type BackendFields struct {
	Address netip.Addr
	Weight  *uint32 // nil = 1
	MAC     string  // "" = resolved by the daemon
}

// ParseVIP checks one VIP and fills in its defaults as Parse does for a
// VIP of a file without a top-level health_check: the same checks, the
// same defaults, the same messages. The error is a *ValidationError whose
// paths are relative to the VIP, e.g. "backends[0].weight"; its problems
// carry no line. What Parse checks across VIPs (a duplicate, a fragments
// policy that differs on one address) and against the rest of the file
// (an ipip source prefix) is left to the caller.
func ParseVIP(in VIPFields) (VIP, error) {
	d := &decoder{}
	bs := make([]source, len(in.Backends))
	for i, b := range in.Backends {
		bs[i] = b.source(d, index("backends", i))
	}
	f := &typed{d: d, vals: map[string]any{"port": int64(in.Port), "backends": bs}}
	f.setText("name", in.Name)
	if in.Address.IsValid() {
		f.vals["address"] = in.Address
	}
	f.setText("protocol", in.Protocol)
	f.setText("mode", in.Mode)
	f.setText("scheduler", in.Scheduler)
	if in.RingSize != 0 {
		f.vals["ring_size"] = int64(in.RingSize)
	}
	if in.RingSizeAuto {
		if in.RingSize != 0 {
			f.errf("ring_size", "%d is given with ring_size_auto; give a fixed size or auto, not both", in.RingSize)
		}
		f.vals["ring_size"] = "auto"
	}
	if in.RingSizeMax != 0 {
		f.vals["ring_size_max"] = int64(in.RingSizeMax)
	}
	if in.Conntrack != nil {
		f.vals["conntrack"] = *in.Conntrack
	}
	f.setText("fragments", in.Fragments)
	if len(in.SourceRanges) > 0 {
		f.vals["source_ranges"] = in.SourceRanges
	}
	v, _ := d.vip(f, nil, false)
	if len(d.problems) > 0 {
		return VIP{}, &ValidationError{Problems: d.problems}
	}
	return v, nil
}

// ParseBackend checks a backend to be added to v and fills in its
// defaults as Parse does for one more backend of v in a file: it gets v's
// health check. A backend v already has is not refused here; that is a
// conflict for the caller to report. Paths in the *ValidationError are
// relative to the backend, e.g. "weight".
func ParseBackend(v VIP, in BackendFields) (Backend, error) {
	d := &decoder{}
	b := d.backend(in.source(d, ""), &v, v.Address.IsValid(), true, map[netip.Addr]int{}, 0)
	if len(d.problems) > 0 {
		return Backend{}, &ValidationError{Problems: d.problems}
	}
	return b, nil
}

func (in BackendFields) source(d *decoder, path string) *typed {
	f := &typed{d: d, path: path, vals: map[string]any{}}
	if in.Address.IsValid() {
		f.vals["address"] = in.Address
	}
	if in.Weight != nil {
		f.vals["weight"] = int64(*in.Weight)
	}
	f.setText("mac", in.MAC)
	return f
}

// source is a VIP's or a backend's mapping as the decoder reads it: a
// file's (*fields, whose problems carry the line) or a program's (*typed).
// The checks and defaults are written once, against this.
type source interface {
	at(key string) string
	has(key string) bool
	require(key, hint string) bool
	where(key string) *yaml.Node
	errf(key, format string, args ...any)
	str(key, def string) string
	text(key string) (string, bool)
	integerOK(key string, def, lo, hi int64) (int64, bool)
	boolean(key string, def bool) bool
	addr(key string) (netip.Addr, bool)
	mac(key string) net.HardwareAddr
	// items returns key's list of mappings, each with only allowed keys.
	items(key, what, itemWhat string, allowed []string) []source
	// check returns key's health check block (see decoder.healthCheck).
	check(key string) (*HealthCheck, bool)
	// scalars returns key's list of scalars (srcranges.go).
	scalars(key, what, item string) []scalar
}

var _ source = (*fields)(nil)

func (f *fields) items(key, what, itemWhat string, allowed []string) []source {
	nodes := f.seq(key, what)
	out := make([]source, len(nodes))
	for i, n := range nodes {
		out[i] = f.d.mapping(n, index(f.at(key), i), itemWhat, allowed)
	}
	return out
}

func (f *fields) check(key string) (*HealthCheck, bool) {
	return f.d.healthCheck(f.sub(key, "a health check mapping (type, interval, ...)", healthKeys))
}

// typed is a mapping given as Go values: string, int64, bool, netip.Addr
// or []source, by key; an omitted key is absent. Its values already have
// their type, so only their values are checked.
type typed struct {
	d    *decoder
	path string
	vals map[string]any
}

var _ source = (*typed)(nil)

// setText sets key to s unless s is empty, which means omitted.
func (f *typed) setText(key, s string) {
	if s != "" {
		f.vals[key] = s
	}
}

func (f *typed) at(key string) string              { return join(f.path, key) }
func (f *typed) has(key string) bool               { return f.vals[key] != nil }
func (f *typed) where(string) *yaml.Node           { return nil }
func (f *typed) str(key, def string) string        { return typedOr(f, key, def) }
func (f *typed) boolean(key string, def bool) bool { return typedOr(f, key, def) }

func (f *typed) errf(key, format string, args ...any) {
	f.d.add(f.at(key), nil, format, args...)
}

func (f *typed) require(key, hint string) bool {
	if f.has(key) {
		return true
	}
	f.errf(key, "missing; %s", hint)
	return false
}

func (f *typed) text(key string) (string, bool) {
	s, ok := f.vals[key].(string)
	return s, ok
}

func (f *typed) integerOK(key string, def, lo, hi int64) (int64, bool) {
	v, ok := f.vals[key].(int64)
	if !ok {
		return def, true
	}
	if msg := rangeProblem(v, lo, hi); msg != "" {
		f.errf(key, "%s", msg)
		return def, false
	}
	return v, true
}

func (f *typed) addr(key string) (netip.Addr, bool) {
	a, ok := f.vals[key].(netip.Addr)
	if !ok {
		return netip.Addr{}, false
	}
	if msg := addrProblem(a); msg != "" {
		f.errf(key, "%s", msg)
		return netip.Addr{}, false
	}
	return a, true
}

func (f *typed) mac(key string) net.HardwareAddr {
	hw, msg := parseMAC(f.str(key, ""))
	if msg != "" {
		f.errf(key, "%s", msg)
	}
	return hw
}

func (f *typed) items(key, _, _ string, _ []string) []source {
	items, _ := f.vals[key].([]source)
	return items
}

// check is never called: a program gives no health check block (has
// reports none).
func (f *typed) check(string) (*HealthCheck, bool) { return nil, false }

// typedOr returns key's value if it holds a T, else def.
func typedOr[T any](f *typed, key string, def T) T {
	if v, ok := f.vals[key].(T); ok {
		return v
	}
	return def
}
