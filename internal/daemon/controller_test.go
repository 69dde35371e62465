package daemon

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/fulcrum-lb/fulcrum/internal/config"
	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// TestFromAPI: the API's VIP becomes the config VIP a file with the same
// fields gives, and a bad one is refused as api.ErrInvalid with every
// problem named by its field.
func TestFromAPI(t *testing.T) {
	a := netip.MustParseAddr
	ref := api.VIPRef{Protocol: "tcp", Address: a("203.0.113.10"), Port: 80}
	v, err := fromAPI(api.VIP{VIPRef: ref, Mode: "ipip", Backends: []api.Backend{
		{Address: a("198.18.0.11"), Weight: 0}, {Address: a("2001:db8::11"), Weight: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	if v.Mode != config.ModeIPIP || v.Scheduler != config.DefaultScheduler || v.Fragments != config.DefaultFragments ||
		!v.Conntrack || v.RingSize == 0 || len(v.Backends) != 2 || v.Backends[0].Weight != 0 || v.Backends[1].Weight != 3 {
		t.Fatalf("fromAPI = %+v; want ipip with the file's defaults, weights 0 and 3", v)
	}

	_, err = fromAPI(api.VIP{VIPRef: ref, Mode: "nat", Backends: []api.Backend{{Address: a("198.18.0.11"), Weight: 70000}}})
	want := `invalid request: mode: "nat" is not supported; use dsr or ipip; backends[0].weight: 70000 is over the maximum 65535`
	if !errors.Is(err, api.ErrInvalid) || err.Error() != want {
		t.Fatalf("err = %v, want ErrInvalid %q", err, want)
	}

	// Source ranges: taken as a file takes them, listed back the same.
	v, err = fromAPI(api.VIP{VIPRef: ref, Mode: "dsr", SourceRanges: []string{"198.51.100.0/24", "203.0.113.128/25"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := toAPI(v, nil).SourceRanges; len(got) != 2 || got[0] != "198.51.100.0/24" || got[1] != "203.0.113.128/25" {
		t.Fatalf("source ranges through the API: %v", got)
	}
	_, err = fromAPI(api.VIP{VIPRef: ref, Mode: "dsr", SourceRanges: []string{"198.51.100.0/33"}})
	want = `invalid request: source_ranges[0]: "198.51.100.0/33" is not a prefix; write an address and a length, e.g. 198.51.100.0/24 or 2001:db8::/32`
	if !errors.Is(err, api.ErrInvalid) || err.Error() != want {
		t.Fatalf("err = %v, want ErrInvalid %q", err, want)
	}
}
