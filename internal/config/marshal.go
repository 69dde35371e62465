package config

import (
	"fmt"
	"net/netip"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
)

// Marshal renders the configuration as YAML that Parse reads back to an
// equal Config: every default written out, so the file says exactly what
// the daemon runs with (and the API can show it).
func (c *Config) Marshal() ([]byte, error) {
	return c.MarshalNoted(nil)
}

// MarshalNoted is Marshal with a comment after the ring_size of each VIP
// with ring_size: auto that says the size chosen for it, chosen(i) for
// c.VIPs[i] (0: none yet, no comment). A comment, so that the file still
// says auto: written back, it keeps choosing.
func (c *Config) MarshalNoted(chosen func(i int) uint32) ([]byte, error) {
	doc := c.doc()
	if chosen == nil {
		return yaml.Marshal(doc)
	}
	var root yaml.Node
	if err := root.Encode(doc); err != nil {
		return nil, err
	}
	vips := valueOf(&root, "vips")
	for i := range c.VIPs {
		if vips == nil || i >= len(vips.Content) || !c.VIPs[i].RingSizeAuto {
			continue
		}
		if n, size := valueOf(vips.Content[i], "ring_size"), chosen(i); n != nil && size != 0 {
			n.LineComment = fmt.Sprintf("chosen: %d slots", size)
		}
	}
	return yaml.Marshal(&root)
}

