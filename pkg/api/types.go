// Package api is the contract of the daemon's control interface: HTTP/JSON
// over a root-only Unix socket. It holds the wire types, the error kinds a
// failure is classified by, the limits and resource paths both sides
// share, and the client the fulcrum CLI uses. The server is the daemon's
// (internal/apiserver). The wire types are documented in docs/api.md.
package api

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// VIPRef names a VIP: protocol, address and port (0 = every port). Its
// text form is "tcp/203.0.113.10:80" or "udp/[2001:db8::1]:53".
type VIPRef struct {
	Protocol string     `json:"protocol"`
	Address  netip.Addr `json:"address"`
	Port     uint16     `json:"port"`
}

func (v VIPRef) String() string {
	return fmt.Sprintf("%s/%s", v.Protocol, netip.AddrPortFrom(v.Address, v.Port))
}

// ParseVIPRef parses the text form of a VIPRef.
func ParseVIPRef(s string) (VIPRef, error) {
	proto, rest, ok := strings.Cut(s, "/")
	if !ok {
		return VIPRef{}, fmt.Errorf("vip %q: want PROTO/ADDRESS:PORT, e.g. tcp/203.0.113.10:80 or udp/[2001:db8::1]:53", s)
	}
	proto = strings.ToLower(proto)
	if proto != "tcp" && proto != "udp" {
		return VIPRef{}, fmt.Errorf("vip %q: protocol %q, want tcp or udp", s, proto)
	}
	ap, err := netip.ParseAddrPort(rest)
	if err != nil {
		return VIPRef{}, fmt.Errorf("vip %q: %v (want ADDRESS:PORT, IPv6 in brackets)", s, err)
	}
	return VIPRef{Protocol: proto, Address: ap.Addr(), Port: ap.Port()}, nil
}

// VIP is a VIP with its configuration, as added through the API or shown
// by a listing. Zero-valued optional fields take the config defaults.
type VIP struct {
	VIPRef
	Name      string `json:"name,omitempty"`
	Mode      string `json:"mode"`                // "dsr"
	Scheduler string `json:"scheduler,omitempty"` // "maglev" (default), "source-hash", "round-robin", "least-conn" or "least-time"
	// RingSize is a prime; 0 = 65537. In a listing of a VIP with
	// RingSizeAuto it is the size the daemon chose (0 before its first
	// write); when adding one, leave it 0.
	RingSize uint32 `json:"ring_size,omitempty"`
	// RingSizeAuto has the daemon choose the ring size from the backends
	// and weights, up to RingSizeMax (0 = 65537): config's ring_size: auto.
	RingSizeAuto bool      `json:"ring_size_auto,omitempty"`
	RingSizeMax  uint32    `json:"ring_size_max,omitempty"`
	Conntrack    *bool     `json:"conntrack,omitempty"` // nil = true
	Fragments    string    `json:"fragments,omitempty"` // "drop" (default) or "pass"
	Backends     []Backend `json:"backends"`
	// SourceRanges are the client prefixes the VIP serves, e.g.
	// "198.51.100.0/24", of its family; empty = every client. Other
	// clients are dropped (verdict drop_source_range).
	SourceRanges []string `json:"source_ranges,omitempty"`
	// Pools are the VIP's source-prefix pools, listed only: they are set
	// in the configuration file (vips[].pools), and a VIP added through
	// the API has none.
	Pools []Pool `json:"pools,omitempty"`
}

// Pool is a source-prefix pool of a VIP: its clients' new flows take a
// ring over its backends (docs/schedulers.md).
type Pool struct {
	Name string `json:"name"`
	// Prefixes are the pool's inline client prefixes; PrefixFile the file
	// it also reads them from; PrefixCount counts both.
	Prefixes    []string     `json:"prefixes,omitempty"`
	PrefixFile  string       `json:"prefix_file,omitempty"`
	PrefixCount int          `json:"prefix_count"`
	Backends    []netip.Addr `json:"backends"`
	// Fallback is what the pool's clients get while none of its backends
	// is up: "vip" (the VIP's ring) or "drop".
	Fallback string `json:"fallback"`
}

