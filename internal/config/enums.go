package config

import (
	"fmt"
	"slices"
	"strings"
)

// The enumerated fields that the rest of the daemon acts on have their own
// types, so that code outside this package compares constants, never
// strings. Each is a string type: its YAML and JSON form is its name, and
// a VIP's fields read the same in a file, in the API and in Go.

// Mode is how a VIP's packets reach its backends (vip.mode).
type Mode string

// The forwarding modes.
const (
	// ModeDSR rewrites the destination MAC (L2 direct server return).
	ModeDSR Mode = "dsr"
	// ModeIPIP encapsulates in IPv4 or IPv6 (ipip.source_v4/v6).
	ModeIPIP Mode = "ipip"
)

// Scheduler is how a VIP picks the backend of a new flow (vip.scheduler).
type Scheduler string

// The schedulers.
const (
	// SchedulerMaglev hashes the 5-tuple onto the Maglev ring.
	SchedulerMaglev Scheduler = "maglev"
	// SchedulerSourceHash hashes the client address only, so all of a
	// client's flows reach one backend.
	SchedulerSourceHash Scheduler = "source-hash"
	// SchedulerRoundRobin gives new flows the backends in turn, in
	// proportion to their weights (smooth weighted round robin); a packet
	// that is not a flow's first and has no connection entry takes the
	// Maglev ring. It needs the connection table (docs/schedulers.md).
	SchedulerRoundRobin Scheduler = "round-robin"
	// SchedulerLeastConn sends a new flow to the backend of lowest
	// (active + 1) / weight (docs/schedulers.md); it needs the
	// connection table.
	SchedulerLeastConn Scheduler = "least-conn"
	// SchedulerLeastTime gives a new flow the backend with the lowest
	// (active + 1) x response time / weight, the response times those
	// response_time measures (docs/schedulers.md); it needs the
	// connection table.
	SchedulerLeastTime Scheduler = "least-time"
)

// ResponseSource is where a VIP's backend response times come from
// (vip.response_time.source).
type ResponseSource string

// The response-time sources.
const (
	// ResponsePassive is the fast path's time from a flow's SYN to the
	// client's first ACK, which includes the backend's SYN-ACK.
	ResponsePassive ResponseSource = "passive"
	// ResponseActive is the health probe's duration: the connect time of
	// a tcp check, the time to the response of an http(s) one.
	ResponseActive ResponseSource = "active"
	// ResponseBoth is the passive time while a backend gets handshakes,
	// the probe's otherwise (docs/schedulers.md).
	ResponseBoth ResponseSource = "both"
)

// FragmentPolicy is what happens to IP fragments and unparseable packets
// for a VIP's address (vip.fragments).
type FragmentPolicy string

// The fragment policies.
const (
	FragmentsDrop FragmentPolicy = "drop" // dropped and counted
	FragmentsPass FragmentPolicy = "pass" // handed to the host stack
)

// OnDown is what a backend that goes down does to its VIP's ring
// (health_check.on_down).
type OnDown string

// The on_down actions.
const (
	// OnDownRehash takes the backend out of the ring: its slots and its
	// established flows go to the others.
	OnDownRehash OnDown = "rehash"
	// OnDownDrain gives the backend no new flows; established ones stay.
	OnDownDrain OnDown = "drain"
)

// AllDown is what a VIP does when every backend is down
// (health_check.all_down).
type AllDown string

// The all_down actions.
const (
	// AllDownDrop leaves the VIP without backends: its packets are
	// dropped and counted.
	AllDownDrop AllDown = "drop"
	// AllDownFailOpen serves as if every backend were up, so that a broken
	// check does not take the whole service down.
	AllDownFailOpen AllDown = "fail-open"
)

// XDPMode is how the fast path is attached to an interface
// (interfaces[].xdp_mode).
type XDPMode string

// The XDP attach modes.
const (
	// XDPAuto (the default) attaches in native mode and, if the driver
	// refuses it, in generic mode with a warning in the log; `fulcrum
	// status` shows the mode each interface got.
	XDPAuto XDPMode = "auto"
	// XDPNative has the driver run the program; the daemon does not start
	// if the driver refuses.
	XDPNative XDPMode = "native"
	// XDPGeneric runs it on the kernel's skb path: slower, works on any
	// device.
	XDPGeneric XDPMode = "generic"
)

