package config

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
	"github.com/fulcrum-lb/fulcrum/internal/ringsize"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
	"github.com/fulcrum-lb/fulcrum/pkg/maglev"
)

// The keys allowed in each mapping, in the order of the documentation.
var (
	rootKeys      = []string{"instance", "bpffs", "interfaces", "log", "api", "metrics", "conntrack", "ipip", "health_check", "ring_size", "ring_size_max", "ring_arena_slots", "vrrp", "bgp", "sync", "vips"}
	ipipKeys      = []string{"source_v4", "source_v6", "gateway_mac"}
	interfaceKeys = []string{"name", "xdp_mode"}
	logKeys       = []string{"level", "format"}
	apiKeys       = []string{"socket"}
	metricsKeys   = []string{"address"}
	conntrackKeys = []string{"entries", "new_flow_limit", "timeouts"}
	timeoutKeys   = []string{"tcp_syn", "tcp_established", "tcp_fin", "tcp_closed", "udp"}
	vipKeys       = []string{"name", "address", "port", "protocol", "mode", "scheduler", "ring_size", "ring_size_max", "conntrack", "fragments", "source_ranges", "health_check", "backends", "pools", "response_time"}
	responseKeys  = []string{"source", "half_life"}
	backendKeys   = []string{"address", "weight", "mac", "health_check"}
	healthKeys    = []string{"type", "interval", "timeout", "rise", "fall", "port", "path", "expect_status", "host", "skip_verify", "payload", "expect", "source", "on_down", "all_down", "through_datapath"}
	vrrpKeys      = []string{"interface", "vrid", "priority", "advert_interval", "preempt", "preempt_delay", "unicast_peers", "gratuitous_count", "family", "virtual_addresses"}
)

var instanceRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// maxSocketPath is the longest path a Unix socket address can hold
// (sun_path is 108 bytes including the terminating NUL).
const maxSocketPath = 107

func (d *decoder) config(root *yaml.Node) *Config {
	c := &Config{}
	f := d.mapping(d.deref(root), "", "a mapping of settings (instance, interfaces, vips, ...)", rootKeys)

	c.Instance = f.str("instance", DefaultInstance)
	if f.has("instance") && !instanceRE.MatchString(c.Instance) {
		f.errf("instance", "%q is not a valid instance name; use 1 to 32 lower-case letters, digits and '-', starting with a letter or digit", c.Instance)
	}

	c.BPFFS = f.str("bpffs", DefaultBPFFS)
	if f.has("bpffs") {
		if msg := checkAbsPath(c.BPFFS); msg != "" {
			f.errf("bpffs", "%q %s", c.BPFFS, msg)
		} else {
			c.BPFFS = filepath.Clean(c.BPFFS)
		}
	}

	c.Interfaces = d.interfaces(f)

	lf := f.sub("log", "a mapping with level and format", logKeys)
	c.Log.Level = lf.enum("level", "info", logLevels)
	c.Log.Format = lf.enum("format", "text", logFormats)

	af := f.sub("api", "a mapping with socket", apiKeys)
	c.API.Socket = af.str("socket", api.SocketPath(c.Instance))
	if af.has("socket") {
		if msg := checkAbsPath(c.API.Socket); msg != "" {
			af.errf("socket", "%q %s", c.API.Socket, msg)
		} else if c.API.Socket = filepath.Clean(c.API.Socket); len(c.API.Socket) > maxSocketPath {
			af.errf("socket", "%q is %d bytes, over the %d a Unix socket path can hold; use a shorter path", c.API.Socket, len(c.API.Socket), maxSocketPath)
		}
	}

	mf := f.sub("metrics", "a mapping with address", metricsKeys)
	c.Metrics.Address = mf.str("address", DefaultMetricsAddress)
	if mf.has("address") {
		if c.Metrics.Address == "off" {
			c.Metrics.Address = ""
		} else if msg := checkListenAddress(c.Metrics.Address); msg != "" {
			mf.errf("address", "%q %s", c.Metrics.Address, msg)
		}
	}

	cf := f.sub("conntrack", "a mapping with entries", conntrackKeys)
	c.Conntrack.Entries = uint32(cf.integer("entries", DefaultConntrackEntries, MinConntrackEntries, MaxConntrackEntries))
	c.Conntrack.NewFlowLimit = uint32(cf.integer("new_flow_limit", 0, 0, 100_000_000))
	c.Conntrack.Timeouts = timeoutsOf(cf.sub("timeouts", timeoutsWhat, timeoutKeys), "", datapath.DefaultConnTimeouts)

	var top *HealthCheck
	topSet := f.has("health_check")
	if topSet {
		var ok bool
		top, ok = d.healthCheck(f.sub("health_check", "a health check mapping (type, interval, ...)", healthKeys))
		if !ok {
			top = nil // already reported; do not repeat it for every VIP
		}
		c.HealthCheck = top.clone()
	}

	d.ringDefault = d.ringSize(f, defaultRing, false)
	c.RingSize, c.RingSizeAuto, c.RingSizeMax = d.ringDefault.size, d.ringDefault.auto, d.ringDefault.max
	c.RingArenaSlots = ringArena(f)

	if f.has("vrrp") {
		c.VRRP = d.vrrp(f.sub("vrrp", "a mapping (interface, vrid, ...)", vrrpKeys))
	}

	if f.has("bgp") {
		c.BGP = d.bgp(f.sub("bgp", "a mapping (asn, router_id, peers, ...)", bgpKeys))
		if c.VRRP != nil {
			f.errf("bgp", "cannot be combined with vrrp: with bgp every node is active and the routers spread the flows, so a VRRP backup would take traffic all the same (docs/scale-out.md); keep one of the two")
		}
	}

	if f.has("sync") {
		c.Sync = d.sync(f.sub("sync", "a mapping (peers, port, key_file, ...)", syncKeys))
	}

	if f.has("ipip") {
		c.IPIP = d.ipip(f.sub("ipip", "a mapping with source_v4, source_v6 and gateway_mac", ipipKeys))
	}

	c.VIPs = d.vips(f, top, topSet)
	if d.count() == 0 { // the VIPs are whole: their rings can be summed
		checkRingArena(f, c)
	}
	// An ipip VIP needs an outer source prefix for each backend family.
	for i, v := range c.VIPs {
		if v.Mode != ModeIPIP {
			continue
		}
		for j, b := range v.Backends {
			switch {
			case b.Address.Is4() && !c.IPIP.SourceV4.IsValid():
				d.add(fmt.Sprintf("vips[%d].backends[%d].address", i, j), nil,
					"ipip to the IPv4 backend %s needs an outer source prefix: set ipip.source_v4 (e.g. 198.18.1.0/24, routed back to this node)", b.Address)
			case b.Address.Is6() && !c.IPIP.SourceV6.IsValid():
				d.add(fmt.Sprintf("vips[%d].backends[%d].address", i, j), nil,
					"ipip to the IPv6 backend %s needs an outer source prefix: set ipip.source_v6 (e.g. 2001:db8:4::/64, routed back to this node)", b.Address)
			}
		}
	}
	return c
}

