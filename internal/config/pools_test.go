package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// poolVIP is a VIP of three backends with the given pools block (YAML flow
// form).
func poolVIP(pools string) string {
	return base + `vips:
  - address: 203.0.113.1
    port: 80
    protocol: tcp
    backends: [{address: 198.18.0.11}, {address: 198.18.0.12}, {address: 198.18.0.13}]
    pools: ` + pools + "\n"
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPools(t *testing.T) {
	geo := writeFile(t, "geo.csv", `prefix,pool
# a GeoIP export: both families, and pools this vip does not have
198.51.100.0/24,eu
203.0.113.128/25, "us"
2001:db8:1::/48,eu

192.0.2.0/24,apac
198.51.100.0/24,eu
`)
	c := mustParse(t, poolVIP(`[{name: eu, prefixes: [10.1.0.0/16], prefix_file: `+geo+`, backends: [198.18.0.11, 198.18.0.12]},
      {name: us, prefix_file: `+geo+`, backends: [198.18.0.13], fallback: drop}]`))
	ps := c.VIPs[0].Pools
	if len(ps) != 2 {
		t.Fatalf("pools = %+v, want 2", ps)
	}
	eu, us := ps[0], ps[1]
	if got := fmt.Sprint(eu.AllPrefixes()); got != "[10.1.0.0/16 198.51.100.0/24]" {
		t.Errorf("eu prefixes %s, want the inline one and the file's IPv4 eu line (once)", got)
	}
	if got := fmt.Sprint(us.AllPrefixes()); got != "[203.0.113.128/25]" {
		t.Errorf("us prefixes %s, want the file's us line", got)
	}
	if eu.Fallback != PoolFallbackVIP || us.Fallback != PoolFallbackDrop {
		t.Errorf("fallbacks %s, %s; want vip (the default) and drop", eu.Fallback, us.Fallback)
	}
	if !slices.Equal(eu.Backends, []netip.Addr{netip.MustParseAddr("198.18.0.11"), netip.MustParseAddr("198.18.0.12")}) {
		t.Errorf("eu backends %v", eu.Backends)
	}
	// The running config names the file, not its lines, and reads back
	// the same.
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "203.0.113.128/25") {
		t.Errorf("the marshalled config holds the file's prefixes:\n%s", out)
	}
	back := mustParse(t, string(out))
	if got, want := fmt.Sprintf("%+v", back.VIPs[0].Pools), fmt.Sprintf("%+v", ps); got != want {
		t.Errorf("after a round trip pools = %s, want %s", got, want)
	}
}