// The values each enumerated field accepts, in the documented order; the
// first is the default where the field has one.
var (
	modes            = []Mode{ModeDSR, ModeIPIP}
	schedulers       = []Scheduler{SchedulerMaglev, SchedulerSourceHash, SchedulerRoundRobin, SchedulerLeastConn, SchedulerLeastTime}
	responseSources  = []ResponseSource{ResponsePassive, ResponseActive, ResponseBoth}
	fragmentPolicies = []FragmentPolicy{FragmentsDrop, FragmentsPass}
	onDownActions    = []OnDown{OnDownRehash, OnDownDrain}
	allDownActions   = []AllDown{AllDownDrop, AllDownFailOpen}
	xdpModes         = []XDPMode{XDPAuto, XDPNative, XDPGeneric}

	logLevels        = []string{"debug", "info", "warn", "error"}
	logFormats       = []string{"text", "json"}
	protocols        = []string{"tcp", "udp"}
	healthCheckTypes = []string{"tcp", "http", "https", "udp", "none"}
	vrrpFamilies     = []string{"ipv4", "ipv6"}
)

// Defaults of the enumerated fields.
const (
	DefaultMode      = ModeDSR
	DefaultScheduler = SchedulerMaglev
	DefaultFragments = FragmentsDrop
	DefaultOnDown    = OnDownRehash
	DefaultAllDown   = AllDownDrop
	DefaultXDPMode   = XDPAuto
)

func (m Mode) String() string           { return string(m) }
func (s Scheduler) String() string      { return string(s) }
func (s ResponseSource) String() string { return string(s) }
func (p FragmentPolicy) String() string { return string(p) }
func (a OnDown) String() string         { return string(a) }
func (a AllDown) String() string        { return string(a) }
func (m XDPMode) String() string        { return string(m) }

// ModeNames lists the modes this build accepts, the default first.
func ModeNames() []string { return names(modes) }

// SchedulerNames lists the schedulers, the default first.
func SchedulerNames() []string { return names(schedulers) }

// FragmentPolicyNames lists the fragment policies, the default first.
func FragmentPolicyNames() []string { return names(fragmentPolicies) }

// ParseMode parses a mode name; the error says which names are accepted.
func ParseMode(s string) (Mode, error) { return parseEnum(s, modes) }

// ParseScheduler parses a scheduler name.
func ParseScheduler(s string) (Scheduler, error) { return parseEnum(s, schedulers) }

// ParseFragmentPolicy parses a fragment policy.
func ParseFragmentPolicy(s string) (FragmentPolicy, error) { return parseEnum(s, fragmentPolicies) }

// ParseOnDown parses an on_down action.
func ParseOnDown(s string) (OnDown, error) { return parseEnum(s, onDownActions) }

// ParseAllDown parses an all_down action.
func ParseAllDown(s string) (AllDown, error) { return parseEnum(s, allDownActions) }

// ParseXDPMode parses an XDP attach mode.
func ParseXDPMode(s string) (XDPMode, error) { return parseEnum(s, xdpModes) }

func names[T ~string](vals []T) []string {
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = string(v)
	}
	return out
}

// parseEnum returns the value of allowed named s, or an error that says
// what to write instead. Enumerated values are lower case.
func parseEnum[T ~string](s string, allowed []T) (T, error) {
	if i := slices.Index(allowed, T(s)); i >= 0 {
		return allowed[i], nil
	}
	if l := strings.ToLower(s); slices.Contains(allowed, T(l)) {
		return "", fmt.Errorf("%q must be written in lower case: %s", s, l)
	}
	return "", fmt.Errorf("%q is not supported; use %s", s, choices(names(allowed)))
}

// choices lists allowed values: "a or b", or "one of: a, b, c".
func choices(allowed []string) string {
	if len(allowed) == 2 {
		return allowed[0] + " or " + allowed[1]
	}
	return "one of: " + strings.Join(allowed, ", ")
}