// ipip reads the encapsulation settings.
func (d *decoder) ipip(f *fields) IPIP {
	var c IPIP
	prefix := func(key string, v4 bool, example string) netip.Prefix {
		if !f.has(key) {
			return netip.Prefix{}
		}
		s := f.str(key, "")
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			f.errf(key, "%q is not a prefix; write it like %s", s, example)
		case p.Addr().Is4() != v4 || p.Addr().Is4In6():
			f.errf(key, "%s is not an %s prefix; write it like %s", s, map[bool]string{true: "IPv4", false: "IPv6"}[v4], example)
		case p.Masked() != p:
			f.errf(key, "%s has host bits set; use %s", s, p.Masked())
		default:
			return p
		}
		return netip.Prefix{}
	}
	c.SourceV4 = prefix("source_v4", true, "198.18.1.0/24")
	c.SourceV6 = prefix("source_v6", false, "2001:db8:4::/64")
	if f.has("gateway_mac") {
		c.GatewayMAC = f.mac("gateway_mac")
	}
	return c
}

// checkAbsPath returns "" for a usable absolute path, or what is wrong.
func checkAbsPath(p string) string {
	switch {
	case p == "":
		return "is empty; use an absolute path"
	case !filepath.IsAbs(p):
		return "is not an absolute path; start it with /"
	case strings.ContainsRune(p, 0):
		return "contains a NUL byte"
	}
	return ""
}

// checkListenAddress returns "" for a usable host:port to listen on.
func checkListenAddress(s string) string {
	const fix = `; use host:port such as "127.0.0.1:9542", "[::1]:9542" or ":9542", or "off" to disable`
	if s == "" {
		return "is empty" + fix
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "is not host:port" + fix
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "has no valid port (1..65535)" + fix
	}
	if host == "" {
		return ""
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return ""
	}
	if !validHostname(host) {
		return "has an invalid host" + fix
	}
	return ""
}

func validHostname(h string) bool {
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return false
			}
		}
	}
	return true
}

