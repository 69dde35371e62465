package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// This file turns a YAML node tree into typed values. It walks the tree
// itself instead of unmarshalling into structs so that every problem carries
// the dotted path of the field, the line it is on and a hint at the fix, and
// so that all problems are collected instead of only the first.

// maxNodes bounds the work done on one document, counting a node every time
// it is visited: aliases can make a small file expand into a huge tree. A
// backend costs about six visits, so this leaves room for configs far
// larger than the datapath holds (4096 VIPs, 262144 backends).
const maxNodes = 1 << 22

// maxProblems bounds the problems kept; the rest are only counted.
const maxProblems = 1000

// maxMergeDepth bounds nested merge keys ("<<: *anchor").
const maxMergeDepth = 8

type decoder struct {
	problems []Problem
	dropped  int // problems past maxProblems
	visits   int
	tooBig   bool
	// ringDefault is the root's ring size, every VIP's default; zero in
	// ParseVIP, which has no root (defaultRing applies).
	ringDefault ringSetting
	// prefixFiles are the pools' prefix files read so far, by path
	// (pools.go).
	prefixFiles map[string]*poolFile
}

func (d *decoder) add(path string, n *yaml.Node, format string, args ...any) {
	if len(d.problems) >= maxProblems {
		d.dropped++
		return
	}
	if path == "" {
		path = "config"
	}
	line := 0
	if n != nil {
		line = n.Line
	}
	d.problems = append(d.problems, Problem{Path: path, Message: fmt.Sprintf(format, args...), Line: line})
}

// count returns how many problems were found so far.
func (d *decoder) count() int { return len(d.problems) + d.dropped }

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseYAML parses data into a node tree and returns the root value, nil for
// an empty document.
func parseYAML(data []byte) (root *yaml.Node, problem *Problem) {
	defer func() {
		// The YAML library is third-party code fed with untrusted input:
		// a bug in it must not take the daemon down.
		if r := recover(); r != nil {
			root = nil
			problem = &Problem{Path: "yaml", Message: fmt.Sprintf("the YAML parser failed (%v); check the file's syntax", r)}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, syntaxProblem(err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, syntaxProblem(err)
	default:
		return nil, &Problem{Path: "yaml", Line: next.Line,
			Message: "the file holds more than one YAML document (a second '---'); put the whole config in one document"}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, nil
	}
	return doc.Content[0], nil
}

func syntaxProblem(err error) *Problem {
	msg := err.Error()
	line := 0
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	if msg == "" {
		msg = "unknown problem"
	}
	return &Problem{Path: "yaml", Line: line,
		Message: "syntax error: " + msg + " (check the indentation and quoting)"}
}

// deref follows aliases and counts the visit. It returns nil once the
// document has grown too large; the caller then treats the value as absent
// and Parse reports only the size problem.
func (d *decoder) deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode; i++ {
		if i > 16 {
			return nil
		}
		n = n.Alias
	}
	if n == nil || d.tooBig {
		return nil
	}
	d.visits++
	if d.visits > maxNodes {
		d.tooBig = true
		return nil
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

func isMergeKey(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Value == "<<" && n.ShortTag() == "!!merge"
}

// describe names what a node holds, for "want X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!int", "!!float":
			return "the number " + n.Value
		case "!!bool":
			return "the boolean " + n.Value
		case "!!null":
			return "nothing"
		}
		return strconv.Quote(n.Value)
	}
	return "an unsupported YAML value"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// fields is a decoded YAML mapping whose keys have been checked against
// the allowed ones. Its getters record a problem for a bad value and return
// the default instead, so decoding always runs to the end.
type fields struct {
	d    *decoder
	path string
	node *yaml.Node // the mapping; nil for an empty document
	ok   bool       // false when the value was not a mapping (already reported)
	keys map[string]*yaml.Node
	vals map[string]*yaml.Node // dereferenced values; null values are left out
}

// mapping checks that n (already dereferenced, or nil) is a mapping with only
// allowed keys. what describes the mapping in a type error. When n is not a
// mapping the problem is recorded and the result is empty with ok false.
func (d *decoder) mapping(n *yaml.Node, path, what string, allowed []string) *fields {
	f := &fields{d: d, path: path, node: n, ok: true, keys: map[string]*yaml.Node{}, vals: map[string]*yaml.Node{}}
	if isNull(n) {
		return f
	}
	if n.Kind != yaml.MappingNode {
		p := path
		if p == "" {
			p = "config"
		}
		d.add(p, n, "want %s, got %s", what, describe(n))
		f.ok = false
		return f
	}
	d.collect(f, n, allowed, 0, false)
	return f
}

// collect adds the pairs of mapping n to f. Keys written directly in the
// mapping win over merged ones ("<<: *anchor"), and earlier merges win over
// later ones, as in YAML 1.1 merge keys.
func (d *decoder) collect(f *fields, n *yaml.Node, allowed []string, depth int, merged bool) {
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := d.deref(n.Content[i]), n.Content[i+1]
		if k == nil {
			return
		}
		if isMergeKey(k) {
			merges = append(merges, v)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.add(f.path, k, "a key must be a plain name, got %s", describe(k))
			continue
		}
		name := k.Value
		if name == "" {
			d.add(f.path, k, "a key is empty; remove it or name the field (allowed here: %s)", strings.Join(allowed, ", "))
			continue
		}
		if prev, ok := f.keys[name]; ok {
			if !merged {
				d.add(join(f.path, name), k, "set twice (first on line %d); keep one", prev.Line)
			}
			continue
		}
		if !slices.Contains(allowed, name) {
			msg := "unknown field"
			if s := suggest(name, allowed); s != "" {
				msg += fmt.Sprintf("; did you mean %s?", s)
			}
			d.add(join(f.path, name), k, "%s (allowed here: %s)", msg, strings.Join(allowed, ", "))
			continue
		}
		f.keys[name] = k
		if dv := d.deref(v); !isNull(dv) {
			f.vals[name] = dv
		}
	}
	for _, m := range merges {
		m = d.deref(m)
		if m == nil {
			return
		}
		if depth >= maxMergeDepth {
			d.add(f.path, m, "merge keys (<<) are nested more than %d deep; flatten them", maxMergeDepth)
			return
		}
		var sources []*yaml.Node
		switch m.Kind {
		case yaml.MappingNode:
			sources = []*yaml.Node{m}
		case yaml.SequenceNode:
			for _, s := range m.Content {
				sources = append(sources, d.deref(s))
			}
		default:
			sources = []*yaml.Node{m}
		}
		for _, s := range sources {
			if s == nil || s.Kind != yaml.MappingNode {
				d.add(join(f.path, "<<"), m, "a merge key takes a mapping or a list of mappings, e.g. <<: *defaults")
				break
			}
			d.collect(f, s, allowed, depth+1, true)
		}
	}
}

