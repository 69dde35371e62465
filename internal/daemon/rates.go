package daemon

import (
	"context"
	"sync"
	"time"

	"github.com/fulcrum-lb/fulcrum/internal/datapath"
)

// rateSampler reads the counters at a fixed interval and keeps the last two
// snapshots, so `fulcrum stats` shows rates without waiting.
type rateSampler struct {
	dp       *datapath.Datapath
	interval time.Duration

	mu         sync.Mutex
	prev, last datapath.Counters
	prevT      time.Time
	lastT      time.Time
}

func newRateSampler(dp *datapath.Datapath, interval time.Duration) *rateSampler {
	s := &rateSampler{dp: dp, interval: interval}
	s.sample()
	return s
}

func (s *rateSampler) run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sample()
		}
	}
}

func (s *rateSampler) sample() {
	c, err := s.dp.Counters()
	if err != nil {
		return
	}
	now := time.Now()
	s.mu.Lock()
	s.prev, s.prevT = s.last, s.lastT
	s.last, s.lastT = c, now
	s.mu.Unlock()
}

// snapshot returns the newest counters and the ones before, with times.
func (s *rateSampler) snapshot() (prev, last datapath.Counters, prevT, lastT time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.prev, s.last, s.prevT, s.lastT
}