// checkIfname returns "" for a name Linux accepts for a network interface,
// or what is wrong with it.
func checkIfname(name string) string {
	switch {
	case name == "":
		return "is empty; use the interface's name, e.g. eth0"
	case len(name) > 15:
		return fmt.Sprintf("is %d bytes; Linux interface names are at most 15", len(name))
	case name == "." || name == "..":
		return "is not a valid interface name"
	case strings.ContainsAny(name, "/:"):
		return "contains '/' or ':', which Linux interface names cannot"
	case strings.IndexFunc(name, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return "contains whitespace or control characters, which Linux interface names cannot"
	}
	return ""
}

func (d *decoder) interfaces(f *fields) []Interface {
	items := f.seq("interfaces", "a list of interfaces, e.g. [{name: eth0}]")
	if len(items) == 0 {
		if f.ok && (!f.has("interfaces") || f.vals["interfaces"].Kind == yaml.SequenceNode) {
			f.errf("interfaces", "at least one interface is required; add e.g. interfaces: [{name: eth0}]")
		}
		return nil
	}
	out := make([]Interface, 0, len(items))
	seen := map[string]int{}
	for i, it := range items {
		p := index(f.at("interfaces"), i)
		fi := d.mapping(it, p, "a mapping such as {name: eth0}", interfaceKeys)
		var ifc Interface
		if fi.require("name", "set the network interface to attach to, e.g. eth0") {
			ifc.Name = fi.str("name", "")
			if msg := checkIfname(ifc.Name); msg != "" {
				fi.errf("name", "%q %s", ifc.Name, msg)
			} else if j, dup := seen[ifc.Name]; dup {
				fi.errf("name", "%q is already interfaces[%d]; list each interface once", ifc.Name, j)
			} else {
				seen[ifc.Name] = i
			}
		}
		ifc.XDPMode = enumOf(fi, "xdp_mode", DefaultXDPMode, xdpModes)
		out = append(out, ifc)
	}
	return out
}

// healthCheck decodes a health_check block. It returns nil for type none
// and for a block too broken to use; ok is false when problems were found.
func (d *decoder) healthCheck(f *fields) (hc *HealthCheck, ok bool) {
	before := d.count()
	if !f.ok {
		return nil, false
	}
	h := &HealthCheck{}
	if f.require("type", "set "+choices(healthCheckTypes)) {
		h.Type = f.enum("type", "", healthCheckTypes)
	}
	if h.Type == "none" {
		// Nothing else is used. The other fields may stay (only their
		// names are checked) so that a check can be switched off and on
		// again by changing its type alone.
		return nil, true
	}

	h.Interval = f.duration("interval", DefaultHealthInterval, true)
	h.Timeout = f.duration("timeout", min(DefaultHealthTimeout, h.Interval), true)
	if f.has("timeout") && h.Timeout > h.Interval {
		f.errf("timeout", "%s is longer than the interval %s; use a timeout no longer than the interval", h.Timeout, h.Interval)
	}
	h.Rise = int(f.integer("rise", DefaultHealthRise, 1, 100))
	h.Fall = int(f.integer("fall", DefaultHealthFall, 1, 100))
	h.Port = uint16(f.integer("port", 0, 0, 65535))

	if h.Type != "" { // with an invalid type, the type-specific fields cannot be judged
		d.typeSpecific(f, h)
	}
	if a, ok := f.addr("source"); ok {
		if msg := checkUnicast(a); msg != "" {
			f.errf("source", "%s %s; use one of this node's addresses", a, msg)
		} else {
			h.Source = a
		}
	}
	h.OnDown = enumOf(f, "on_down", DefaultOnDown, onDownActions)
	h.AllDown = enumOf(f, "all_down", DefaultAllDown, allDownActions)
	h.ThroughDatapath = f.boolean("through_datapath", false)

	if h.Type == "" {
		return nil, false
	}
	return h, d.count() == before
}

// typeSpecific decodes the fields that only some check types use, and
// rejects them for the other types.
func (d *decoder) typeSpecific(f *fields, h *HealthCheck) {
	httpish := h.Type == "http" || h.Type == "https"
	notFor := func(key, types string) {
		if f.present(key) {
			f.errf(key, "only %s checks use it, and this one is %s; remove it or change the type", types, h.Type)
		}
	}
	if httpish {
		h.Path = f.str("path", "/")
		if !strings.HasPrefix(h.Path, "/") {
			f.errf("path", "%q must start with /, e.g. /healthz", h.Path)
		} else if strings.IndexFunc(h.Path, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
			f.errf("path", "%q contains whitespace or control characters; percent-encode them (e.g. %%20)", h.Path)
		}
		h.ExpectStatus = d.statuses(f)
		h.Host = f.str("host", "")
		if strings.IndexFunc(h.Host, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
			f.errf("host", "%q contains whitespace or control characters; use a host name such as www.example.com", h.Host)
		}
	} else {
		notFor("path", "http and https")
		notFor("expect_status", "http and https")
		notFor("host", "http and https")
	}
	if h.Type == "https" {
		h.SkipVerify = f.boolean("skip_verify", false)
	} else {
		notFor("skip_verify", "https")
	}
	if h.Type == "udp" {
		if f.require("payload", "a udp check needs the datagram to send, e.g. payload: \"ping\"") {
			h.Payload = f.str("payload", "")
			if h.Payload == "" {
				f.errf("payload", "\"\" is empty; a udp check needs the datagram to send, e.g. payload: \"ping\"")
			}
		}
		h.Expect = f.str("expect", "")
	} else {
		notFor("payload", "udp")
		notFor("expect", "udp")
	}
}

func (d *decoder) statuses(f *fields) []int {
	if !f.has("expect_status") {
		return []int{200}
	}
	n := f.vals["expect_status"]
	if n.Kind != yaml.SequenceNode {
		f.errf("expect_status", "want a list of HTTP statuses, e.g. [200] or [200, 204], got %s", describe(n))
		return []int{200}
	}
	items := f.seq("expect_status", "a list of HTTP statuses")
	if len(items) == 0 {
		f.errf("expect_status", "[] is empty; list at least one status, e.g. [200]")
		return []int{200}
	}
	out := make([]int, 0, len(items))
	seen := map[int64]bool{}
	for i, it := range items {
		p := index(f.at("expect_status"), i)
		v, ok := d.integer(it, p, 100, 599)
		if !ok {
			continue
		}
		if seen[v] {
			d.add(p, it, "%d is listed twice; list each status once", v)
			continue
		}
		seen[v] = true
		out = append(out, int(v))
	}
	return out
}

// checkUnicast returns "" for an address usable by a host, or what is
// wrong with it.
func checkUnicast(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "is unspecified"
	case a.IsMulticast():
		return "is multicast"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "is the broadcast address"
	case a.IsLoopback():
		return "is a loopback address, which never reaches the network"
	}
	return ""
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

func (d *decoder) vrrp(f *fields) *VRRP {
	if !f.ok {
		return nil
	}
	v := &VRRP{}
	if f.require("interface", "set the interface VRRP advertisements use, e.g. eth0") {
		v.Interface = f.str("interface", "")
		if msg := checkIfname(v.Interface); msg != "" {
			f.errf("interface", "%q %s", v.Interface, msg)
		}
	}
	if f.require("vrid", "set the virtual router id 1..255, the same on both nodes") {
		v.VRID = int(f.integer("vrid", 0, 1, 255))
	}
	v.Priority = int(f.integer("priority", DefaultVRRPPriority, 1, 255))
	v.AdvertInterval = int(f.integer("advert_interval", DefaultVRRPAdvertInterval, 1, 4095))
	v.Preempt = f.boolean("preempt", true)
	v.PreemptDelay = f.duration("preempt_delay", 0, false)
	v.GratuitousCount = int(f.integer("gratuitous_count", DefaultVRRPGratuitous, 0, 100))
	v.Family = f.enum("family", "ipv4", vrrpFamilies)

	seen := map[netip.Addr]int{}
	for i, it := range f.seq("unicast_peers", "a list of addresses, e.g. [198.18.0.3]") {
		p := index(f.at("unicast_peers"), i)
		a, ok := d.addr(it, p)
		if !ok {
			continue
		}
		switch {
		case checkUnicast(a) != "":
			d.add(p, it, "%s %s; use the peer's unicast address", a, checkUnicast(a))
		case (v.Family == "ipv4") != a.Is4():
			d.add(p, it, "%s is %s but vrrp.family is %s; use a peer address of that family or change family", a, family(a), v.Family)
		default:
			if j, dup := seen[a]; dup {
				d.add(p, it, "%s is already unicast_peers[%d]; list each peer once", a, j)
				continue
			}
			seen[a] = i
			v.UnicastPeers = append(v.UnicastPeers, a)
		}
	}
	seenPrefix := map[netip.Prefix]int{}
	for i, it := range f.seq("virtual_addresses", "a list of prefixes, e.g. [198.18.0.100/24]") {
		p := index(f.at("virtual_addresses"), i)
		var s string
		if it.Kind == yaml.ScalarNode {
			s = it.Value
		}
		pfx, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			d.add(p, it, "%q is not an address with its prefix length; write it like 198.18.0.100/24", s)
		case checkUnicast(pfx.Addr()) != "":
			d.add(p, it, "%s %s; use a unicast address", pfx.Addr(), checkUnicast(pfx.Addr()))
		default:
			if j, dup := seenPrefix[pfx]; dup {
				d.add(p, it, "%s is already virtual_addresses[%d]; list each address once", pfx, j)
				continue
			}
			seenPrefix[pfx] = i
			v.VirtualAddresses = append(v.VirtualAddresses, pfx)
		}
	}
	if f.ok && len(v.VirtualAddresses) == 0 {
		f.errf("virtual_addresses", "is empty: list the addresses the master holds (the upstream router's next hop for the VIPs), e.g. [198.18.0.100/24]")
	}
	return v
}