// valueOf returns the value of key in the mapping m, nil if none.
func valueOf(m *yaml.Node, key string) *yaml.Node {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// doc is the configuration as a tree of maps and lists for yaml.Marshal.
func (c *Config) doc() map[string]any {
	doc := map[string]any{
		"instance":   c.Instance,
		"bpffs":      c.BPFFS,
		"interfaces": c.Interfaces,
		"log":        c.Log,
		"api":        c.API,
		"metrics":    map[string]any{"address": orOff(c.Metrics.Address)},
		"conntrack": map[string]any{"entries": c.Conntrack.Entries, "new_flow_limit": c.Conntrack.NewFlowLimit,
			"timeouts": timeoutsDoc(c.Conntrack.Timeouts)},
		"vips": vipsDoc(c.VIPs),
	}
	if ip := ipipDoc(c.IPIP); len(ip) > 0 {
		doc["ipip"] = ip
	}
	if c.HealthCheck != nil {
		doc["health_check"] = checkDoc(c.HealthCheck)
	}
	// The root's ring size only matters to VIPs added to the file later:
	// written when it is not the default.
	if c.RingSizeAuto || (c.RingSize != 0 && c.RingSize != defaultRing.size) {
		doc["ring_size"] = ringSizeDoc(c.RingSize, c.RingSizeAuto)
	}
	if c.RingSizeMax != 0 && c.RingSizeMax != defaultRing.max {
		doc["ring_size_max"] = c.RingSizeMax
	}
	if c.RingArenaSlots != 0 && c.RingArenaSlots != DefaultRingArenaSlots {
		doc["ring_arena_slots"] = c.RingArenaSlots
	}
	if v := c.VRRP; v != nil {
		vd := map[string]any{
			"interface": v.Interface, "vrid": v.VRID, "priority": v.Priority,
			"advert_interval": v.AdvertInterval, "preempt": v.Preempt,
			"preempt_delay": v.PreemptDelay.String(), "gratuitous_count": v.GratuitousCount,
			"family": v.Family, "virtual_addresses": prefixStrings(v.VirtualAddresses),
		}
		if len(v.UnicastPeers) > 0 {
			vd["unicast_peers"] = addrStrings(v.UnicastPeers)
		}
		doc["vrrp"] = vd
	}
	if c.BGP != nil {
		doc["bgp"] = c.BGP.doc()
	}
	if c.Sync != nil {
		doc["sync"] = c.Sync.doc()
	}
	return doc
}

func orOff(s string) string {
	if s == "" {
		return "off"
	}
	return s
}

func ipipDoc(c IPIP) map[string]any {
	m := map[string]any{}
	if c.SourceV4.IsValid() {
		m["source_v4"] = c.SourceV4.String()
	}
	if c.SourceV6.IsValid() {
		m["source_v6"] = c.SourceV6.String()
	}
	if len(c.GatewayMAC) > 0 {
		m["gateway_mac"] = c.GatewayMAC.String()
	}
	return m
}

func vipsDoc(vips []VIP) []map[string]any {
	out := []map[string]any{}
	for _, v := range vips {
		m := map[string]any{
			"address": v.Address.String(), "port": v.Port, "protocol": v.Protocol, "mode": v.Mode,
			"scheduler": v.Scheduler, "ring_size": ringSizeDoc(v.RingSize, v.RingSizeAuto), "conntrack": v.Conntrack, "fragments": v.Fragments,
		}
		if v.RingSizeAuto {
			m["ring_size_max"] = v.RingSizeMax
		}
		if t := timeoutsDoc(v.Timeouts); v.Conntrack && len(t) > 0 {
			m["conntrack"] = map[string]any{"timeouts": t}
		}
		if v.Name != "" {
			m["name"] = v.Name
		}
		if len(v.SourceRanges) > 0 {
			rs := make([]string, len(v.SourceRanges))
			for i, p := range v.SourceRanges {
				rs[i] = p.String()
			}
			m["source_ranges"] = rs
		}
		// Each backend carries its resolved check, so the VIP's own block
		// is written as "none" and the backends' as they are.
		m["health_check"] = map[string]any{"type": "none"}
		if v.HealthCheck != nil {
			m["health_check"] = checkDoc(v.HealthCheck)
		}
		var bs []map[string]any
		for _, b := range v.Backends {
			bm := map[string]any{"address": b.Address.String(), "weight": b.Weight}
			if len(b.MAC) > 0 {
				bm["mac"] = b.MAC.String()
			}
			if b.HealthCheck != nil {
				bm["health_check"] = checkDoc(b.HealthCheck)
			} else {
				bm["health_check"] = map[string]any{"type": "none"}
			}
			bs = append(bs, bm)
		}
		m["backends"] = bs
		if len(v.Pools) > 0 {
			m["pools"] = poolsDoc(v.Pools)
		}
		if r := v.ResponseTime; r != nil {
			m["response_time"] = map[string]any{"source": r.Source, "half_life": r.HalfLife.String()}
		}
		out = append(out, m)
	}
	return out
}

// ringSizeDoc is a ring size as a file writes it: a number, or auto.
func ringSizeDoc(size uint32, auto bool) any {
	if auto {
		return "auto"
	}
	return size
}

func checkDoc(h *HealthCheck) map[string]any {
	m := map[string]any{
		"type": h.Type, "interval": h.Interval.String(), "timeout": h.Timeout.String(),
		"rise": h.Rise, "fall": h.Fall, "port": h.Port, "on_down": h.OnDown, "all_down": h.AllDown,
	}
	switch h.Type {
	case "http", "https":
		m["path"] = h.Path
		m["expect_status"] = h.ExpectStatus
		if h.Host != "" {
			m["host"] = h.Host
		}
		if h.Type == "https" {
			m["skip_verify"] = h.SkipVerify
		}
	case "udp":
		m["payload"] = h.Payload
		if h.Expect != "" {
			m["expect"] = h.Expect
		}
	}
	if h.Source.IsValid() {
		m["source"] = h.Source.String()
	}
	if h.ThroughDatapath {
		m["through_datapath"] = true
	}
	return m
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func addrStrings(as []netip.Addr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

// timeoutsDoc writes the timeouts that are set, as durations.
func timeoutsDoc(t datapath.ConnTimeouts) map[string]any {
	m := map[string]any{}
	for _, f := range []struct {
		key string
		v   time.Duration
	}{{"tcp_syn", t.SYN}, {"tcp_established", t.Established}, {"tcp_fin", t.FIN}, {"tcp_closed", t.Closed}, {"udp", t.UDP}} {
		if f.v != 0 {
			m[f.key] = f.v.String()
		}
	}
	return m
}

// poolsDoc is a VIP's pools as a file writes them: a file's prefixes stay
// in the file.
func poolsDoc(pools []Pool) []map[string]any {
	out := make([]map[string]any, 0, len(pools))
	for _, p := range pools {
		m := map[string]any{"name": p.Name, "fallback": p.Fallback}
		if len(p.Prefixes) > 0 {
			ps := make([]string, len(p.Prefixes))
			for i, x := range p.Prefixes {
				ps[i] = x.String()
			}
			m["prefixes"] = ps
		}
		if p.PrefixFile != "" {
			m["prefix_file"] = p.PrefixFile
		}
		bs := make([]string, len(p.Backends))
		for i, b := range p.Backends {
			bs[i] = b.String()
		}
		m["backends"] = bs
		out = append(out, m)
	}
	return out
}
