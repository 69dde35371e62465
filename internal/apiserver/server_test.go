package apiserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// call sends one request to h and returns the status code and body.
func call(t *testing.T, h http.Handler, method, path, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// errorMessage decodes an Error body, failing the test if it is not one.
func errorMessage(t *testing.T, body string) string {
	t.Helper()
	var e api.Error
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error == "" {
		t.Fatalf("error body %q is not {\"error\": \"...\"}: %v", body, err)
	}
	return e.Error
}

const vipPathWeb = "/v1/vips/tcp%2F203.0.113.10%3A80"

func TestRoutes(t *testing.T) {
	tests := []struct {
		method, path, body string
		wantCode           int
		wantCall           string // the fake's last call
		wantBody           string // a substring of the answer
	}{
		{"GET", "/v1/status", "", 200, "Status", `"instance":"default"`},
		{"GET", "/v1/vips", "", 200, "ListVIPs", `"address":"203.0.113.10"`},
		{"POST", "/v1/vips", `{"protocol":"UDP","address":"203.0.113.11","port":53,"mode":"dsr","backends":[{"address":"198.18.0.21","weight":1}]}`,
			201, "AddVIP udp/203.0.113.11:53", `"protocol":"udp"`},
		{"DELETE", vipPathWeb, "", 204, "RemoveVIP tcp/203.0.113.10:80", ""},
		// Unescaped ':' in the segment is fine too.
		{"DELETE", "/v1/vips/tcp%2F203.0.113.10:80", "", 204, "RemoveVIP tcp/203.0.113.10:80", ""},
		{"POST", vipPathWeb + "/backends", `{"address":"198.18.0.13","weight":3}`, 201, "AddBackend tcp/203.0.113.10:80 198.18.0.13 3", `"weight":3`},
		{"DELETE", vipPathWeb + "/backends/198.18.0.12", "", 204, "RemoveBackend tcp/203.0.113.10:80 198.18.0.12", ""},
		{"PUT", vipPathWeb + "/backends/198.18.0.12/weight", `{"weight":0}`, 200, "SetWeight tcp/203.0.113.10:80 198.18.0.12 0", `{"weight":0}`},
		{"GET", "/v1/stats", "", 200, "Stats", `"packets_per_second":1200`},
		{"POST", "/v1/explain", `{"src":"198.19.1.2","dst":"203.0.113.10","protocol":"tcp","sport":40000,"dport":80,"syn":true}`,
			200, "Explain tcp 198.19.1.2:40000 -> 203.0.113.10:80 syn=true", `"reason":"ring slot"`},
		{"POST", "/v1/apply", "vips: []\n", 200, "Apply", `"added":["udp/203.0.113.11:53"]`},
		{"POST", "/v1/apply?dry_run=1", "vips: []\n", 200, "Plan", `"moved_slots":100`},
		{"POST", "/v1/apply?dry_run=true", "vips: []\n", 200, "Plan", `"restart":[]`},
		{"POST", "/v1/apply?dry_run=0", "vips: []\n", 400, "", `dry_run=\"0\": want dry_run=1 (or true), or leave it out to apply`},
		{"GET", "/v1/config", "", 200, "Config", `"yaml":"interfaces:\n  - name: eth0\n"`},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			f := newFake()
			code, body := call(t, New(f, nil), tt.method, tt.path, tt.body)
			if code != tt.wantCode {
				t.Fatalf("status %d, want %d; body %s", code, tt.wantCode, body)
			}
			if f.last != tt.wantCall {
				t.Errorf("controller call %q, want %q", f.last, tt.wantCall)
			}
			if !strings.Contains(body, tt.wantBody) {
				t.Errorf("body %s does not contain %s", body, tt.wantBody)
			}
			if code == 204 && body != "" {
				t.Errorf("204 with body %q", body)
			}
		})
	}
}

func TestApplyPassesBodyVerbatim(t *testing.T) {
	f := newFake()
	cfg := "# comment\nvips:\n  - address: 203.0.113.10\n"
	req := httptest.NewRequest("POST", "/v1/apply", strings.NewReader(cfg))
	req.Header.Set("Content-Type", "application/yaml; charset=utf-8")
	rec := httptest.NewRecorder()
	New(f, nil).ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("status %d, want 200: %s", rec.Code, rec.Body)
	}
	if string(f.cfg) != cfg {
		t.Errorf("controller got config %q, want %q", f.cfg, cfg)
	}
}