// vipIdent identifies a VIP for duplicate detection.
type vipIdent struct {
	addr  netip.Addr
	port  uint16
	proto string
}

func (d *decoder) vips(f *fields, top *HealthCheck, topSet bool) []VIP {
	items := f.seq("vips", "a list of VIPs")
	out := make([]VIP, 0, len(items))
	byIdent := map[vipIdent]int{}
	byName := map[string]int{}
	type addrPolicy struct {
		index  int
		policy FragmentPolicy
	}
	fragments := map[netip.Addr]addrPolicy{}
	for i, it := range items {
		p := index(f.at("vips"), i)
		vf := d.mapping(it, p, "a VIP mapping (address, port, protocol, backends, ...)", vipKeys)
		v, complete := d.vip(vf, top, topSet)
		if complete {
			id := vipIdent{v.Address, v.Port, v.Protocol}
			if j, dup := byIdent[id]; dup {
				d.add(p, vf.node, "%s is already vips[%d]; each (address, port, protocol) must be unique, so merge the two or change one", v.Key(), j)
			} else {
				byIdent[id] = i
			}
		}
		if v.Name != "" {
			if j, dup := byName[v.Name]; dup {
				vf.errf("name", "%q is already the name of vips[%d]; VIP names must be unique", v.Name, j)
			} else {
				byName[v.Name] = i
			}
		}
		if v.Address.IsValid() && v.Fragments != "" {
			if prev, ok := fragments[v.Address]; !ok {
				fragments[v.Address] = addrPolicy{i, v.Fragments}
			} else if prev.policy != v.Fragments {
				vf.errf("fragments", "%q conflicts with vips[%d], which has %q for the same address %s; fragments carry no port, so the policy is per address: set the same value on every VIP of %s",
					v.Fragments, prev.index, prev.policy, v.Address, v.Address)
			}
		}
		out = append(out, v)
	}
	return out
}

