// Package config reads and validates Fulcrum's YAML configuration: the
// daemon's settings (instance, interfaces, logging, API socket, metrics,
// connection table), the VIPs with their backends, health checks and VRRP.
//
// Parse is strict and all-or-nothing. An unknown field, a value of the wrong
// type or an invalid value rejects the whole file, so that a bad file changes
// nothing that is running. Every problem is reported, not only the first,
// as a *ValidationError whose lines read
//
//	vips[2].backends[0].weight: 70000 is over the maximum 65535 (line 23)
//
// and say what would fix the problem. On success every default is filled in:
// the reconciler and the daemon use the resolved values and never look at
// what the file omitted.
//
// # Schema
//
// docs/examples/fulcrum.yaml shows every field with comments, and
// docs/examples/minimal.yaml the smallest useful file. In short:
//
//	instance: default            # names the pin directory and the API socket
//	bpffs: /sys/fs/bpf           # where bpffs is (or gets) mounted
//	interfaces:                  # at least one
//	  - {name: eth0, xdp_mode: auto}   # auto (default), native or generic
//	log: {level: info, format: text}
//	api: {socket: /run/fulcrum/default.sock}
//	metrics: {address: "127.0.0.1:9542"}   # "off" disables
//	conntrack: {entries: 1048576}
//	health_check: {type: tcp}    # default for every VIP (optional)
//	ring_size: auto              # default for every VIP: a prime, or auto (optional)
//	ring_arena_slots: 67108864   # room for every VIP's ring, 4 bytes a slot (optional)
//	vrrp: {interface: eth0, vrid: 51}      # optional
//	bgp: {asn: 65010, router_id: 198.18.0.2, peers: [{address: 198.18.0.1, asn: 65000}]}  # optional, not with vrrp
//	sync: {peers: [198.18.0.3], key_file: /etc/fulcrum/sync.key}   # optional
//	vips:
//	  - address: 203.0.113.10
//	    port: 80                 # 0 = every port
//	    protocol: tcp
//	    ring_size: auto          # chosen up to ring_size_max (default 65537)
//	    backends:
//	      - address: 198.18.0.11
//
// # YAML
//
// Anchors, aliases and merge keys ("<<: *defaults") may be used to share
// blocks. A key written with no value (or null) counts as omitted and takes
// its default. Numbers must not be quoted, booleans are true or false, and
// durations are Go duration strings such as "500ms" or "2s" (a bare number
// is rejected, since its unit would be a guess). Enumerated values are lower
// case.
//
// # Health checks
//
// A health_check block replaces the one it overrides as a whole, it does not
// merge with it: the top-level block is the default for every VIP, a VIP's
// block is the default for its backends, and a backend's block applies to
// that backend alone. After Parse, VIP.HealthCheck and Backend.HealthCheck
// hold the block that applies (copies; changing one changes no other), with
// Port resolved to the VIP's port when it was omitted. A block of type
// "none" resolves to nil, so nil always means "not checked, always up".
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
)

// Defaults.
const (
	DefaultInstance         = "default"
	DefaultBPFFS            = datapath.DefaultBPFFS
	DefaultMetricsAddress   = "127.0.0.1:9542"
	DefaultConntrackEntries = datapath.DefaultConntrackEntries
	MinConntrackEntries     = 1024
	MaxConntrackEntries     = 1 << 26
	// MaxWeight is the largest backend weight: the datapath's.
	MaxWeight = datapath.MaxWeight

	DefaultHealthInterval = 2 * time.Second
	DefaultHealthTimeout  = time.Second
	DefaultHealthRise     = 2
	DefaultHealthFall     = 3

	DefaultVRRPPriority       = 100
	DefaultVRRPAdvertInterval = 10 // centiseconds
	DefaultVRRPGratuitous     = 3
)

