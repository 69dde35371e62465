package apiserver

import (
	"strings"
	"testing"
)

func TestBGPRoutes(t *testing.T) {
	for _, tt := range []struct {
		method, path string
		wantCode     int
		wantCall     string
		wantBody     string
	}{
		// Lists the fake leaves nil are [] on the wire.
		{"GET", "/v1/bgp", 200, "BGP", `"asn":65010,"drained":false,"peers":[],"prefixes":[]`},
		{"POST", "/v1/node/drain", 204, "NodeDrain resume=false", ""},
		{"POST", "/v1/node/resume", 204, "NodeDrain resume=true", ""},
	} {
		f := newFake()
		code, body := call(t, New(f, nil), tt.method, tt.path, "")
		if code != tt.wantCode || f.last != tt.wantCall || !strings.Contains(body, tt.wantBody) {
			t.Errorf("%s %s: %d %q, call %q; want %d with %q, call %q", tt.method, tt.path, code, body, f.last, tt.wantCode, tt.wantBody, tt.wantCall)
		}
	}
	if code, _ := call(t, New(newFake(), nil), "GET", "/v1/node/drain", ""); code != 405 {
		t.Errorf("GET /v1/node/drain: %d, want 405", code)
	}
}
