package apiserver

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// FuzzServer drives every route with fuzzed methods, paths and bodies:
// the server must never panic, must answer with a known status code, and
// every error must be a JSON {"error": ...} that says something.
func FuzzServer(f *testing.F) {
	seeds := []struct{ method, path, body string }{
		{"GET", "/v1/status", ""},
		{"GET", "/v1/vips", ""},
		{"POST", "/v1/vips", `{"protocol":"tcp","address":"203.0.113.10","port":80,"mode":"dsr","backends":[{"address":"198.18.0.11","weight":1}]}`},
		{"POST", "/v1/vips", `{"protocol":"tcp","address":"203.0.113.10","port":"eighty"}`},
		{"POST", "/v1/vips", `{"protocol":"tcp","address":"203.0.113.10","port":80,"bogus":1}`},
		{"DELETE", "/v1/vips/tcp%2F203.0.113.10%3A80", ""},
		{"POST", "/v1/vips/tcp%2F203.0.113.10%3A80/backends", `{"address":"198.18.0.12","weight":2}`},
		{"DELETE", "/v1/vips/tcp%2F203.0.113.10%3A80/backends/198.18.0.12", ""},
		{"PUT", "/v1/vips/tcp%2F203.0.113.10%3A80/backends/198.18.0.11/weight", `{"weight":0}`},
		{"PUT", "/v1/vips/tcp%2F203.0.113.10%3A80/backends/198.18.0.11/weight", `{"weight":-1}`},
		{"GET", "/v1/stats", ""},
		{"POST", "/v1/explain", `{"src":"198.19.1.2","dst":"203.0.113.10","protocol":"tcp","sport":1,"dport":80}`},
		{"POST", "/v1/apply", "interfaces: [{name: eth0}]\n"},
		{"PATCH", "/v1/vips", "{}"},
		{"GET", "/v1/vips/udp%2F%5B2001%3Adb8%3A%3A1%5D%3A53/backends", ""},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.body)
	}
	h := New(newFake(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	known := map[int]bool{200: true, 201: true, 204: true, 400: true, 404: true, 405: true, 409: true, 413: true, 500: true}
	f.Fuzz(func(t *testing.T, method, path, body string) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		req, err := http.NewRequest(method, "http://fulcrum"+path, strings.NewReader(body))
		if err != nil {
			return // not an HTTP request a client could send
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if !known[rec.Code] {
			t.Fatalf("%s %s: status %d", method, path, rec.Code)
		}
		if rec.Code >= 400 {
			var e api.Error
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || strings.TrimSpace(e.Error) == "" {
				t.Fatalf("%s %s: status %d with body %q: want {\"error\": \"...\"}", method, path, rec.Code, rec.Body.String())
			}
		}
	})
}