// Backend is one backend of a VIP.
type Backend struct {
	Address netip.Addr `json:"address"`
	Weight  uint32     `json:"weight"`
	// MAC is the next hop in dsr mode; empty = resolved by the daemon.
	MAC string `json:"mac,omitempty"`
	// Health is filled in listings: "up", "down" or "unknown", with the
	// time of the last transition and the last probe error.
	Health      string    `json:"health,omitempty"`
	HealthSince time.Time `json:"health_since,omitzero"`
	HealthError string    `json:"health_error,omitempty"`
	// Active and Inactive are filled in listings: the backend's connection
	// entries by the daemon's last count (IPVS's sense: established;
	// syn, fin and closed), made every 2 s or more (docs/connections.md).
	Active   uint64 `json:"active"`
	Inactive uint64 `json:"inactive"`
	// ResponseTime is filled in listings of a VIP with response_time.
	ResponseTime *ResponseTime `json:"response_time,omitempty"`
}

// ResponseTime is a backend's response time: an EWMA per source, folded
// every 100 ms (docs/schedulers.md, least-time). Zero = no sample yet.
type ResponseTime struct {
	// Source is what the VIP measures: passive, active or both.
	Source string `json:"source"`
	// Cost is what the least-time scheduler reads: the source's EWMA
	// (under both, the passive one while the backend had a handshake in
	// the last 10 s, else the active one).
	Cost    time.Duration `json:"cost_ns"`
	Passive time.Duration `json:"passive_ns"`
	Active  time.Duration `json:"active_ns"`
}

// WeightRequest is the body of PUT /v1/vips/{vip}/backends/{address}/weight.
type WeightRequest struct {
	Weight *uint32 `json:"weight"`
}

// Status is the daemon's overall state.
type Status struct {
	Version    string        `json:"version"`
	Instance   string        `json:"instance"`
	Started    time.Time     `json:"started"`
	ConfigFile string        `json:"config_file"`
	Interfaces []Interface   `json:"interfaces"`
	VIPs       int           `json:"vips"`
	Backends   int           `json:"backends"`
	VRRP       string        `json:"vrrp"` // "disabled", "master", "backup", "fault"
	LastApply  time.Time     `json:"last_apply"`
	Reconcile  time.Duration `json:"last_reconcile_ns"`
	Adopted    bool          `json:"adopted"` // took over pinned state at start
	// Layout is the layout version of the fast path's maps
	// (docs/upgrade.md): what a restart adopts, or migrates from; 0 from
	// a daemon older than this field.
	Layout uint32 `json:"layout"`
	// Sync is connection sync's state; nil when the daemon runs none.
	Sync *SyncStatus `json:"sync,omitempty"`
}

// SyncStatus is connection sync with the peer LB nodes: what was sent,
// received and installed, and what was lost where (docs/connections.md,
// "Sync").
type SyncStatus struct {
	Listen string     `json:"listen"`
	Peers  []SyncPeer `json:"peers"`
	// Sent and received entries and datagrams; an entry sent to two
	// peers counts twice. Resyncs are in them.
	SentEntries       uint64 `json:"sent_entries"`
	SentDatagrams     uint64 `json:"sent_datagrams"`
	ReceivedEntries   uint64 `json:"received_entries"`
	ReceivedDatagrams uint64 `json:"received_datagrams"`
	// Installed counts received entries filed into the connection table;
	// Skipped the others, by reason: fresher (a live local entry seen as
	// recently), unknown (VIP or backend not configured here), full (no
	// free way; sync never evicts a live entry), expired, error.
	Installed uint64            `json:"installed"`
	Skipped   map[string]uint64 `json:"skipped"`
	// Dropped counts received datagrams dropped, by reason (every reason
	// present): forged, replayed, truncated, ...
	Dropped map[string]uint64 `json:"dropped"`
	// Overflow counts entries lost before they were sent, by where: ring
	// (the fast path's event ring buffer was full) and queue (the send
	// queue was full).
	Overflow map[string]uint64 `json:"overflow"`
	// Resyncs counts full resyncs sent to peers, ResyncEntries their
	// entries.
	Resyncs       uint64 `json:"resyncs"`
	ResyncEntries uint64 `json:"resync_entries"`
	// Refreshes counts the walks that re-sent busy entries before their
	// peers' copies expire, RefreshEntries the entries they re-sent.
	Refreshes      uint64 `json:"refreshes"`
	RefreshEntries uint64 `json:"refresh_entries"`
	// SendLag is the time from an entry's event to its datagram's send
	// (a sample), ReceiveAge the age of datagrams at receipt (as far as
	// the nodes' clocks agree).
	SendLag    Lag `json:"send_lag"`
	ReceiveAge Lag `json:"receive_age"`
}

