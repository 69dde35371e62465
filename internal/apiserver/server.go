// Package apiserver is the daemon's side of the control API whose
// contract is pkg/api: the HTTP/JSON handler that adapts a Controller
// (implemented by the daemon), and the root-only Unix socket it is served
// on. It is internal because only the daemon serves the API; users of the
// API need pkg/api alone.
package apiserver

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"path"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// Controller is what the server needs from the daemon. Every method that
// changes state either applies the whole change or returns an error and
// changes nothing. Errors that are the caller's fault wrap api.ErrInvalid,
// api.ErrNotFound or api.ErrConflict so the server can pick the status
// code.
type Controller interface {
	Status(ctx context.Context) (api.Status, error)
	ListVIPs(ctx context.Context) ([]api.VIP, error)
	AddVIP(ctx context.Context, v api.VIP) error
	RemoveVIP(ctx context.Context, ref api.VIPRef) error
	AddBackend(ctx context.Context, ref api.VIPRef, b api.Backend) error
	RemoveBackend(ctx context.Context, ref api.VIPRef, addr netip.Addr) error
	// SetWeight changes a backend's weight; weight 0 drains it.
	SetWeight(ctx context.Context, ref api.VIPRef, addr netip.Addr, weight uint32) error
	Stats(ctx context.Context) (api.Stats, error)
	Explain(ctx context.Context, req api.ExplainRequest) (api.Explanation, error)
	// Apply replaces the desired state with a config file's contents
	// (YAML). A bad file is rejected whole.
	Apply(ctx context.Context, config []byte) (api.ApplyResult, error)
	// Plan says what Apply would do with a config file, changing nothing.
	Plan(ctx context.Context, config []byte) (api.Plan, error)
	// Config returns the desired state as a config file.
	Config(ctx context.Context) (api.RunningConfig, error)
	// VRRP returns the failover state.
	VRRP(ctx context.Context) (api.VRRP, error)
	// VRRPHandover hands mastership over gracefully (priority 0) and holds
	// off preemption; with resume set it lifts the hold.
	VRRPHandover(ctx context.Context, resume bool) error
	// BGP returns the BGP speaker's sessions and announcements.
	BGP(ctx context.Context) (api.BGP, error)
	// NodeDrain withdraws every VIP from BGP; with resume set it lets
	// them be announced again.
	NodeDrain(ctx context.Context, resume bool) error
	// Conns walks the connection table and calls emit with each entry f
	// selects, as it finds it, up to f.Limit; an error of emit ends the
	// walk and is returned.
	Conns(ctx context.Context, f api.ConnFilter, emit func(api.Conn) error) error
	// FlushConns deletes the entries f selects and says how many.
	FlushConns(ctx context.Context, f api.ConnFilter) (int, error)
	// BackendConns counts a backend's connections by a fresh walk; with
	// wait above zero it waits up to wait for the active count to be 0.
	BackendConns(ctx context.Context, ref api.VIPRef, addr netip.Addr, wait time.Duration) (api.BackendConns, error)
}

// server adapts a Controller to HTTP.
type server struct {
	c   Controller
	log *slog.Logger
	// mu serialises every call that changes state, so that concurrent
	// changes apply one after another, each as a whole.
	mu sync.Mutex
}

type route struct {
	method, path string
	handle       func(*server, http.ResponseWriter, *http.Request)
}

