package config

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
)

// A VIP's source-prefix pools (YAML "pools"): clients in a pool's prefixes
// take a Maglev ring over the pool's backends, which are some of the VIP's
// backends named by address (their weight, drain and health are the
// VIP's). Clients in no pool take the VIP's ring over all its backends.
//
//	pools:
//	  - name: eu
//	    prefixes: [198.51.100.0/24]      # inline, and/or
//	    prefix_file: /etc/fulcrum/geo.csv # "prefix,pool" lines
//	    backends: [198.18.0.11, 198.18.0.12]
//	    fallback: vip                     # or drop; when no backend is up
//
// A prefix file is the CSV a GeoIP export gives: one "prefix,pool" line per
// prefix, and may serve several pools of the VIP (and of other VIPs): a
// pool takes the lines whose pool column is its name. Lines of a pool the
// VIP does not have are ignored, as are prefixes of the other family than
// the VIP's (one file serves IPv4 and IPv6 VIPs); a pool that ends up with
// no prefix at all is refused. Blank lines and lines starting with '#' are
// skipped, and a first line "prefix,pool" (or "network,...") is a header. A
// bad line refuses the whole configuration, naming the file and the line.

// Pool is a source-prefix pool of a VIP.
type Pool struct {
	Name string
	// Prefixes are the pool's inline client prefixes (YAML "prefixes").
	Prefixes []netip.Prefix
	// PrefixFile is the CSV file of "prefix,pool" lines it also takes its
	// prefixes from (YAML "prefix_file"); FilePrefixes are those it read.
	PrefixFile   string
	FilePrefixes []netip.Prefix
	// Backends are addresses of the VIP's backends.
	Backends []netip.Addr
	// Fallback is what the pool's clients get while none of its backends
	// is up (YAML "fallback", default PoolFallbackVIP).
	Fallback PoolFallback
}

// AllPrefixes returns the pool's inline prefixes and those of its file.
func (p *Pool) AllPrefixes() []netip.Prefix {
	return append(append([]netip.Prefix(nil), p.Prefixes...), p.FilePrefixes...)
}

// PoolFallback is what a pool's clients get while none of its backends is
// up (vips[].pools[].fallback).
type PoolFallback string

// The pool fallbacks.
const (
	// PoolFallbackVIP sends them to the VIP's ring: its other backends.
	PoolFallbackVIP PoolFallback = "vip"
	// PoolFallbackDrop drops their new flows, counted as drop_pool_down.
	PoolFallbackDrop PoolFallback = "drop"
)

func (f PoolFallback) String() string { return string(f) }

var (
	poolFallbacks = []PoolFallback{PoolFallbackVIP, PoolFallbackDrop}
	poolKeys      = []string{"name", "prefixes", "prefix_file", "backends", "fallback"}
)

// poolFile is a prefix file as read: each pool's prefixes, with the line
// each came from; or the problem that refused it.
type poolFile struct {
	pools   map[string][]filePrefix
	problem string
}

type filePrefix struct {
	p    netip.Prefix
	line int
}