// vip decodes one VIP, from a file's mapping or from ParseVIP's fields;
// complete reports whether its identity (address, port, protocol) is
// valid.
func (d *decoder) vip(f source, top *HealthCheck, topSet bool) (v VIP, complete bool) {
	v.Name = f.str("name", "")
	if f.has("name") {
		switch {
		case v.Name == "":
			f.errf("name", "\"\" is empty; remove it or give the VIP a label such as web")
		case len(v.Name) > 64:
			f.errf("name", "%q is %d bytes; use at most 64", v.Name, len(v.Name))
		case strings.IndexFunc(v.Name, unicode.IsControl) >= 0:
			f.errf("name", "%q contains control characters; use a plain label such as web", v.Name)
		}
	}

	addrOK := false
	if f.require("address", "set the VIP's IPv4 or IPv6 address, e.g. 203.0.113.10") {
		if a, ok := f.addr("address"); ok {
			if msg := checkUnicast(a); msg != "" {
				f.errf("address", "%s %s; a VIP needs a unicast address", a, msg)
			} else {
				v.Address, addrOK = a, true
			}
		}
	}
	port, portOK := f.integerOK("port", 0, 0, 65535)
	v.Port = uint16(port)
	protoOK := false
	if f.require("protocol", "set tcp or udp") {
		v.Protocol = enumOf(f, "protocol", "", protocols)
		protoOK = v.Protocol != ""
	}
	complete = addrOK && portOK && protoOK

	v.Mode = enumOf(f, "mode", DefaultMode, modes)
	v.Scheduler = enumOf(f, "scheduler", DefaultScheduler, schedulers)
	def := d.ringDefault
	if def == (ringSetting{}) { // ParseVIP: no root
		def = defaultRing
	}
	rs := d.ringSize(f, def, true)
	v.RingSize, v.RingSizeAuto, v.RingSizeMax = rs.size, rs.auto, rs.max
	v.Conntrack, v.Timeouts = vipConntrack(f, v.Protocol)
	if v.Scheduler == SchedulerRoundRobin && !v.Conntrack {
		f.errf("scheduler", "round-robin needs the connection table to keep each flow on the backend its first packet got; remove conntrack: false, or use maglev")
	}
	if (v.Scheduler == SchedulerLeastConn || v.Scheduler == SchedulerLeastTime) && !v.Conntrack {
		f.errf("scheduler", "%s counts the connection table's entries; it needs conntrack on (remove conntrack: false, or pick another scheduler)", v.Scheduler)
	}
	v.Fragments = enumOf(f, "fragments", DefaultFragments, fragmentPolicies)
	v.SourceRanges = sourceRanges(f, v.Address, addrOK)

	// The health check that applies to this VIP's backends.
	var hc *HealthCheck
	hcPath := f.at("health_check")
	inherited := false
	checkBad := false
	if f.has("health_check") {
		var ok bool
		hc, ok = f.check("health_check")
		if !ok {
			hc = nil // already reported; do not pile up follow-on errors
			checkBad = true
		}
	} else if topSet {
		hc, inherited = top, true
	}
	v.HealthCheck = d.resolveCheck(hc, v.Port, portOK, v.Address, hcPath, f.where("health_check"), inherited)

	items := f.items("backends", "a list of backends, e.g. [{address: 198.18.0.11}]",
		"a backend mapping such as {address: 198.18.0.11}", backendKeys)
	v.Backends = make([]Backend, 0, len(items))
	seen := map[netip.Addr]int{}
	for i, bf := range items {
		v.Backends = append(v.Backends, d.backend(bf, &v, addrOK, portOK, seen, i))
	}
	v.Pools = d.pools(f, &v, addrOK)
	if (v.Scheduler == SchedulerRoundRobin || v.Scheduler == SchedulerLeastConn || v.Scheduler == SchedulerLeastTime) && len(v.Pools) > 0 {
		f.errf("pools", "a %s VIP cannot have pools yet: a pool's clients take Maglev on the pool's ring; use scheduler maglev (or source-hash) with pools", v.Scheduler)
	}
	v.ResponseTime = responseTime(f, &v, checkBad)
	return v, complete
}