// routes is the whole API; docs/api.md documents each entry.
var routes = []route{
	{"GET", "/v1/status", (*server).status},
	{"GET", "/v1/vips", (*server).listVIPs},
	{"POST", "/v1/vips", (*server).addVIP},
	{"DELETE", "/v1/vips/{vip}", (*server).removeVIP},
	{"POST", "/v1/vips/{vip}/backends", (*server).addBackend},
	{"DELETE", "/v1/vips/{vip}/backends/{address}", (*server).removeBackend},
	{"PUT", "/v1/vips/{vip}/backends/{address}/weight", (*server).setWeight},
	{"GET", "/v1/vips/{vip}/backends/{address}/connections", (*server).backendConns},
	{"POST", "/v1/vips/{vip}/backends/{address}/drain", (*server).drainBackend},
	{"GET", "/v1/conns", (*server).listConns},
	{"DELETE", "/v1/conns", (*server).flushConns},
	{"GET", "/v1/stats", (*server).stats},
	{"POST", "/v1/explain", (*server).explain},
	{"POST", "/v1/apply", (*server).apply}, // ?dry_run=1: plan.go
	{"GET", "/v1/config", (*server).config},
	{"GET", "/v1/vrrp", (*server).vrrp},
	{"POST", "/v1/vrrp/handover", (*server).vrrpHandover},
	{"POST", "/v1/vrrp/resume", (*server).vrrpResume},
	{"GET", "/v1/bgp", (*server).bgp},
	{"POST", "/v1/node/drain", (*server).nodeDrain},
	{"POST", "/v1/node/resume", (*server).nodeResume},
}

// New returns the HTTP handler of the control API, backed by c.
// Calls that change state are serialised; reads run concurrently, so c
// must be safe for concurrent use. Lists in answers are [] rather than
// null when empty. A nil log discards log messages.
func New(c Controller, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &server{c: c, log: log}

	mux := http.NewServeMux()
	// paths answers "which methods does this path take?" for 405s.
	paths := http.NewServeMux()
	allowed := map[string][]string{}
	for _, rt := range routes {
		mux.HandleFunc(rt.method+" "+rt.path, func(w http.ResponseWriter, r *http.Request) {
			rt.handle(s, w, r)
		})
		if _, ok := allowed[rt.path]; !ok {
			paths.Handle(rt.path, http.NotFoundHandler())
		}
		allowed[rt.path] = append(allowed[rt.path], rt.method)
	}
	for _, methods := range allowed {
		sort.Strings(methods)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := paths.Handler(r); pattern != "" {
			methods := allowed[pattern]
			w.Header().Set("Allow", strings.Join(methods, ", "))
			s.fail(w, r, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s: want %s", r.Method, r.URL.Path, strings.Join(methods, " or ")))
			return
		}
		s.fail(w, r, http.StatusNotFound, fmt.Sprintf("no endpoint %s %s (the API is described in docs/api.md)", r.Method, r.URL.Path))
	})
	// ServeMux answers a path with "." or ".." elements or doubled slashes
	// with a redirect to its clean form; an API client gets a JSON 404
	// that names the path instead.
	clean := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "" || path.Clean(p) != p {
			s.fail(w, r, http.StatusNotFound, fmt.Sprintf("no endpoint %s %q: the path is not in clean form (no '.', '..' or '//' elements)", r.Method, p))
			return
		}
		mux.ServeHTTP(w, r)
	})
	return s.recoverPanics(clean)
}

// recoverPanics turns a panic in a handler (or the Controller under it)
// into a logged 500, so that one bad request cannot take the daemon down.
func (s *server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &trackingWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("api: panic while serving a request", "method", r.Method, "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
			if !rw.wroteHeader {
				writeJSON(rw, http.StatusInternalServerError, api.Error{Error: fmt.Sprintf("internal error while serving %s %s: %v (see the daemon log)", r.Method, r.URL.Path, v)})
			}
		}()
		next.ServeHTTP(rw, r)
	})
}

// trackingWriter records whether the response header has been sent.
type trackingWriter struct {
	http.ResponseWriter
	wroteHeader bool
}

func (w *trackingWriter) WriteHeader(code int) {
	w.wroteHeader = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *trackingWriter) Write(b []byte) (int, error) {
	w.wroteHeader = true
	return w.ResponseWriter.Write(b)
}

func (w *trackingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// mutate runs f with the change lock held.
func (s *server) mutate(f func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return f()
}