// pools decodes v's pools. The VIP's backends are decoded already.
func (d *decoder) pools(f source, v *VIP, vipOK bool) []Pool {
	items := f.items("pools", "a list of pools, e.g. [{name: eu, prefixes: [198.51.100.0/24], backends: [198.18.0.11]}]",
		"a pool mapping such as {name: eu, prefixes: [...], backends: [...]}", poolKeys)
	if len(items) == 0 {
		return nil
	}
	if len(items) > datapath.PoolsPerVIP {
		f.errf("pools", "%d pools; a vip has at most %d", len(items), datapath.PoolsPerVIP)
		return nil
	}
	backends := make(map[netip.Addr]bool, len(v.Backends))
	for _, b := range v.Backends {
		backends[b.Address] = true
	}
	out := make([]Pool, 0, len(items))
	names := map[string]int{}
	owner := map[netip.Prefix]string{} // which pool a prefix is in
	var fileItems []int                // indexes of pools with a file
	for i, pf := range items {
		var p Pool
		if pf.require("name", "name the pool, e.g. eu") {
			p.Name = pf.str("name", "")
			if msg := datapath.PoolNameProblem(p.Name); msg != "" {
				pf.errf("name", "%q %s", p.Name, msg)
			} else if j, dup := names[p.Name]; dup {
				pf.errf("name", "%q is already the name of pools[%d]; pool names must be unique in a vip", p.Name, j)
			} else {
				names[p.Name] = i
			}
		}
		for _, it := range pf.scalars("prefixes", "a list of client prefixes, e.g. [198.51.100.0/24]", "a prefix such as 198.51.100.0/24") {
			x, ok := vipPrefix(it.text, v.Address, vipOK, it.errf)
			if !ok {
				continue
			}
			if o, dup := owner[x]; dup {
				it.errf("%s is already in pool %s; a prefix belongs to one pool", x, o)
				continue
			}
			owner[x] = p.Name
			p.Prefixes = append(p.Prefixes, x)
		}
		if path, ok := pf.text("prefix_file"); ok {
			if msg := checkAbsPath(path); msg != "" {
				pf.errf("prefix_file", "%q %s", path, msg)
			} else {
				p.PrefixFile = path
				fileItems = append(fileItems, i)
			}
		}
		if !pf.has("backends") {
			pf.errf("backends", "a pool needs backends: list addresses of the vip's backends, e.g. [198.18.0.11]")
		}
		seen := map[netip.Addr]bool{}
		for _, it := range pf.scalars("backends", "a list of backend addresses, e.g. [198.18.0.11]", "an address such as 198.18.0.11") {
			a, err := netip.ParseAddr(strings.TrimSpace(it.text))
			switch {
			case err != nil:
				it.errf("%q is not an address; list addresses of the vip's backends", it.text)
			case !backends[a]:
				it.errf("%s is not a backend of this vip; add it under backends, or list one of the vip's backends", a)
			case seen[a]:
				it.errf("%s is listed twice; list each backend once", a)
			default:
				seen[a] = true
				p.Backends = append(p.Backends, a)
			}
		}
		p.Fallback = enumOf(pf, "fallback", PoolFallbackVIP, poolFallbacks)
		out = append(out, p)
	}
	// The files, each read once, give each of their pools its lines.
	refused := map[int]bool{}
	for _, i := range fileItems {
		p := &out[i]
		pf := items[i]
		file := d.prefixFile(p.PrefixFile)
		if file.problem != "" {
			pf.errf("prefix_file", "%s", file.problem)
			refused[i] = true
			continue
		}
		for _, fp := range file.pools[p.Name] {
			if vipOK && fp.p.Addr().Is4() != v.Address.Is4() {
				continue // the other family's VIPs' line
			}
			if o, dup := owner[fp.p]; dup {
				if o != p.Name {
					pf.errf("prefix_file", "%s line %d: %s is already in pool %s; a prefix belongs to one pool", p.PrefixFile, fp.line, fp.p, o)
				}
				continue
			}
			owner[fp.p] = p.Name
			p.FilePrefixes = append(p.FilePrefixes, fp.p)
		}
	}
	for i := range out {
		if p := &out[i]; p.Name != "" && len(p.Prefixes) == 0 && len(p.FilePrefixes) == 0 && !refused[i] {
			if p.PrefixFile != "" {
				items[i].errf("prefix_file", "%s has no %s line for pool %s; the pool would hold no client", p.PrefixFile, family(v.Address), p.Name)
			} else {
				items[i].errf("prefixes", "pool %s has no prefixes; list client prefixes, or give a prefix_file", p.Name)
			}
		}
	}
	return out
}

// prefixFile reads and parses a prefix file, once per decode.
func (d *decoder) prefixFile(path string) *poolFile {
	if f := d.prefixFiles[path]; f != nil {
		return f
	}
	if d.prefixFiles == nil {
		d.prefixFiles = make(map[string]*poolFile)
	}
	f := &poolFile{}
	d.prefixFiles[path] = f
	data, err := os.ReadFile(path)
	if err != nil {
		f.problem = fmt.Sprintf("read %s: %v", path, err)
		return f
	}
	f.pools, f.problem = parsePrefixFile(path, data)
	return f
}

// parsePrefixFile parses "prefix,pool" lines. The first bad line refuses
// the file: its problem names the file and the line.
func parsePrefixFile(path string, data []byte) (map[string][]filePrefix, string) {
	pools := make(map[string][]filePrefix)
	type origin struct {
		line int
		pool string
	}
	seen := make(map[netip.Prefix]origin)
	first := true
	for n := 1; len(data) > 0; n++ {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		header := first
		first = false
		text, name, ok := strings.Cut(string(line), ",")
		text, name = unquote(text), unquote(name)
		if header && (strings.EqualFold(text, "prefix") || strings.EqualFold(text, "network")) {
			continue
		}
		if !ok || strings.Contains(name, ",") {
			return nil, fmt.Sprintf("%s line %d: %q is not \"prefix,pool\"; write one prefix and one pool name a line, e.g. 198.51.100.0/24,eu", path, n, line)
		}
		var problem string
		x, good := vipPrefix(text, netip.Addr{}, false, func(format string, args ...any) { problem = fmt.Sprintf(format, args...) })
		if !good {
			return nil, fmt.Sprintf("%s line %d: %s", path, n, problem)
		}
		if msg := datapath.PoolNameProblem(name); msg != "" {
			return nil, fmt.Sprintf("%s line %d: pool name %q %s", path, n, name, msg)
		}
		if o, dup := seen[x]; dup {
			if o.pool != name {
				return nil, fmt.Sprintf("%s line %d: %s is already in pool %s on line %d; a prefix belongs to one pool", path, n, x, o.pool, o.line)
			}
			continue
		}
		seen[x] = origin{n, name}
		pools[name] = append(pools[name], filePrefix{x, n})
	}
	return pools, ""
}

// unquote trims spaces and the double quotes a CSV export may put around
// a field.
func unquote(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	return s
}