// SyncPeer is one configured sync peer.
type SyncPeer struct {
	Address   netip.AddrPort `json:"address"`
	Up        bool           `json:"up"`
	LastHeard time.Time      `json:"last_heard"`
}

// Lag summarises durations: how many, their sum and the largest.
type Lag struct {
	Count uint64        `json:"count"`
	Sum   time.Duration `json:"sum_ns"`
	Max   time.Duration `json:"max_ns"`
}

// Mean is Sum/Count; 0 when nothing was measured.
func (l Lag) Mean() time.Duration {
	if l.Count == 0 {
		return 0
	}
	return l.Sum / time.Duration(l.Count)
}

// Interface is one interface the balancer is attached to.
type Interface struct {
	Name    string `json:"name"`
	Ifindex int    `json:"ifindex"`
	XDPMode string `json:"xdp_mode"` // "native" or "generic"
}

// Counter is a packet and byte count with its rate over the last interval.
type Counter struct {
	Packets    uint64  `json:"packets"`
	Bytes      uint64  `json:"bytes"`
	PacketRate float64 `json:"packets_per_second"`
	ByteRate   float64 `json:"bytes_per_second"`
}

// Stats is a snapshot of the fast path's counters.
type Stats struct {
	Time     time.Time         `json:"time"`
	Interval time.Duration     `json:"interval_ns"` // over which rates are computed
	Verdicts map[string]uint64 `json:"verdicts"`    // e.g. "tx_dsr", "drop_malformed", "ct_hit"
	VIPs     []VIPStats        `json:"vips"`
}

// VIPStats are one VIP's counters and its backends'.
type VIPStats struct {
	VIP      VIPRef         `json:"vip"`
	Counter  Counter        `json:"counter"`
	Backends []BackendStats `json:"backends"`
}

// BackendStats are one backend's counters.
type BackendStats struct {
	Address netip.Addr `json:"address"`
	Counter Counter    `json:"counter"`
	// Active and Inactive are its connections, as in Backend.
	Active   uint64 `json:"active"`
	Inactive uint64 `json:"inactive"`
}

// ExplainRequest is a packet to explain.
type ExplainRequest struct {
	Src      netip.Addr `json:"src"`
	Dst      netip.Addr `json:"dst"`
	Protocol string     `json:"protocol"`
	Sport    uint16     `json:"sport"`
	Dport    uint16     `json:"dport"`
	SYN      bool       `json:"syn"`
}