// backend decodes backends[i] of v. vipAddrOK and portOK say whether v's
// address and port are valid; seen maps the addresses of v's backends so
// far to their index.
func (d *decoder) backend(f source, v *VIP, vipAddrOK, portOK bool, seen map[netip.Addr]int, i int) Backend {
	var b Backend
	if f.require("address", "set the backend's address, e.g. 198.18.0.11") {
		if a, ok := f.addr("address"); ok {
			switch {
			case checkUnicast(a) != "":
				f.errf("address", "%s %s; use the backend's unicast address", a, checkUnicast(a))
			case vipAddrOK && a == v.Address:
				f.errf("address", "%s is the VIP's own address; use the backend's real address", a)
			case v.Mode == ModeDSR && vipAddrOK && a.Is4() != v.Address.Is4():
				f.errf("address", "%s is %s but the vip is %s (dsr needs one family)", a, family(a), family(v.Address))
			default:
				if j, dup := seen[a]; dup {
					f.errf("address", "%s is already backends[%d]; list each backend once", a, j)
				} else {
					seen[a] = i
				}
				b.Address = a
			}
		}
	}
	w, _ := f.integerOK("weight", 1, 0, MaxWeight)
	b.Weight = uint32(w)
	if f.has("mac") {
		b.MAC = f.mac("mac")
	}
	if f.has("health_check") {
		own, ok := f.check("health_check")
		if ok {
			b.HealthCheck = d.resolveCheck(own, v.Port, portOK, b.Address, f.at("health_check"), f.where("health_check"), false)
		}
	} else {
		b.HealthCheck = v.HealthCheck.clone()
	}
	return b
}

// resolveCheck returns a copy of hc for one VIP or backend with the port
// filled in, checking what depends on the VIP: a port to probe, and the
// family of the source address against target (skipped when invalid).
func (d *decoder) resolveCheck(hc *HealthCheck, vipPort uint16, portOK bool, target netip.Addr, path string, at *yaml.Node, inherited bool) *HealthCheck {
	if hc == nil {
		return nil
	}
	c := hc.clone()
	from := ""
	if inherited {
		from = " (inherited from the top-level health_check; override it with a health_check on this vip)"
	}
	if c.Port == 0 {
		if vipPort == 0 && portOK {
			d.add(join(path, "port"), at, "the vip has port 0 (every port), so there is no port to probe; set health_check.port%s", from)
		}
		c.Port = vipPort
	}
	if c.Source.IsValid() && target.IsValid() && c.Source.Is4() != target.Is4() {
		d.add(join(path, "source"), at, "%s is %s but the address it checks, %s, is %s; use a source of the same family%s",
			c.Source, family(c.Source), target, family(target), from)
	}
	return c
}

// mac returns key as a unicast Ethernet address, nil when bad.
func (f *fields) mac(key string) net.HardwareAddr {
	n := f.vals[key]
	if n.Kind != yaml.ScalarNode {
		f.errf(key, "want a MAC address such as 02:42:c6:12:00:0b, got %s", describe(n))
		return nil
	}
	hw, msg := parseMAC(n.Value)
	if msg != "" {
		f.errf(key, "%s", msg)
	}
	return hw
}

