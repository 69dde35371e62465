package apiserver

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

// plan answers POST /v1/apply?dry_run=1: what applying the file would
// change. It reads only, so it does not wait for changes in progress.
func (s *server) plan(w http.ResponseWriter, r *http.Request, body []byte) {
	v := r.URL.Query().Get("dry_run")
	if on, err := strconv.ParseBool(v); err != nil || !on {
		s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("dry_run=%q: want dry_run=1 (or true), or leave it out to apply", v))
		return
	}
	p, err := s.c.Plan(r.Context(), body)
	if err != nil {
		s.controllerError(w, r, err)
		return
	}
	for _, l := range []*[]string{&p.Added, &p.Removed, &p.Restart, &p.Global} {
		if *l == nil {
			*l = []string{}
		}
	}
	if p.Changed == nil {
		p.Changed = []api.VIPPlan{}
	}
	for i := range p.Changed {
		if p.Changed[i].Settings == nil {
			p.Changed[i].Settings = []string{}
		}
		if p.Changed[i].Backends == nil {
			p.Changed[i].Backends = []api.BackendPlan{}
		}
	}
	writeJSON(w, http.StatusOK, p)
}

// config answers GET /v1/config: the desired state as a config file.
func (s *server) config(w http.ResponseWriter, r *http.Request) {
	rc, err := s.c.Config(r.Context())
	if err != nil {
		s.controllerError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rc)
}