// Config is a whole, validated configuration with every default applied.
type Config struct {
	// Instance names this daemon's pin directory and API socket, so that
	// several daemons can share a machine. Default "default".
	Instance string `yaml:"instance"`
	// BPFFS is the bpffs mount point (the pin root). Default /sys/fs/bpf.
	BPFFS string `yaml:"bpffs"`
	// Interfaces the XDP program is attached to; at least one.
	Interfaces []Interface `yaml:"interfaces"`
	Log        Log         `yaml:"log"`
	API        API         `yaml:"api"`
	Metrics    Metrics     `yaml:"metrics"`
	Conntrack  Conntrack   `yaml:"conntrack"`
	// IPIP configures the outer headers of ipip VIPs.
	IPIP IPIP `yaml:"ipip"`
	// HealthCheck is the default check of every VIP; nil = none. Its Port
	// is as written (0 = each VIP's port); VIP.HealthCheck is resolved.
	HealthCheck *HealthCheck `yaml:"health_check,omitempty"`
	// RingSize, RingSizeAuto and RingSizeMax are the root keys ring_size
	// and ring_size_max: the ring size of every VIP of the file that sets
	// none (VIPs added through the API take maglev.DefaultSize, as they
	// take no root health_check). Each VIP holds its resolved value.
	// Default: RingSize maglev.DefaultSize, not auto, RingSizeMax
	// maglev.DefaultSize (the maximum of VIPs that are auto); RingSize is
	// 0 when RingSizeAuto.
	RingSize     uint32 `yaml:"-"`
	RingSizeAuto bool   `yaml:"-"`
	RingSizeMax  uint32 `yaml:"-"`
	// RingArenaSlots (YAML ring_arena_slots) is the capacity of the ring
	// arena, which holds every VIP's Maglev ring: slots of 4 bytes, all
	// allocated when the fast path is loaded, so a change takes a
	// restart (which migrates the pins). Rounded up to a multiple of 16;
	// default DefaultRingArenaSlots (64 Mi, 256 MiB). Parse refuses VIPs
	// whose rings take more (checkRingArena).
	RingArenaSlots uint32 `yaml:"-"`
	// VRRP is the active/standby failover; nil = none (always active).
	VRRP *VRRP `yaml:"vrrp,omitempty"`
	// BGP announces the VIPs to routers (scale-out); nil = none.
	BGP *BGP `yaml:"-"`
	// Sync shares the connection table with peer LB nodes; nil = off.
	Sync *Sync `yaml:"-"`
	// VIPs may be empty: VIPs can also be added through the API.
	VIPs []VIP `yaml:"vips"`
}

// Interface is a network interface the fast path is attached to.
type Interface struct {
	Name string `yaml:"name"`
	// XDPMode is XDPAuto (the default), XDPNative or XDPGeneric.
	XDPMode XDPMode `yaml:"xdp_mode"`
}

// Log configures the daemon's log.
type Log struct {
	Level  string `yaml:"level"`  // debug, info (default), warn or error
	Format string `yaml:"format"` // text (default) or json
}