func TestApplyRefusesFormUpload(t *testing.T) {
	req := httptest.NewRequest("POST", "/v1/apply", strings.NewReader("--x\r\n"))
	req.Header.Set("Content-Type", "multipart/form-data; boundary=x")
	rec := httptest.NewRecorder()
	New(newFake(), nil).ServeHTTP(rec, req)
	if rec.Code != http.StatusUnsupportedMediaType {
		t.Fatalf("status %d, want 415", rec.Code)
	}
	if msg := errorMessage(t, rec.Body.String()); !strings.Contains(msg, "application/yaml") {
		t.Errorf("message %q does not name application/yaml", msg)
	}
}

func TestBadRequests(t *testing.T) {
	tests := []struct {
		name, method, path, body string
		wantCode                 int
		wantMsg                  []string // substrings of the error message
	}{
		{"unknown field", "POST", "/v1/vips", `{"protocol":"tcp","address":"203.0.113.11","port":80,"mode":"dsr","colour":"red"}`,
			400, []string{`unknown field "colour"`}},
		{"unknown nested field", "POST", vipPathWeb + "/backends", `{"address":"198.18.0.13","wieght":3}`,
			400, []string{`unknown field "wieght"`}},
		{"wrong type", "POST", "/v1/vips", `{"protocol":"tcp","address":"203.0.113.11","port":"eighty","mode":"dsr"}`,
			400, []string{`field "port"`, "got string", "0 to 65535"}},
		{"out of range", "PUT", vipPathWeb + "/backends/198.18.0.12/weight", `{"weight":-1}`,
			400, []string{`field "weight"`, "number -1"}},
		{"nested wrong type", "POST", "/v1/vips", `{"protocol":"tcp","address":"203.0.113.11","port":80,"mode":"dsr","backends":[{"address":"198.18.0.1","weight":"x"}]}`,
			400, []string{`field "backends.weight"`}},
		{"bad address", "POST", "/v1/vips", `{"protocol":"tcp","address":"203.0.113","port":80,"mode":"dsr"}`,
			400, []string{"address", "203.0.113"}},
		{"missing address", "POST", "/v1/vips", `{"protocol":"tcp","port":80,"mode":"dsr"}`,
			400, []string{`field "address" is required`}},
		{"bad protocol", "POST", "/v1/vips", `{"protocol":"sctp","address":"203.0.113.11","port":80,"mode":"dsr"}`,
			400, []string{`field "protocol"`, "sctp"}},
		{"backend without address", "POST", "/v1/vips", `{"protocol":"tcp","address":"203.0.113.11","port":80,"mode":"dsr","backends":[{"weight":1}]}`,
			400, []string{`"backends[0].address" is required`}},
		{"two values", "POST", vipPathWeb + "/backends", `{"address":"198.18.0.13"} {"address":"198.18.0.14"}`,
			400, []string{"more than one JSON value"}},
		{"trailing garbage", "POST", vipPathWeb + "/backends", `{"address":"198.18.0.13"} x`,
			400, []string{"malformed JSON"}},
		{"empty body", "POST", "/v1/explain", "",
			400, []string{"empty"}},
		{"truncated", "POST", "/v1/explain", `{"src":"198.19.1.2"`,
			400, []string{"malformed JSON"}},
		{"syntax", "POST", "/v1/explain", `{"src":}`,
			400, []string{"malformed JSON at byte"}},
		{"not an object", "POST", "/v1/explain", `[1,2]`,
			400, []string{"got array", "want an object"}},
		{"weight missing", "PUT", vipPathWeb + "/backends/198.18.0.12/weight", `{}`,
			400, []string{`field "weight" is required`}},
		{"explain families", "POST", "/v1/explain", `{"src":"2001:db8::1","dst":"203.0.113.10","protocol":"tcp"}`,
			400, []string{"different IP families"}},
		{"bad vip in path", "DELETE", "/v1/vips/tcp%2F203.0.113.10", "",
			400, []string{"path: vip", "ADDRESS:PORT"}},
		{"bad backend in path", "DELETE", vipPathWeb + "/backends/not-an-ip", "",
			400, []string{"backend address", "not-an-ip"}},
		{"empty apply", "POST", "/v1/apply", "  \n",
			400, []string{"empty"}},
		{"unknown path", "GET", "/v1/nope", "",
			404, []string{"no endpoint GET /v1/nope"}},
		{"wrong method", "DELETE", "/v1/status", "",
			405, []string{"method DELETE not allowed", "GET"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			code, body := call(t, New(f, nil), tt.method, tt.path, tt.body)
			if code != tt.wantCode {
				t.Fatalf("status %d, want %d; body %s", code, tt.wantCode, body)
			}
			msg := errorMessage(t, body)
			for _, want := range tt.wantMsg {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q does not contain %q", msg, want)
				}
			}
			if n := f.mutations.Load(); n != 0 {
				t.Errorf("a refused request reached the controller (%d mutations)", n)
			}
		})
	}
}