func TestPoolProblems(t *testing.T) {
	bad := writeFile(t, "bad.csv", "198.51.100.0/24,eu\n\n# comment\n198.51.100.300/24,eu\n")
	hostBits := writeFile(t, "host.csv", "198.51.100.1/24,eu\n")
	threeCols := writeFile(t, "cols.csv", "198.51.100.0/24,eu,extra\n")
	twoPools := writeFile(t, "two.csv", "198.51.100.0/24,eu\n10.0.0.0/8,us\n198.51.100.0/24,us\n")
	badName := writeFile(t, "name.csv", "198.51.100.0/24,e u\n")
	v6only := writeFile(t, "v6.csv", "2001:db8::/32,eu\n")
	missing := filepath.Join(t.TempDir(), "nope.csv")
	tests := []struct {
		name, pools, path, fragment string
	}{
		{"bad inline prefix", `[{name: eu, prefixes: [198.51.100.0/33], backends: [198.18.0.11]}]`, "vips[0].pools[0].prefixes[0]", `"198.51.100.0/33" is not a prefix`},
		{"inline host bits", `[{name: eu, prefixes: [198.51.100.7/24], backends: [198.18.0.11]}]`, "vips[0].pools[0].prefixes[0]", "write 198.51.100.0/24"},
		{"inline other family", `[{name: eu, prefixes: ["2001:db8::/32"], backends: [198.18.0.11]}]`, "vips[0].pools[0].prefixes[0]", "is IPv6 but the vip is IPv4"},
		{"bad file line", `[{name: eu, prefix_file: ` + bad + `, backends: [198.18.0.11]}]`, "vips[0].pools[0].prefix_file", bad + ` line 4: "198.51.100.300/24" is not a prefix`},
		{"file host bits", `[{name: eu, prefix_file: ` + hostBits + `, backends: [198.18.0.11]}]`, "vips[0].pools[0].prefix_file", hostBits + " line 1: \"198.51.100.1/24\" has address bits set"},
		{"file three columns", `[{name: eu, prefix_file: ` + threeCols + `, backends: [198.18.0.11]}]`, "vips[0].pools[0].prefix_file", threeCols + ` line 1: "198.51.100.0/24,eu,extra" is not "prefix,pool"`},
		{"file prefix in two pools", `[{name: eu, prefix_file: ` + twoPools + `, backends: [198.18.0.11]}]`, "vips[0].pools[0].prefix_file", twoPools + " line 3: 198.51.100.0/24 is already in pool eu on line 1"},
		{"file pool name", `[{name: eu, prefix_file: ` + badName + `, backends: [198.18.0.11]}]`, "vips[0].pools[0].prefix_file", badName + ` line 1: pool name "e u" has ' '`},
		{"missing file", `[{name: eu, prefix_file: ` + missing + `, backends: [198.18.0.11]}]`, "vips[0].pools[0].prefix_file", "read " + missing + ": open " + missing + ": no such file or directory"},
		{"relative file", `[{name: eu, prefix_file: geo.csv, backends: [198.18.0.11]}]`, "vips[0].pools[0].prefix_file", "not an absolute path"},
		{"file without the vip's family", `[{name: eu, prefix_file: ` + v6only + `, backends: [198.18.0.11]}]`, "vips[0].pools[0].prefix_file", "has no IPv4 line for pool eu"},
		{"unknown backend", `[{name: eu, prefixes: [10.0.0.0/8], backends: [198.18.0.99]}]`, "vips[0].pools[0].backends[0]", "198.18.0.99 is not a backend of this vip"},
		{"no backends", `[{name: eu, prefixes: [10.0.0.0/8]}]`, "vips[0].pools[0].backends", "a pool needs backends"},
		{"no prefixes", `[{name: eu, backends: [198.18.0.11]}]`, "vips[0].pools[0].prefixes", "pool eu has no prefixes"},
		{"duplicate name", `[{name: eu, prefixes: [10.0.0.0/8], backends: [198.18.0.11]}, {name: eu, prefixes: [10.1.0.0/16], backends: [198.18.0.11]}]`, "vips[0].pools[1].name", `"eu" is already the name of pools[0]`},
		{"bad name", `[{name: "e/u", prefixes: [10.0.0.0/8], backends: [198.18.0.11]}]`, "vips[0].pools[0].name", `"e/u" has '/'`},
		{"prefix in two pools", `[{name: eu, prefixes: [10.0.0.0/8], backends: [198.18.0.11]}, {name: us, prefixes: [10.0.0.0/8], backends: [198.18.0.12]}]`, "vips[0].pools[1].prefixes[0]", "10.0.0.0/8 is already in pool eu"},
		{"bad fallback", `[{name: eu, prefixes: [10.0.0.0/8], backends: [198.18.0.11], fallback: other}]`, "vips[0].pools[0].fallback", `"other"`},
		{"unknown key", `[{name: eu, prefixes: [10.0.0.0/8], backends: [198.18.0.11], weight: 2}]`, "vips[0].pools[0].weight", "unknown"},
	}
	// Round-robin, least-conn and least-time over pools are not built: the pair is
	// refused by name (the fast path takes the pool's ring).
	for _, sched := range []string{"round-robin", "least-conn", "least-time"} {
		in := strings.Replace(poolVIP(`[{name: eu, prefixes: [10.0.0.0/8], backends: [198.18.0.11]}]`), "    protocol: tcp\n", "    protocol: tcp\n    scheduler: "+sched+"\n", 1)
		if ps := problems(t, in); len(ps) != 1 || ps[0].Path != "vips[0].pools" || !strings.Contains(ps[0].Message, sched+" VIP cannot have pools") {
			t.Errorf("%s with pools: problems %v, want only vips[0].pools refused", sched, ps)
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ps := problems(t, poolVIP(tc.pools))
			for _, p := range ps {
				if p.Path == tc.path && strings.Contains(p.Message, tc.fragment) {
					return
				}
			}
			t.Errorf("problems %v, want one at %s containing %q", ps, tc.path, tc.fragment)
		})
	}
}

// geoFile writes a prefix file of n lines over two pools (and a header),
// and returns its path and how many lines each pool has.
func geoFile(tb testing.TB, n int) (string, map[string]int) {
	tb.Helper()
	var b strings.Builder
	b.WriteString("network,pool\n")
	counts := map[string]int{}
	for i := range n {
		pool := "eu"
		if i%3 == 0 {
			pool = "us"
		}
		counts[pool]++
		fmt.Fprintf(&b, "%d.%d.%d.0/24,%s\n", 10+i>>16, byte(i>>8), byte(i), pool)
	}
	path := filepath.Join(tb.TempDir(), "geo.csv")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path, counts
}

// TestPoolsLargeFile: a prefix file of 100 000 lines loads whole, each line
// in its pool.
func TestPoolsLargeFile(t *testing.T) {
	path, counts := geoFile(t, 100000)
	c := mustParse(t, poolVIP(`[{name: eu, prefix_file: `+path+`, backends: [198.18.0.11]}, {name: us, prefix_file: `+path+`, backends: [198.18.0.12]}]`))
	for _, p := range c.VIPs[0].Pools {
		if got := len(p.FilePrefixes); got != counts[p.Name] {
			t.Errorf("pool %s: %d prefixes, want %d", p.Name, got, counts[p.Name])
		}
	}
	if p := c.VIPs[0].Pools[1].FilePrefixes[0]; p != netip.MustParsePrefix("10.0.0.0/24") {
		t.Errorf("us's first prefix %s, want line 2's 10.0.0.0/24", p)
	}
}

// BenchmarkPoolsLargeFile loads a configuration whose two pools take their
// prefixes from one file of 100 000 lines.
func BenchmarkPoolsLargeFile(b *testing.B) {
	path, _ := geoFile(b, 100000)
	doc := []byte(poolVIP(`[{name: eu, prefix_file: ` + path + `, backends: [198.18.0.11]}, {name: us, prefix_file: ` + path + `, backends: [198.18.0.12]}]`))
	for b.Loop() {
		if _, err := Parse(doc); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/load")
	fmt.Printf("control pools-100k-load ms=%.1f\n", float64(b.Elapsed().Microseconds())/1000/float64(b.N))
}
