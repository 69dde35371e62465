package ringsize

import (
	"slices"
	"sync"
)

// Chooser is Choose with a cache of the shapes (backends with their
// weights, and the maximum) it has chosen for, so that many VIPs over the
// same backends, or one VIP planned again after a health change (its
// configured backends unchanged), cost one choice. It is safe for
// concurrent use; the zero value is ready.
type Chooser struct {
	mu     sync.Mutex
	shapes map[uint64][]shape
	held   int // backends held in shapes
}

// maxHeld bounds the backends the cache holds, about 2 MiB of them; when
// it is full the cache starts over.
const maxHeld = 1 << 16

type shape struct {
	max      uint32
	backends []Backend
	choice   Choice
}

// Choose is the package's Choose, cached. The cache compares backends in
// the order given: the same backends in another order are another entry,
// with the same choice.
func (c *Chooser) Choose(backends []Backend, max uint32) (Choice, error) {
	key := shapeKey(backends, max)
	c.mu.Lock()
	for _, s := range c.shapes[key] {
		if s.max == max && slices.Equal(s.backends, backends) {
			c.mu.Unlock()
			return s.choice, nil
		}
	}
	c.mu.Unlock()
	choice, err := Choose(backends, max)
	if err != nil || len(backends) > maxHeld {
		return choice, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shapes == nil || c.held+len(backends) > maxHeld {
		c.shapes, c.held = make(map[uint64][]shape), 0
	}
	c.shapes[key] = append(c.shapes[key], shape{max, slices.Clone(backends), choice})
	c.held += len(backends)
	return choice, nil
}

// shapeKey is an FNV-1a digest of a shape, to find candidates quickly.
func shapeKey(backends []Backend, max uint32) uint64 {
	const prime = 1099511628211
	h := (uint64(14695981039346656037) ^ uint64(max)) * prime
	for _, b := range backends {
		for i := 0; i < len(b.Name); i++ {
			h = (h ^ uint64(b.Name[i])) * prime
		}
		h = (h ^ uint64(b.Weight) ^ 0x100) * prime
	}
	return h
}
