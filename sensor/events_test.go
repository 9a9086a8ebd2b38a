package sensor

import "testing"

func TestBusNeverBlocksOnASlowSubscriber(t *testing.T) {
	b := newBus()
	slow, cancelSlow := b.subscribe(1)
	fast, cancelFast := b.subscribe(100)
	defer cancelSlow()
	for i := 0; i < 10; i++ {
		b.publish(Event{Type: EventBlock})
	}
	if len(slow) != 1 || len(fast) != 10 {
		t.Fatalf("queued slow=%d fast=%d, want 1 and 10", len(slow), len(fast))
	}
	if got := b.dropped.Load(); got != 9 {
		t.Errorf("dropped %d, want 9", got)
	}
	cancelFast()
	cancelFast() // idempotent
	b.publish(Event{Type: EventBan})
	n := 0
	for range fast {
		n++
	}
	if n != 10 {
		t.Errorf("cancelled subscriber got %d events after cancel, want the 10 before it", n)
	}
}