// Explanation says which backend a packet reaches and why.
type Explanation struct {
	VIP     VIPRef     `json:"vip"`
	Backend netip.Addr `json:"backend"`
	// Reason is "connection entry", "ring slot", "round-robin",
	// "least-conn", "least-time", or, for a dropped packet, "source
	// range" or "pool down".
	Reason      string     `json:"reason"`
	Hash        uint32     `json:"hash"`
	Slot        uint32     `json:"slot"`
	RingSize    uint32     `json:"ring_size"`
	RingBackend netip.Addr `json:"ring_backend"`
	// Pool names the VIP's source-prefix pool that holds the client, if
	// any: its ring is the one the slot is of, unless PoolFallback says
	// the pool has no backend up and what its clients get instead: "vip"
	// (the VIP's ring) or "drop".
	Pool         string `json:"pool,omitempty"`
	PoolFallback string `json:"pool_fallback,omitempty"`
	// Entry is the flow's connection entry, when it has one naming a live
	// backend (never for a SYN, which always takes the ring). An expired
	// entry is shown too: it explains why a flow left its backend.
	Entry *ConnEntry `json:"entry,omitempty"`
	// LeastConn is the comparison least-conn made for a new flow of a
	// least-conn VIP (Reason "least-conn"), from the counts as explain
	// read them: a snapshot, the fast path decides with the counts of
	// the moment the packet comes.
	LeastConn *LeastConnChoice `json:"least_conn,omitempty"`
	// LeastTime is the comparison least-time made for a new flow of a
	// least-time VIP (Reason "least-time"): each candidate's RT is part
	// of its cost, and a candidate replaced the best so far only if it
	// was lower by more than Margin. A snapshot, as LeastConn.
	LeastTime *LeastConnChoice `json:"least_time,omitempty"`
	// Scheduler is the VIP's: "maglev", "source-hash", "round-robin",
	// "least-conn" or "least-time".
	Scheduler string `json:"scheduler,omitempty"`
	// RoundRobin is set with reason "round-robin": the VIP's weighted
	// sequence decides the new flow. Backend is then unset: the pick is
	// the next slot on the CPU the packet reaches, which depends on the
	// flows that CPU handed out before, so it cannot be predicted.
	RoundRobin *RRSequence `json:"round_robin,omitempty"`
	// NewFlowLimit is conntrack.new_flow_limit (0 or absent: none), given
	// with reason "round-robin", "least-conn" or "least-time": a new flow
	// that finds the CPU receiving it over the limit this second takes
	// the ring (Slot, RingBackend) instead of the scheduler, and gets no
	// connection entry (counted ct_guard).
	NewFlowLimit uint32 `json:"new_flow_limit,omitempty"`
}

// RRSequence is a round-robin VIP's weighted sequence: Length slots, of
// which each backend has its Shares' Slots (its weight over the weights'
// greatest common divisor).
type RRSequence struct {
	Length uint32    `json:"length"`
	Shares []RRShare `json:"shares"`
}

// RRShare is one backend's slots in an RRSequence.
type RRShare struct {
	Backend netip.Addr `json:"backend"`
	Slots   uint32     `json:"slots"`
}

// LeastConnChoice is how least-conn or least-time chose a new flow's
// backend.
type LeastConnChoice struct {
	// Method is "exact" (every backend of the pool compared) or
	// "two_choices" (the ring's slot and a second, rehashed one).
	Method string `json:"method"`
	// Margin (least-time) is the part of the best cost so far a
	// candidate's must be lower by to replace it: 0.125.
	Margin float64 `json:"margin,omitempty"`
	// Candidates are the backends compared, in the fast path's order: the
	// first is the best until one beats it; under least-conn the first
	// of the lowest (active + 1) / weight wins.
	Candidates []LeastConnCandidate `json:"candidates"`
}

// LeastConnCandidate is one backend least-conn or least-time compared.
type LeastConnCandidate struct {
	Backend netip.Addr `json:"backend"`
	Active  uint64     `json:"active"`
	Weight  uint32     `json:"weight"`
	// RTMicros (least-time) is the response time compared, in µs; 0 when
	// the backend is not measured: it and the best it was compared with
	// were then compared on their load alone.
	RTMicros uint32 `json:"rt_us,omitempty"`
	// Beat (least-time): it became the best so far; WithinMargin: its
	// cost was lower than the best so far's, but not by more than the
	// margin, so the best stayed.
	Beat         bool `json:"beat,omitempty"`
	WithinMargin bool `json:"within_margin,omitempty"`
}

// ConnEntry is a connection entry as explain found it.
type ConnEntry struct {
	Backend netip.Addr `json:"backend"`
	// State is the TCP state the client's segments show: "syn",
	// "established", "fin" or "closed"; UDP entries are "established".
	State string `json:"state"`
	// Idle is how long ago the entry last saw a packet (jiffies
	// resolution); Timeout is how long it may stay idle in its state.
	Idle    time.Duration `json:"idle_ns"`
	Timeout time.Duration `json:"timeout_ns"`
	// Expired entries no longer decide: the packet takes the ring.
	Expired bool `json:"expired,omitempty"`
}