// API configures the control socket.
type API struct {
	// Socket is the Unix socket path. Default api.SocketPath(Instance).
	Socket string `yaml:"socket"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Address is host:port to listen on for /metrics; "" = disabled
	// (written as "off" in the file). Default 127.0.0.1:9542.
	Address string `yaml:"address"`
}

// Conntrack sizes the connection table.
type Conntrack struct {
	// Entries is the capacity of each family's connection table, in
	// buckets of 4 (rounded up): when a flow's bucket is full, its least
	// recently seen entry is forgotten (docs/datapath.md). Default 1048576.
	Entries uint32 `yaml:"entries"`
	// NewFlowLimit bounds the connection entries each CPU creates per
	// second; over it new flows are balanced by the ring without an entry,
	// so a SYN flood cannot evict established flows. 0 (default) = none.
	NewFlowLimit uint32 `yaml:"new_flow_limit"`
	// Timeouts are how long entries may stay idle, by protocol and TCP
	// state (docs/datapath.md); every field is set (defaults filled in).
	// A VIP may set its own (VIP.Timeouts).
	Timeouts datapath.ConnTimeouts `yaml:"-"`
}

// IPIP configures encapsulation for VIPs in ipip mode.
type IPIP struct {
	// SourceV4 and SourceV6 are the prefixes outer source addresses are
	// drawn from (prefix bits plus flow-hash bits), one per outer family.
	// They should be routed back to this node and assigned to no
	// interface.
	SourceV4 netip.Prefix `yaml:"source_v4"`
	SourceV6 netip.Prefix `yaml:"source_v6"`
	// GatewayMAC is the next hop used when the route to a backend has no
	// resolved neighbour; nil = such packets are dropped and counted.
	GatewayMAC net.HardwareAddr `yaml:"-"`
}

// VIP is a virtual service, identified by (Address, Port, Protocol).
type VIP struct {
	// Name is an optional label, unique when set.
	Name    string     `yaml:"name,omitempty"`
	Address netip.Addr `yaml:"address"`
	// Port 0 means every port of Address for Protocol. A VIP with a
	// specific port may coexist with a port-0 VIP on the same address.
	Port     uint16 `yaml:"port"`
	Protocol string `yaml:"protocol"` // tcp or udp
	Mode     Mode   `yaml:"mode"`     // default ModeDSR
	// Scheduler is SchedulerMaglev (the default), SchedulerSourceHash,
	// SchedulerRoundRobin, SchedulerLeastConn or SchedulerLeastTime.
	Scheduler Scheduler `yaml:"scheduler"`
	// RingSize is the Maglev table size, a prime; default
	// maglev.DefaultSize. 0 when RingSizeAuto.
	RingSize uint32 `yaml:"ring_size"`
	// RingSizeAuto (YAML ring_size: auto) has the daemon choose the size:
	// the smallest of a fixed list of primes at which every backend's
	// share of the ring is within 1% of its weight share, up to
	// RingSizeMax (internal/ringsize). Opt-in: the size follows the
	// backends and weights, and a flow's backend changes whenever it does.
	RingSizeAuto bool `yaml:"-"`
	// RingSizeMax (YAML ring_size_max) is the largest size auto chooses,
	// a prime; default maglev.DefaultSize, or the root's ring_size_max.
	// 0 unless RingSizeAuto.
	RingSizeMax uint32 `yaml:"-"`
	// Conntrack is whether new flows are recorded in the connection table
	// (YAML key "conntrack"; default true). Without it every packet is
	// hashed afresh, which suits stateless UDP services.
	Conntrack bool `yaml:"-"`
	// Timeouts are the VIP's own idle timeouts (YAML: conntrack:
	// {timeouts: {...}}, only its protocol's keys); zero fields take
	// Conntrack.Timeouts (see TimeoutsOf).
	Timeouts datapath.ConnTimeouts `yaml:"-"`
	// Fragments is what happens to IP fragments and unparseable packets
	// for Address (default FragmentsDrop). It is a per-address policy (a
	// fragment carries no port), so every VIP on an address must agree.
	Fragments FragmentPolicy `yaml:"fragments"`
	// SourceRanges are the only client prefixes the VIP serves, of its
	// family; other clients are dropped and counted. Empty = every
	// client.
	SourceRanges []netip.Prefix `yaml:"-"`
	HealthCheck  *HealthCheck   `yaml:"health_check,omitempty"`
	// Backends may be empty: traffic to the VIP is then dropped and counted.
	Backends []Backend `yaml:"backends"`
	// Pools split the VIP's clients by source prefix, each pool served by
	// some of Backends (pools.go). Empty = one ring for every client.
	Pools []Pool `yaml:"-"`
	// ResponseTime, when not nil, measures the backends' response times
	// (YAML response_time), shown per backend and the input of
	// least-time; nil = not measured.
	ResponseTime *ResponseTime `yaml:"-"`
}

// ResponseTime is how a VIP measures its backends' response times.
type ResponseTime struct {
	// Source is where samples come from; default ResponsePassive.
	Source ResponseSource
	// HalfLife is the EWMA's half-life: a sample's weight halves every
	// HalfLife after it; default DefaultResponseHalfLife, or
	// LeastTimeHalfLife for a least-time VIP.
	HalfLife time.Duration
}

// Passive reports whether the fast path measures (passive or both).
func (r *ResponseTime) Passive() bool {
	return r != nil && (r.Source == ResponsePassive || r.Source == ResponseBoth)
}

// Active reports whether health probes measure (active or both).
func (r *ResponseTime) Active() bool {
	return r != nil && (r.Source == ResponseActive || r.Source == ResponseBoth)
}

// The bounds of response_time.half_life: the daemon folds samples every
// 100 ms, so a shorter half-life would forget within a fold or two; over a
// minute a recovered backend would wait minutes for new flows.
const (
	DefaultResponseHalfLife = time.Second
	MinResponseHalfLife     = 100 * time.Millisecond
	MaxResponseHalfLife     = time.Minute
)

// LeastTimeHalfLife is the default half-life of a least-time VIP, which
// acts on the times: a backend that least-time starved while it was slow
// takes about log2(slow / fast) + 4 half-lives to get its share back
// after it recovers (docs/schedulers.md, "Recovery"), 12.6 for 20 ms over
// 50 µs: 3.2 s at 250 ms, where 1 s would take 12.6 s.
const LeastTimeHalfLife = 250 * time.Millisecond

// Key returns the VIP's identity in the text form the CLI and the API use,
// e.g. "tcp/203.0.113.10:80" or "udp/[2001:db8::1]:53".
func (v *VIP) Key() string {
	return v.Protocol + "/" + netip.AddrPortFrom(v.Address, v.Port).String()
}

// Backend is a server behind a VIP.
type Backend struct {
	// Address is the backend's address; in dsr mode of the VIP's family.
	Address netip.Addr `yaml:"address"`
	// Weight is the backend's share of new flows (YAML "weight"; default
	// 1 when omitted), at most MaxWeight. 0 drains it: no new
	// flows, established ones stay.
	Weight uint32 `yaml:"-"`
	// MAC is the backend's hardware address for dsr when it cannot be
	// resolved (YAML "mac"); nil = resolved by the daemon.
	MAC         net.HardwareAddr `yaml:"-"`
	HealthCheck *HealthCheck     `yaml:"health_check,omitempty"`
}

// HealthCheck is how a backend's health is probed. Probes go to the
// backend's address and Port.
type HealthCheck struct {
	Type     string        `yaml:"type"`     // tcp, http, https or udp ("none" resolves to a nil check)
	Interval time.Duration `yaml:"interval"` // between probes; default 2s
	// Timeout of one probe; default 1s, or the interval when that is
	// shorter. Never longer than Interval.
	Timeout time.Duration `yaml:"timeout"`
	Rise    int           `yaml:"rise"` // successes in a row to mark a backend up; default 2
	Fall    int           `yaml:"fall"` // failures in a row to mark it down; default 3
	// Port to probe; 0 (in Config.HealthCheck only) = the VIP's port.
	Port uint16 `yaml:"port"`
	// Path of the HTTP(S) GET; default "/".
	Path string `yaml:"path,omitempty"`
	// ExpectStatus lists the HTTP statuses that count as healthy;
	// default [200].
	ExpectStatus []int  `yaml:"expect_status,omitempty"`
	Host         string `yaml:"host,omitempty"` // HTTP Host header; "" = the backend address
	// SkipVerify accepts any TLS certificate (https only).
	SkipVerify bool   `yaml:"skip_verify,omitempty"`
	Payload    string `yaml:"payload,omitempty"` // udp: the datagram sent
	// Expect is a substring the UDP reply must contain; "" = any reply.
	Expect string `yaml:"expect,omitempty"`
	// Source is the probes' source address; invalid = chosen by the kernel.
	Source netip.Addr `yaml:"source,omitempty"`
	// OnDown is what happens to a VIP's ring when a backend goes down;
	// default OnDownRehash.
	OnDown OnDown `yaml:"on_down"`
	// AllDown is what happens when every backend is down; default
	// AllDownDrop.
	AllDown AllDown `yaml:"all_down"`
	// ThroughDatapath addresses probes to the VIP and has the fast path
	// steer them to the backend, so that they test the backend as clients
	// reach it (VIP on lo included) instead of at its own address.
	ThroughDatapath bool `yaml:"through_datapath,omitempty"`
}

func (h *HealthCheck) clone() *HealthCheck {
	if h == nil {
		return nil
	}
	c := *h
	c.ExpectStatus = append([]int(nil), h.ExpectStatus...)
	return &c
}

// VRRP configures active/standby failover with VRRPv3 (RFC 5798).
type VRRP struct {
	// Interface the advertisements are sent and received on.
	Interface string `yaml:"interface"`
	// VRID is the virtual router id, 1..255, the same on both nodes.
	VRID int `yaml:"vrid"`
	// Priority 1..255, higher wins; default 100.
	Priority int `yaml:"priority"`
	// AdvertInterval between advertisements, in centiseconds; default 10.
	AdvertInterval int `yaml:"advert_interval"`
	// Preempt lets a higher-priority node take over from a lower-priority
	// master; default true.
	Preempt bool `yaml:"preempt"`
	// PreemptDelay holds off preemption after start; default 0.
	PreemptDelay time.Duration `yaml:"preempt_delay"`
	// UnicastPeers, when set, receive advertisements by unicast instead of
	// the multicast group.
	UnicastPeers []netip.Addr `yaml:"unicast_peers,omitempty"`
	// GratuitousCount is how many gratuitous ARPs / unsolicited NAs are
	// sent per VIP on becoming master; default 3.
	GratuitousCount int `yaml:"gratuitous_count"`
	// Family of the advertisements: "ipv4" (default) or "ipv6".
	Family string `yaml:"family"`
	// VirtualAddresses are held on Interface by the master (keepalived's
	// virtual_ipaddress): the next hop the upstream router uses for the
	// VIPs. At least one.
	VirtualAddresses []netip.Prefix `yaml:"virtual_addresses"`
}

// Problem is one thing wrong with a config file.
type Problem struct {
	// Path of the field, e.g. "vips[2].backends[0].weight"; "yaml" for a
	// syntax error and "config" for the document as a whole.
	Path string `json:"path"`
	// Message says what is wrong and what would fix it.
	Message string `json:"message"`
	// Line in the file, 1-based; 0 when unknown (e.g. a missing field of
	// an empty file).
	Line int `json:"line,omitempty"`
}

func (p Problem) String() string {
	s := p.Path + ": " + p.Message
	if p.Line > 0 {
		s += fmt.Sprintf(" (line %d)", p.Line)
	}
	return s
}

// ValidationError lists every problem found in a config file.
type ValidationError struct {
	// File is the path given to Load; "" for Parse.
	File     string
	Problems []Problem
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		if e.File != "" {
			b.WriteString(e.File + ": ")
		}
		b.WriteString(p.String())
	}
	if len(e.Problems) == 0 {
		b.WriteString("invalid config")
	}
	return b.String()
}

// Parse decodes, completes with defaults and validates a YAML config. The
// error is always a *ValidationError.
func Parse(data []byte) (*Config, error) {
	root, syntax := parseYAML(data)
	if syntax != nil {
		return nil, &ValidationError{Problems: []Problem{*syntax}}
	}
	d := &decoder{}
	c := d.config(root)
	if d.tooBig {
		return nil, &ValidationError{Problems: []Problem{{Path: "config",
			Message: fmt.Sprintf("the document expands to more than %d values (through aliases); write it out plainly", maxNodes)}}}
	}
	if d.dropped > 0 {
		d.problems = append(d.problems, Problem{Path: "config",
			Message: fmt.Sprintf("%d more problems not listed; fix the ones above first", d.dropped)})
	}
	if len(d.problems) > 0 {
		return nil, &ValidationError{Problems: d.problems}
	}
	return c, nil
}

// Load reads the file at path and parses it. A *ValidationError from it
// has File set, so that its lines start with the path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		if ve, ok := errors.AsType[*ValidationError](err); ok {
			ve.File = path
			return nil, ve
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// TimeoutsOf returns the idle timeouts of v's connection entries: the
// VIP's own where set, the global ones otherwise.
func (c *Conntrack) TimeoutsOf(v *VIP) datapath.ConnTimeouts {
	t := c.Timeouts
	for _, f := range []struct{ own, out *time.Duration }{
		{&v.Timeouts.SYN, &t.SYN}, {&v.Timeouts.Established, &t.Established}, {&v.Timeouts.FIN, &t.FIN},
		{&v.Timeouts.Closed, &t.Closed}, {&v.Timeouts.UDP, &t.UDP},
	} {
		if *f.own != 0 {
			*f.out = *f.own
		}
	}
	return t
}