// parseMAC returns s as a unicast Ethernet address, or nil and what is
// wrong with it.
func parseMAC(s string) (net.HardwareAddr, string) {
	hw, err := net.ParseMAC(strings.TrimSpace(s))
	switch {
	case err != nil:
		return nil, fmt.Sprintf("%q is not a MAC address; write six hex bytes such as 02:42:c6:12:00:0b", s)
	case len(hw) != 6:
		return nil, fmt.Sprintf("%q is %d bytes; an Ethernet MAC has 6, such as 02:42:c6:12:00:0b", s, len(hw))
	case hw[0]&1 != 0:
		return nil, fmt.Sprintf("%s is a multicast or broadcast MAC; use the backend's unicast MAC", hw)
	case hw.String() == "00:00:00:00:00:00":
		return nil, fmt.Sprintf("%s is all zeros; use the backend's MAC, or remove mac to have it resolved", hw)
	}
	return hw, ""
}

// ringSetting is a ring size as configured: a fixed prime size, or auto
// with the largest size the daemon may choose.
type ringSetting struct {
	size uint32 // 0 with auto
	auto bool
	max  uint32 // the default maximum of auto VIPs; 0 in a fixed VIP
}

// defaultRing is the ring size of a VIP when the file says nothing.
var defaultRing = ringSetting{size: maglev.DefaultSize, max: maglev.DefaultSize}

// ringSize reads ring_size (a prime or auto) and ring_size_max of a VIP
// (vip) or of the root, whose setting is each VIP's default (def). A
// VIP's ring_size_max is refused unless the VIP's size is auto; the
// root's is the maximum of the VIPs that are auto and set none.
func (d *decoder) ringSize(f source, def ringSetting, vip bool) ringSetting {
	out := def
	if f.has("ring_size") {
		before := d.count()
		s, isText := f.text("ring_size")
		switch {
		case !isText && d.count() > before:
			// Not a scalar: reported.
		case isText && s == "auto":
			out.size, out.auto = 0, true
		case isText && strings.EqualFold(strings.TrimSpace(s), "auto"):
			f.errf("ring_size", "%q must be written in lower case: auto", s)
		case isText && !isNumber(s):
			f.errf("ring_size", "%q is neither auto nor a number; use auto (the daemon chooses the size, docs/datapath.md) or a prime between %d and %d, e.g. %d",
				s, maglev.MinSize, maglev.MaxSize, maglev.DefaultSize)
		default:
			if n, ok := f.integerOK("ring_size", 0, math.MinInt64, math.MaxInt64); ok {
				if n < int64(maglev.MinSize) || n > int64(maglev.MaxSize) || !maglev.IsPrime(uint32(n)) {
					f.errf("ring_size", "%d is not a prime between %d and %d (try %d)", n, maglev.MinSize, maglev.MaxSize, nearPrime(n))
				} else {
					out.size, out.auto = uint32(n), false
				}
			}
		}
	}
	if out.max == 0 {
		out.max = def.max
	}
	if f.has("ring_size_max") {
		if n, ok := f.integerOK("ring_size_max", 0, math.MinInt64, math.MaxInt64); ok {
			switch {
			case n < 0 || n > math.MaxUint32 || ringsize.CheckMax(uint32(n)) != "":
				f.errf("ring_size_max", "%d is not a prime between %d and %d (try %d)", n, maglev.MinSize, maglev.MaxSize, nearPrime(n))
			case vip && !out.auto:
				f.errf("ring_size_max", "applies only with ring_size: auto, which chooses a size up to it; the ring size here is fixed at %d, so remove ring_size_max or set ring_size: auto", out.size)
			default:
				out.max = uint32(n)
			}
		}
	}
	if vip && !out.auto {
		out.max = 0
	}
	return out
}

// isNumber says whether s reads as a number, whole or not.
func isNumber(s string) bool {
	_, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	return err == nil
}

// nearPrime returns the valid ring size closest to n (the default when n is
// far outside the range).
func nearPrime(n int64) uint32 {
	if n < int64(maglev.MinSize) || n > int64(maglev.MaxSize) {
		return maglev.DefaultSize
	}
	for delta := int64(0); ; delta++ {
		for _, c := range []int64{n - delta, n + delta} {
			if c >= int64(maglev.MinSize) && c <= int64(maglev.MaxSize) && maglev.IsPrime(uint32(c)) {
				return uint32(c)
			}
		}
	}
}

const timeoutsWhat = "a mapping of idle timeouts such as {tcp_established: 900s, udp: 300s}"