// ApplyResult summarises a reload.
type ApplyResult struct {
	Added     []string `json:"added"`     // VIPs, text form
	Removed   []string `json:"removed"`   // VIPs
	Changed   []string `json:"changed"`   // VIPs whose ring or settings changed
	Unchanged int      `json:"unchanged"` // VIPs not touched
}

// RunningConfig is the daemon's desired state as a config file
// (GET /v1/config): the file it started with or last applied, with every
// change made through the API since (VIPs and backends added, removed,
// reweighted). Saved and passed to --config or apply, it gives the same
// state back.
type RunningConfig struct {
	YAML string `json:"yaml"`
}

// Plan is what applying a config file would do, computed and not applied
// (POST /v1/apply?dry_run=1). Lists are sorted by VIP.
type Plan struct {
	Added     []string  `json:"added"`   // VIPs, text form
	Removed   []string  `json:"removed"` // VIPs
	Changed   []VIPPlan `json:"changed"`
	Unchanged int       `json:"unchanged"` // VIPs the file leaves as they are
	// Restart names the settings that differ but only a restart can
	// change; a file with any is refused by apply.
	Restart []string `json:"restart"`
	// Global names the other settings that differ (ipip, the new-flow
	// guard, the log level), which apply changes in place.
	Global []string `json:"global"`
}

// VIPPlan is how a VIP would change.
type VIPPlan struct {
	VIP string `json:"vip"`
	// Settings are the VIP's own fields that change, "field: old -> new".
	Settings []string `json:"settings"`
	// Backends are the backends before and after, sorted by address.
	Backends []BackendPlan `json:"backends"`
	// RingSize is the size of the new ring; MovedSlots of its slots name
	// another backend than they do now (all of them if the size changes),
	// MovedShare = MovedSlots / RingSize. Connection entries keep
	// established flows on their backend; new flows follow the ring.
	RingSize   uint32  `json:"ring_size"`
	MovedSlots uint32  `json:"moved_slots"`
	MovedShare float64 `json:"moved_share"`
}

// BackendPlan is one backend of a changed VIP: its weight and ring slots
// now (Old*) and after the change (New*). A backend being added has no
// old slots, one being removed no new ones. The slots are those of the
// desired backends, whatever their health now.
type BackendPlan struct {
	Address   netip.Addr `json:"address"`
	Change    string     `json:"change"` // "added", "removed", "weight", "mac", "health check", "" (unchanged)
	OldWeight uint32     `json:"old_weight"`
	NewWeight uint32     `json:"new_weight"`
	OldSlots  uint32     `json:"old_slots"`
	NewSlots  uint32     `json:"new_slots"`
}

// VRRP is the failover state of the node.
type VRRP struct {
	Enabled         bool              `json:"enabled"`
	State           string            `json:"state"` // "disabled", "init", "backup", "master", "fault"
	Priority        int               `json:"priority"`
	Master          netip.Addr        `json:"master,omitzero"`
	AdvertsSent     uint64            `json:"adverts_sent"`
	AdvertsReceived uint64            `json:"adverts_received"`
	Transitions     uint64            `json:"transitions"`
	LastTransition  time.Time         `json:"last_transition,omitzero"`
	Dropped         map[string]uint64 `json:"dropped,omitempty"`
	// Timing of the protocol thread (see docs/vrrp.md): the longest an
	// advertisement of this node waited past its time, the longest a send
	// call took, and the longest gap between advertisements heard from
	// the master; the Late counts are the sends more than half an
	// interval late and the gaps over 1.5 intervals.
	WorstSendDelay time.Duration `json:"worst_send_delay_ns"`
	WorstSendCall  time.Duration `json:"worst_send_call_ns"`
	LateSends      uint64        `json:"late_sends"`
	WorstAdvertGap time.Duration `json:"worst_advert_gap_ns"`
	LateAdverts    uint64        `json:"late_adverts"`
	// GuardSent counts the advertisements the agent's guard threads sent
	// because the protocol thread was held off its CPU past a quarter
	// interval (docs/vrrp.md, guard threads).
	GuardSent uint64 `json:"guard_sent"`
	// Sick says why the node's priority is lowered to 1 (VRRP tracking:
	// an interface down, the balancer detached, every backend of a VIP
	// down); empty when the node is well.
	Sick []string `json:"sick,omitempty"`
}