func TestWrongMethodListsAllowed(t *testing.T) {
	req := httptest.NewRequest("PATCH", "/v1/vips", nil)
	rec := httptest.NewRecorder()
	New(newFake(), nil).ServeHTTP(rec, req)
	if rec.Code != 405 {
		t.Fatalf("status %d, want 405", rec.Code)
	}
	if got := rec.Header().Get("Allow"); got != "GET, POST" {
		t.Errorf("Allow: %q, want %q", got, "GET, POST")
	}
}

func TestOversizedBody(t *testing.T) {
	big := `{"address":"198.18.0.13","mac":"` + strings.Repeat("a", api.MaxJSONBody) + `"}`
	code, body := call(t, New(newFake(), nil), "POST", vipPathWeb+"/backends", big)
	if code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413; body %.200s", code, body)
	}
	if msg := errorMessage(t, body); !strings.Contains(msg, "too large") || !strings.Contains(msg, "1 MiB") {
		t.Errorf("message %q does not say too large and 1 MiB", msg)
	}

	// An apply body may be larger than a JSON body, up to its own limit.
	f := newFake()
	cfg := "# " + strings.Repeat("x", 2<<20) + "\nvips: []\n"
	if code, body := call(t, New(f, nil), "POST", "/v1/apply", cfg); code != 200 {
		t.Fatalf("apply of 2 MiB: status %d, want 200: %.200s", code, body)
	}
	cfg = strings.Repeat("#", api.MaxApplyBody+1)
	code, body = call(t, New(f, nil), "POST", "/v1/apply", cfg)
	if code != http.StatusRequestEntityTooLarge {
		t.Fatalf("apply over the limit: status %d, want 413", code)
	}
	if msg := errorMessage(t, body); !strings.Contains(msg, "4 MiB") {
		t.Errorf("message %q does not name the 4 MiB limit", msg)
	}
}

func TestControllerErrors(t *testing.T) {
	tests := []struct {
		err      error
		wantCode int
	}{
		{fmt.Errorf("vip tcp/203.0.113.10:80: ring size 100 is not prime: %w", api.ErrInvalid), 400},
		{fmt.Errorf("vip tcp/203.0.113.99:80: %w", api.ErrNotFound), 404},
		{fmt.Errorf("vip tcp/203.0.113.10:80 already exists: %w", api.ErrConflict), 409},
		{errors.New("update map vips: operation not permitted"), 500},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.wantCode), func(t *testing.T) {
			f := newFake()
			f.err = tt.err
			h := New(f, nil)
			for _, r := range routes {
				path := strings.NewReplacer("{vip}", "tcp%2F203.0.113.10%3A80", "{address}", "198.18.0.12").Replace(r.path)
				body := map[string]string{
					"/v1/vips":                `{"protocol":"tcp","address":"203.0.113.12","port":80,"mode":"dsr"}`,
					"/v1/vips/{vip}/backends": `{"address":"198.18.0.13"}`,
					"/v1/vips/{vip}/backends/{address}/weight": `{"weight":1}`,
					"/v1/explain": `{"src":"198.19.1.2","dst":"203.0.113.10","protocol":"tcp"}`,
					"/v1/apply":   "vips: []",
					"/v1/vips/{vip}/backends/{address}/drain": `{}`,
				}[r.path]
				if r.path == "/v1/conns" {
					path += "?vip=tcp/203.0.113.10:80" // a flush needs a filter
				}
				if r.method == "GET" || r.method == "DELETE" {
					body = ""
				}
				code, resp := call(t, h, r.method, path, body)
				if code != tt.wantCode {
					t.Errorf("%s %s: status %d, want %d; body %s", r.method, r.path, code, tt.wantCode, resp)
					continue
				}
				if msg := errorMessage(t, resp); msg != tt.err.Error() {
					t.Errorf("%s %s: message %q, want %q", r.method, r.path, msg, tt.err)
				}
			}
		})
	}
}