// timeoutsOf reads a timeouts mapping over base: each key present
// replaces its field. For a VIP, proto names its protocol and the other
// protocol's keys are refused; "" (the global mapping) takes every key.
func timeoutsOf(f *fields, proto string, base datapath.ConnTimeouts) datapath.ConnTimeouts {
	t := base
	for _, k := range []struct {
		key   string
		proto string
		field *time.Duration
	}{
		{"tcp_syn", "tcp", &t.SYN}, {"tcp_established", "tcp", &t.Established}, {"tcp_fin", "tcp", &t.FIN},
		{"tcp_closed", "tcp", &t.Closed}, {"udp", "udp", &t.UDP},
	} {
		if !f.has(k.key) {
			continue
		}
		if proto != "" && proto != k.proto {
			f.errf(k.key, "a %s VIP's entries have no %s timeout: set %s", proto, k.key, map[string]string{"tcp": "tcp_syn, tcp_established, tcp_fin or tcp_closed", "udp": "udp"}[proto])
			continue
		}
		d := f.duration(k.key, 0, true)
		switch {
		case d == 0: // reported by duration
		case d%time.Second != 0 || d > datapath.MaxConnTimeout:
			f.errf(k.key, "%v is not a whole number of seconds from 1s to %v", d, datapath.MaxConnTimeout)
		default:
			*k.field = d
		}
	}
	return t
}

// vipConntrack reads a VIP's conntrack key: true or false, or a mapping
// {timeouts: {...}} that turns the table on with timeouts of the VIP's own
// (zero fields inherit conntrack.timeouts).
func vipConntrack(f source, proto string) (bool, datapath.ConnTimeouts) {
	ff, ok := f.(*fields)
	if !ok || ff.vals["conntrack"] == nil || ff.vals["conntrack"].Kind != yaml.MappingNode {
		return f.boolean("conntrack", true), datapath.ConnTimeouts{}
	}
	cf := ff.sub("conntrack", "true, false, or a mapping with timeouts", []string{"timeouts"})
	return true, timeoutsOf(cf.sub("timeouts", timeoutsWhat, timeoutKeys), proto, datapath.ConnTimeouts{})
}

// responseTime decodes a VIP's response_time block (files only: the API's
// VIP fields do not carry it yet), nil when absent. Passive measuring needs
// TCP and the connection table, active a health check (checkBad: the VIP's
// was refused, already reported). A least-time VIP without the block gets
// the one it can measure with (leastTimeDefault).
func responseTime(f source, v *VIP, checkBad bool) *ResponseTime {
	ff, ok := f.(*fields)
	if !ok || !ff.has("response_time") {
		if v.Scheduler == SchedulerLeastTime {
			return leastTimeDefault(f, v, checkBad)
		}
		return nil
	}
	rf := ff.sub("response_time", "a mapping with source and half_life, e.g. {source: passive}", responseKeys)
	r := &ResponseTime{
		Source:   enumOf(rf, "source", ResponsePassive, responseSources),
		HalfLife: rf.duration("half_life", defaultHalfLife(v), true),
	}
	if r.HalfLife < MinResponseHalfLife || r.HalfLife > MaxResponseHalfLife {
		rf.errf("half_life", "%s is out of range; use %s to %s", r.HalfLife, MinResponseHalfLife, MaxResponseHalfLife)
	}
	if r.Passive() {
		switch {
		case v.Protocol == "udp":
			rf.errf("source", "%s measures TCP handshakes and the vip is udp; use source: active (the health probe's time)", r.Source)
		case !v.Conntrack:
			rf.errf("source", "%s finds a flow's first ACK through its connection entry and the vip has conntrack: false; remove conntrack: false, or use source: active", r.Source)
		}
	}
	checked := v.HealthCheck != nil || checkBad
	for _, b := range v.Backends {
		checked = checked || b.HealthCheck != nil
	}
	if r.Active() && !checked {
		rf.errf("source", "%s times the health probes and the vip has no health check; add a health_check, or use source: passive", r.Source)
	}
	return r
}

// leastTimeDefault is the response_time of a least-time VIP that sets
// none, since least-time compares response times: passive for TCP (every
// handshake measures its backend, and the connection table least-time
// needs anyway is there), active for UDP (no handshake to time) when the
// VIP has a health check; a UDP VIP without one cannot measure, and is
// refused naming response_time.
func leastTimeDefault(f source, v *VIP, checkBad bool) *ResponseTime {
	r := &ResponseTime{Source: ResponsePassive, HalfLife: defaultHalfLife(v)}
	if v.Protocol != "udp" {
		return r
	}
	checked := v.HealthCheck != nil || checkBad
	for _, b := range v.Backends {
		checked = checked || b.HealthCheck != nil
	}
	if !checked {
		f.errf("response_time", "least-time compares response times, and a udp vip measures them only with its health probes; add a health_check and response_time: {source: active}, or use least-conn")
		return nil
	}
	r.Source = ResponseActive
	return r
}

// defaultHalfLife is the half-life a VIP's response times take when
// response_time sets none: LeastTimeHalfLife for least-time, which acts
// on them, else DefaultResponseHalfLife.
func defaultHalfLife(v *VIP) time.Duration {
	if v.Scheduler == SchedulerLeastTime {
		return LeastTimeHalfLife
	}
	return DefaultResponseHalfLife
}
