package apiserver

import (
	"net/http"

	"github.com/fulcrum-lb/fulcrum/pkg/api"
)

func (s *server) bgp(w http.ResponseWriter, r *http.Request) {
	st, err := s.c.BGP(r.Context())
	if err != nil {
		s.controllerError(w, r, err)
		return
	}
	if st.Peers == nil {
		st.Peers = []api.BGPPeer{}
	}
	if st.Prefixes == nil {
		st.Prefixes = []api.BGPPrefix{}
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *server) nodeDrain(w http.ResponseWriter, r *http.Request)  { s.drain(w, r, false) }
func (s *server) nodeResume(w http.ResponseWriter, r *http.Request) { s.drain(w, r, true) }

func (s *server) drain(w http.ResponseWriter, r *http.Request, resume bool) {
	if err := s.mutate(func() error { return s.c.NodeDrain(r.Context(), resume) }); err != nil {
		s.controllerError(w, r, err)
		return
	}
	s.log.Info("api: node", "drain", !resume, "resume", resume)
	w.WriteHeader(http.StatusNoContent)
}