// suggest returns the allowed key closest to name, or "".
func suggest(name string, allowed []string) string {
	norm := func(s string) string {
		return strings.ReplaceAll(strings.ToLower(s), "-", "_")
	}
	if len(name) >= 3 {
		for _, a := range allowed {
			if strings.HasPrefix(a, norm(name)) || strings.HasSuffix(a, "_"+norm(name)) {
				return a
			}
		}
	}
	best, bestDist := "", 3
	for _, a := range allowed {
		if norm(name) == a {
			return a
		}
		if d := editDistance(norm(name), a); d < bestDist {
			best, bestDist = a, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// at returns the path of key.
func (f *fields) at(key string) string { return join(f.path, key) }

// has reports whether key is set to a non-null value.
func (f *fields) has(key string) bool { return f.vals[key] != nil }

// present reports whether key is written at all, even as null.
func (f *fields) present(key string) bool { return f.keys[key] != nil }

// require records "missing" for an unset key, unless the mapping itself was
// bad, and reports whether the key is set.
func (f *fields) require(key, hint string) bool {
	if f.has(key) {
		return true
	}
	if f.ok {
		f.errf(key, "missing; %s", hint)
	}
	return false
}

// where returns the node to blame for key: its value, its key, or the
// mapping itself when the key is absent.
func (f *fields) where(key string) *yaml.Node {
	if v := f.vals[key]; v != nil {
		return v
	}
	if k := f.keys[key]; k != nil {
		return k
	}
	return f.node
}

// errf records a problem with key.
func (f *fields) errf(key, format string, args ...any) {
	f.d.add(f.at(key), f.where(key), format, args...)
}

// str returns key as text; any scalar is accepted.
func (f *fields) str(key, def string) string {
	if v, ok := f.text(key); ok {
		return v
	}
	return def
}

// text returns key as text; ok is false when it is absent or not a
// scalar (a problem is recorded for that).
func (f *fields) text(key string) (string, bool) {
	n := f.vals[key]
	if n == nil {
		return "", false
	}
	if n.Kind != yaml.ScalarNode {
		f.errf(key, "want text, got %s", describe(n))
		return "", false
	}
	return n.Value, true
}

// enum returns key, which must be one of allowed.
func (f *fields) enum(key, def string, allowed []string) string {
	return enumOf(f, key, def, allowed)
}

// enumOf returns the value of key, which must name one of allowed; def
// when key is absent or bad (a problem is recorded for a bad one).
func enumOf[T ~string](f source, key string, def T, allowed []T) T {
	s, ok := f.text(key)
	if !ok {
		return def
	}
	v, err := parseEnum(s, allowed)
	if err != nil {
		f.errf(key, "%s", err)
		return def
	}
	return v
}

// integer returns key as a whole number between lo and hi.
func (f *fields) integer(key string, def, lo, hi int64) int64 {
	v, _ := f.integerOK(key, def, lo, hi)
	return v
}

// integerOK is integer that also reports whether the value, if set, was
// valid.
func (f *fields) integerOK(key string, def, lo, hi int64) (int64, bool) {
	n := f.vals[key]
	if n == nil {
		return def, true
	}
	v, ok := f.d.integer(n, f.at(key), lo, hi)
	if !ok {
		return def, false
	}
	return v, true
}

func (d *decoder) integer(n *yaml.Node, path string, lo, hi int64) (int64, bool) {
	want := func() string {
		if lo == math.MinInt64 {
			return "a whole number"
		}
		return fmt.Sprintf("a whole number %d..%d", lo, hi)
	}
	if n.Kind != yaml.ScalarNode {
		d.add(path, n, "want %s, got %s", want(), describe(n))
		return 0, false
	}
	switch n.ShortTag() {
	case "!!int":
		var v int64
		if err := n.Decode(&v); err != nil {
			d.add(path, n, "%s is over the maximum %d", n.Value, hi)
			return 0, false
		}
		if msg := rangeProblem(v, lo, hi); msg != "" {
			d.add(path, n, "%s", msg)
			return 0, false
		}
		return v, true
	case "!!float":
		d.add(path, n, "%s is not a whole number; use %s", n.Value, want())
	case "!!str":
		if _, err := strconv.ParseInt(strings.TrimSpace(n.Value), 10, 64); err == nil {
			d.add(path, n, "%q is quoted, so it is text; write the number without quotes", n.Value)
		} else {
			d.add(path, n, "%q is not a number; use %s", n.Value, want())
		}
	default:
		d.add(path, n, "want %s, got %s", want(), describe(n))
	}
	return 0, false
}

// boolean returns key as true or false.
func (f *fields) boolean(key string, def bool) bool {
	n := f.vals[key]
	if n == nil {
		return def
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		var v bool
		if err := n.Decode(&v); err == nil {
			return v
		}
	}
	f.errf(key, "want true or false, got %s", describe(n))
	return def
}

// duration returns key as a Go duration string such as "2s" or "500ms".
// With positive, zero is rejected; negative values always are.
func (f *fields) duration(key string, def time.Duration, positive bool) time.Duration {
	n := f.vals[key]
	if n == nil {
		return def
	}
	if n.Kind != yaml.ScalarNode {
		f.errf(key, "want a duration such as 2s or 500ms, got %s", describe(n))
		return def
	}
	switch n.ShortTag() {
	case "!!int", "!!float":
		f.errf(key, "%s has no unit; add one, e.g. %ss or %sms", n.Value, n.Value, n.Value)
		return def
	case "!!str":
	default:
		f.errf(key, "want a duration such as 2s or 500ms, got %s", describe(n))
		return def
	}
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil {
		f.errf(key, "%q is not a duration; write a number with a unit (ms, s, m, h), e.g. 2s or 500ms", n.Value)
		return def
	}
	if v < 0 || (positive && v == 0) {
		if positive {
			f.errf(key, "%s must be above zero", n.Value)
		} else {
			f.errf(key, "%s must not be negative", n.Value)
		}
		return def
	}
	return v
}

// addr returns key as an IP address; ok is false when it is absent or bad
// (a problem is recorded for bad ones).
func (f *fields) addr(key string) (netip.Addr, bool) {
	n := f.vals[key]
	if n == nil {
		return netip.Addr{}, false
	}
	return f.d.addr(n, f.at(key))
}

func (d *decoder) addr(n *yaml.Node, path string) (netip.Addr, bool) {
	if n.Kind != yaml.ScalarNode {
		d.add(path, n, "want an IP address, got %s", describe(n))
		return netip.Addr{}, false
	}
	s := strings.TrimSpace(n.Value)
	if p, err := netip.ParsePrefix(s); err == nil {
		d.add(path, n, "%q is a prefix; write the address alone: %s", s, p.Addr())
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		d.add(path, n, "%q is not an IP address; write IPv4 like 203.0.113.10 or IPv6 like 2001:db8::10", n.Value)
		return netip.Addr{}, false
	}
	if msg := addrProblem(a); msg != "" {
		d.add(path, n, "%s", msg)
		return netip.Addr{}, false
	}
	return a, true
}

// addrProblem returns "" for an address a file or the API may name, or
// what is wrong with it.
func addrProblem(a netip.Addr) string {
	switch {
	case a.Zone() != "":
		return fmt.Sprintf("%s has a zone; remove %q", a, "%"+a.Zone())
	case a.Is4In6():
		return fmt.Sprintf("%s is an IPv4-mapped IPv6 address; write it as IPv4: %s", a, a.Unmap())
	}
	return ""
}

// rangeProblem returns "" when lo <= v <= hi, or which bound v breaks.
func rangeProblem(v, lo, hi int64) string {
	switch {
	case v < lo:
		return fmt.Sprintf("%d is below the minimum %d", v, lo)
	case v > hi:
		return fmt.Sprintf("%d is over the maximum %d", v, hi)
	}
	return ""
}

// seq returns key's items, dereferenced. what describes the list in a
// type error.
func (f *fields) seq(key, what string) []*yaml.Node {
	n := f.vals[key]
	if n == nil {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		f.errf(key, "want %s, got %s", what, describe(n))
		return nil
	}
	out := make([]*yaml.Node, 0, len(n.Content))
	for _, it := range n.Content {
		if it = f.d.deref(it); it != nil {
			out = append(out, it)
		}
	}
	return out
}

// sub returns key as a nested mapping, empty when absent.
func (f *fields) sub(key, what string, allowed []string) *fields {
	return f.d.mapping(f.vals[key], f.at(key), what, allowed)
}
