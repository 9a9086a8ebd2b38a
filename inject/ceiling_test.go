package inject

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestCeilingRate(t *testing.T) {
	c := NewCeiling(1000) // 1 ms per frame, burst 100
	now := int64(1_700_000_000_000_000_000)
	allowed := 0
	for range 1000 { // a burst at one instant: only the bucket's worth passes
		if c.Allow(now) {
			allowed++
		}
	}
	if allowed != 100 {
		t.Errorf("burst at one instant: %d allowed, want 100 (pps/10)", allowed)
	}
	if got := c.Suppressed(); got != 900 {
		t.Errorf("Suppressed = %d, want 900", got)
	}
	// Over the next second offered 10x the rate: exactly the rate passes.
	allowed = 0
	for i := range 10000 {
		if c.Allow(now + int64(i+1)*100_000) { // every 0.1 ms
			allowed++
		}
	}
	if allowed != 1000 {
		t.Errorf("one second at 10x: %d allowed, want 1000", allowed)
	}
	// After a quiet second the bucket is full again, no fuller.
	now += 3_000_000_000
	allowed = 0
	for range 500 {
		if c.Allow(now) {
			allowed++
		}
	}
	if allowed != 100 {
		t.Errorf("after idling: %d allowed, want 100", allowed)
	}
}

func TestCeilingDefaults(t *testing.T) {
	if c := NewCeiling(0); c.PPS() != DefaultCeilingPPS {
		t.Errorf("NewCeiling(0).PPS() = %d", c.PPS())
	}
	c := NewCeiling(1) // burst floor of 1
	if !c.Allow(0) || c.Allow(1) || !c.Allow(1_000_000_000) {
		t.Error("1 pps ceiling: want allow, refuse, allow a second later")
	}
	c = NewCeiling(2_000_000_000) // faster than 1 ns per frame: interval floors at 1 ns
	if !c.Allow(5) {
		t.Error("huge ceiling refused")
	}
}

func TestCeilingConcurrent(t *testing.T) {
	c := NewCeiling(10000) // burst 1000
	var wg sync.WaitGroup
	var allowed atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				if c.Allow(42) { // all at one instant
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if allowed.Load() != 1000 || c.Suppressed() != 7000 {
		t.Errorf("8 workers at one instant: %d allowed, %d suppressed; want 1000 and 7000", allowed.Load(), c.Suppressed())
	}
}

func BenchmarkCeilingAllow(b *testing.B) {
	c := NewCeiling(DefaultCeilingPPS)
	b.ReportAllocs()
	now := int64(0)
	for b.Loop() {
		now += 100_000 // exactly the ceiling rate: every call takes a token
		c.Allow(now)
	}
}

func BenchmarkCeilingAllowParallel(b *testing.B) {
	c := NewCeiling(DefaultCeilingPPS)
	var clock atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Allow(clock.Add(100_000))
		}
	})
}

func TestCeilingClockJumpsBack(t *testing.T) {
	c := NewCeiling(100) // burst 10
	now := int64(1_700_000_000_000_000_000)
	for c.Allow(now) {
	}
	// A small skew between workers' clocks is still limited...
	if c.Allow(now - 50_000_000) {
		t.Error("allowed a frame from a worker 50 ms behind with the bucket empty")
	}
	// ...but a clock stepped back an hour does not stall injection for an hour.
	if !c.Allow(now - 3600e9) {
		t.Error("refused after the clock stepped back an hour")
	}
}

// TestCeilingRoom checks Room and Wait against what Allow then does.
func TestCeilingRoom(t *testing.T) {
	c := NewCeiling(1000) // 1 ms per frame, burst 100
	now := int64(1_700_000_000_000_000_000)
	if c.Burst() != 100 || c.Room(now) != 100 || c.Wait(now, 100) != 0 {
		t.Fatalf("full bucket: burst %d, room %d, wait %v", c.Burst(), c.Room(now), c.Wait(now, 100))
	}
	for range 70 {
		c.Allow(now)
	}
	if got := c.Room(now); got != 30 {
		t.Fatalf("after 70 frames: room %d, want 30", got)
	}
	if got := c.Wait(now, 50); got != 20*time.Millisecond {
		t.Errorf("wait for 50: %v, want 20ms", got)
	}
	if got := c.Wait(now, 500); got != 70*time.Millisecond {
		t.Errorf("wait for more than a burst: %v, want 70ms (a full bucket)", got)
	}
	// Room says exactly how many Allow lets through, at any time.
	for _, at := range []int64{now, now + 5_500_000, now + 40_000_000} {
		room, allowed := c.Room(at), 0
		for c.Allow(at) {
			allowed++
		}
		if allowed != room {
			t.Errorf("at +%v: room %d, Allow let %d through", time.Duration(at-now), room, allowed)
		}
		w := c.Wait(at, 1)
		if c.Room(at) != 0 || w <= 0 || w > time.Millisecond || c.Room(at+int64(w)-1) != 0 || c.Room(at+int64(w)) != 1 {
			t.Errorf("at +%v, emptied: room %d, wait %v", time.Duration(at-now), c.Room(at), w)
		}
	}
	// After the clock jumps back, Allow starts afresh, and Room says so.
	back := now - 10_000_000_000
	if c.Room(back) != 100 || !c.Allow(back) {
		t.Errorf("after a backwards jump: room %d", c.Room(back))
	}
	if c := NewCeiling(1); c.Burst() != 1 || c.Room(0) != 1 || !c.Allow(0) || c.Room(1) != 0 || c.Wait(1, 4) != time.Second-1 {
		t.Errorf("1 pps: burst %d, wait %v", c.Burst(), c.Wait(1, 4))
	}
}