func TestPanicIsA500(t *testing.T) {
	f := newFake()
	f.panicMsg = "boom"
	h := New(f, nil)
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/v1/status", ""},
		{"POST", vipPathWeb + "/backends", `{"address":"198.18.0.13"}`},
	} {
		code, body := call(t, h, r.method, r.path, r.body)
		if code != 500 {
			t.Fatalf("%s %s with a panicking controller: status %d, want 500", r.method, r.path, code)
		}
		if msg := errorMessage(t, body); !strings.Contains(msg, "internal error") || !strings.Contains(msg, "boom") {
			t.Errorf("message %q, want an internal error naming the panic", msg)
		}
	}
	// The change lock was released: the next change goes through.
	f.panicMsg = ""
	done := make(chan int)
	go func() {
		code, _ := call(t, h, "PUT", vipPathWeb+"/backends/198.18.0.12/weight", `{"weight":5}`)
		done <- code
	}()
	select {
	case code := <-done:
		if code != 200 {
			t.Errorf("change after a panic: status %d, want 200", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("change after a panic hangs: the change lock was not released")
	}
}

func TestMutationsAreSerialised(t *testing.T) {
	f := newFake()
	f.hold = 2 * time.Millisecond
	srv := httptest.NewServer(New(f, nil))
	defer srv.Close()

	requests := []struct{ method, path, body string }{
		{"POST", "/v1/vips", `{"protocol":"tcp","address":"203.0.113.20","port":80,"mode":"dsr"}`},
		{"DELETE", "/v1/vips/tcp%2F203.0.113.20%3A80", ""},
		{"POST", vipPathWeb + "/backends", `{"address":"198.18.0.13","weight":1}`},
		{"DELETE", vipPathWeb + "/backends/198.18.0.13", ""},
		{"PUT", vipPathWeb + "/backends/198.18.0.11/weight", `{"weight":7}`},
		{"POST", "/v1/apply", "vips: []"},
	}
	var wg sync.WaitGroup
	const rounds = 8
	for i := 0; i < rounds; i++ {
		for _, r := range requests {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(r.method, srv.URL+r.path, bytes.NewReader([]byte(r.body)))
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				// Conflicts and not-founds are expected from racing
				// add/remove pairs; a 500 is not.
				if resp.StatusCode >= 500 {
					t.Errorf("%s %s: status %d", r.method, r.path, resp.StatusCode)
				}
			}()
		}
	}
	wg.Wait()
	if got, want := f.mutations.Load(), int32(rounds*len(requests)); got != want {
		t.Errorf("%d mutating calls reached the controller, want %d", got, want)
	}
	if n := f.overlaps.Load(); n != 0 {
		t.Errorf("%d mutating calls overlapped, want none", n)
	}
}

func TestReadsAreNotSerialisedBehindChanges(t *testing.T) {
	f := newFake()
	f.hold = 300 * time.Millisecond
	h := New(f, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		call(t, h, "PUT", vipPathWeb+"/backends/198.18.0.11/weight", `{"weight":7}`)
	}()
	for f.active.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	if code, _ := call(t, h, "GET", "/v1/status", ""); code != 200 {
		t.Fatalf("status %d", code)
	}
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("a read waited %v behind a change", d)
	}
	<-done
}

func TestEmptyListsAreArrays(t *testing.T) {
	f := newFake()
	f.vips = []api.VIP{{VIPRef: mustRef("udp/203.0.113.11:53"), Mode: "dsr"}}
	h := New(f, nil)
	if _, body := call(t, h, "GET", "/v1/vips", ""); !strings.Contains(body, `"backends":[]`) {
		t.Errorf("vip without backends: %s, want \"backends\":[]", body)
	}
	if _, body := call(t, h, "POST", "/v1/apply", "vips: []"); !strings.Contains(body, `"removed":[]`) || !strings.Contains(body, `"changed":[]`) {
		t.Errorf("apply result: %s, want [] for empty lists", body)
	}
	f.vips = nil
	if _, body := call(t, h, "GET", "/v1/vips", ""); strings.TrimSpace(body) != "[]" {
		t.Errorf("no VIPs: %s, want []", body)
	}
}
