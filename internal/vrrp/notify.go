package vrrp

import (
	"sync"
)

// notifier calls OnState in order on its own goroutine.
type notifier struct {
	fn    func(old, new State)
	mu    sync.Mutex
	queue [][2]State
	wake  chan struct{}
	done  chan struct{}
	quit  bool
}

func (n *notifier) start(fn func(old, new State)) {
	n.fn = fn
	n.wake = make(chan struct{}, 1)
	n.done = make(chan struct{})
	go n.loop()
}

func (n *notifier) push(from, to State) {
	if n.fn == nil {
		return
	}
	n.mu.Lock()
	n.queue = append(n.queue, [2]State{from, to})
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// stop delivers what is queued and waits for the goroutine to end.
func (n *notifier) stop() {
	n.mu.Lock()
	n.quit = true
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
	<-n.done
}

func (n *notifier) loop() {
	defer close(n.done)
	for range n.wake {
		for {
			n.mu.Lock()
			if len(n.queue) == 0 {
				quit := n.quit
				n.mu.Unlock()
				if quit {
					return
				}
				break
			}
			t := n.queue[0]
			n.queue = n.queue[1:]
			n.mu.Unlock()
			n.fn(t[0], t[1])
		}
	}
}