// Error is the body of every non-2xx response.
type Error struct {
	Error string `json:"error"`
}

// Request body limits. A body over the limit is refused with 413.
const (
	MaxJSONBody  = 1 << 20 // 1 MiB for JSON requests
	MaxApplyBody = 4 << 20 // 4 MiB for a config file sent to /v1/apply
)

// Errors the daemon wraps to classify a failure; the server picks the
// status code by them and StatusError unwraps to them.
var (
	ErrInvalid  = errorString("invalid request")
	ErrNotFound = errorString("not found")
	ErrConflict = errorString("conflict")
)

type errorString string

func (e errorString) Error() string { return string(e) }

// FormatPort renders a port, with 0 as "*".
func FormatPort(p uint16) string {
	if p == 0 {
		return "*"
	}
	return strconv.Itoa(int(p))
}

// VIPPath is the path of a VIP's resource, /v1/vips/{vip}.
func VIPPath(ref VIPRef) string { return "/v1/vips/" + escapeSegment(ref.String()) }

// BackendPath is the path of a backend's resource,
// /v1/vips/{vip}/backends/{address}.
func BackendPath(ref VIPRef, addr netip.Addr) string {
	return VIPPath(ref) + "/backends/" + escapeSegment(addr.String())
}

// escapeSegment escapes s for use as one path segment, '/' included.
func escapeSegment(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~:", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// BGP is the state of the node's BGP speaker (GET /v1/bgp): its sessions,
// and each VIP address with whether it is announced and, if not, why.
type BGP struct {
	Enabled    bool       `json:"enabled"`
	ASN        uint32     `json:"asn,omitempty"`
	RouterID   netip.Addr `json:"router_id,omitzero"`
	ListenPort int        `json:"listen_port,omitempty"` // 0 = not listening
	// Drained is set by `fulcrum node drain` (POST /v1/node/drain): every
	// VIP is withdrawn until `fulcrum node resume`.
	Drained bool `json:"drained"`
	// Sick says why the node withdraws every VIP: an interface down, the
	// balancer detached. Empty when the node is well.
	Sick     []string    `json:"sick,omitempty"`
	Peers    []BGPPeer   `json:"peers"`
	Prefixes []BGPPrefix `json:"prefixes"`
	// Announced is how many prefixes are announced.
	Announced int `json:"announced"`
	// VIPPackets is the sum of every VIP's packet counter on this node:
	// `fulcrum node drain` watches it stop growing.
	VIPPackets uint64 `json:"vip_packets"`
}

// BGPPeer is one BGP session.
type BGPPeer struct {
	Address netip.Addr `json:"address"`
	ASN     uint32     `json:"asn"`
	// State is idle, connect, active, opensent, openconfirm or
	// established.
	State    string        `json:"state"`
	Since    time.Time     `json:"since,omitzero"` // when it was established
	HoldTime time.Duration `json:"hold_time_ns"`   // negotiated; 0 unless established
	// Advertised is how many prefixes the peer holds from this node;
	// Received how many it sent (all refused: the node learns nothing).
	Advertised      uint64 `json:"advertised"`
	Received        uint64 `json:"received"`
	UpdatesSent     uint64 `json:"updates_sent"`
	UpdatesReceived uint64 `json:"updates_received"`
	MD5             bool   `json:"md5"`
	Multihop        int    `json:"multihop,omitempty"`
}

// BGPPrefix is one VIP address's route.
type BGPPrefix struct {
	Prefix    netip.Prefix `json:"prefix"`
	Announced bool         `json:"announced"`
	// Reason says why a prefix is withdrawn: "drained", "node sick", "no
	// healthy backend".
	Reason      string   `json:"reason,omitempty"`
	VIPs        []string `json:"vips"` // the VIPs on the address, e.g. tcp/203.0.113.10:80
	Communities []string `json:"communities,omitempty"`
	MED         *uint32  `json:"med,omitempty"`
}
