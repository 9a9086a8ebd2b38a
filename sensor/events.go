package sensor

import (
	"sync"
	"sync/atomic"
)

// bus fans events out to subscribers (the API's SSE clients, the events
// log, the daemon's stdout). Publishing never blocks: a subscriber whose
// queue is full loses the event, and the loss is counted, so a stuck SSE
// client can never slow enforcement.
type bus struct {
	mu      sync.Mutex
	subs    map[*subscriber]struct{}
	dropped atomic.Uint64
}

type subscriber struct {
	ch      chan Event
	dropped atomic.Uint64
}

func newBus() *bus { return &bus{subs: make(map[*subscriber]struct{})} }

// subscribe returns a channel of events with room for queue of them, and a
// cancel func that closes it.
func (b *bus) subscribe(queue int) (<-chan Event, func()) {
	s := &subscriber{ch: make(chan Event, queue)}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.subs, s)
			b.mu.Unlock()
			close(s.ch)
		})
	}
}

// publish hands ev to every subscriber that has room.
func (b *bus) publish(ev Event) {
	b.mu.Lock()
	for s := range b.subs {
		select {
		case s.ch <- ev:
		default:
			s.dropped.Add(1)
			b.dropped.Add(1)
		}
	}
	b.mu.Unlock()
}
