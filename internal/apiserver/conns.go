package apiserver

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// listConns streams the connection entries as JSON lines (one api.Conn a
// line) while the controller walks the table, so neither side holds the
// listing. A walk that fails after the first line ends the stream with a
// line {"error": "..."}; before it, the answer is an ordinary error.
func (s *server) listConns(w http.ResponseWriter, r *http.Request) {
	f, err := api.ParseConnFilter(r.URL.Query())
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	var out *bufio.Writer
	var enc *json.Encoder
	err = s.c.Conns(r.Context(), f, func(c api.Conn) error {
		if out == nil {
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(http.StatusOK)
			out = bufio.NewWriterSize(w, 32<<10)
			enc = json.NewEncoder(out)
		}
		return enc.Encode(api.ConnLine{Conn: &c})
	})
	switch {
	case err != nil && out == nil:
		s.controllerError(w, r, err)
		return
	case out == nil: // nothing matched
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		return
	case err != nil:
		if r.Context().Err() != nil {
			return // the client went away: nobody reads the rest
		}
		s.log.Warn("api: connection list ended early", "err", err)
		enc.Encode(api.ConnLine{Error: err.Error()})
	}
	out.Flush()
}

func (s *server) flushConns(w http.ResponseWriter, r *http.Request) {
	f, err := api.ParseConnFilter(r.URL.Query())
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	if f.Limit != 0 {
		s.fail(w, r, http.StatusBadRequest, "query parameter limit: a flush deletes every entry it selects; leave limit out")
		return
	}
	if f.VIP == nil && !f.Backend.IsValid() {
		s.fail(w, r, http.StatusBadRequest, "a flush needs query parameter vip or backend (or both)")
		return
	}
	var n int
	if err := s.mutate(func() error {
		var err error
		n, err = s.c.FlushConns(r.Context(), f)
		return err
	}); err != nil {
		s.controllerError(w, r, err)
		return
	}
	s.log.Info("api: connections flushed", "filter", f.Query(), "deleted", n)
	writeJSON(w, http.StatusOK, api.FlushResult{Deleted: n})
}

func (s *server) backendConns(w http.ResponseWriter, r *http.Request) {
	ref, addr, ok := s.backendParams(w, r)
	if !ok {
		return
	}
	var wait time.Duration
	for k, v := range r.URL.Query() {
		if k != "wait_ns" {
			s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("query parameter %q: unknown; want wait_ns", k))
			return
		}
		n, err := strconv.ParseInt(v[0], 10, 64)
		if err != nil || n < 0 || time.Duration(n) > api.MaxDrainWait {
			s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("query parameter wait_ns: %q, want nanoseconds from 0 to %d (%v)", v[0], api.MaxDrainWait, api.MaxDrainWait))
			return
		}
		wait = time.Duration(n)
	}
	n, err := s.c.BackendConns(r.Context(), ref, addr, wait)
	if err != nil {
		s.controllerError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, n)
}

// drainBackend sets the backend's weight to 0, then waits (without the
// change lock) for its active connections to end, or for the request's
// wait to pass.
func (s *server) drainBackend(w http.ResponseWriter, r *http.Request) {
	var req api.DrainRequest
	ref, addr, ok := s.backendRequest(w, r, &req)
	if !ok {
		return
	}
	if req.Wait < 0 || req.Wait > api.MaxDrainWait {
		s.fail(w, r, http.StatusBadRequest, fmt.Sprintf(`field "wait_ns": %d, want 0 to %d (%v)`, req.Wait, api.MaxDrainWait, api.MaxDrainWait))
		return
	}
	if err := s.mutate(func() error { return s.c.SetWeight(r.Context(), ref, addr, 0) }); err != nil {
		s.controllerError(w, r, err)
		return
	}
	s.log.Info("api: backend drained", "vip", ref.String(), "backend", addr, "wait", req.Wait)
	n, err := s.c.BackendConns(r.Context(), ref, addr, req.Wait)
	if err != nil {
		s.controllerError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, n)
}
