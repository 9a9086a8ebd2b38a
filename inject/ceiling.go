package inject

import (
	"math"
	"sync/atomic"
	"time"
)

// DefaultCeilingPPS is the global injection ceiling canopy runs with: far
// above what killing even thousands of sessions a second needs (a few frames
// each), and far below what would hurt a 1 Gb/s link (10,000 60-byte frames
// a second is under 5 Mb/s).
const DefaultCeilingPPS = 10000

// Ceiling caps the packets per second injected by all workers together, so
// that no rule, bug or attack can turn the sensor into a packet cannon. It
// is a token bucket holding up to a tenth of a second's worth of frames
// (so a proactive kill of many sessions goes out at once), refilled at the
// configured rate. It is lock-free (one compare-and-swap per Allow) and
// safe for concurrent use; the zero value is not usable, call NewCeiling.
//
// It is implemented as GCRA, the "virtual scheduling" form of a token
// bucket: a single atomic theoretical arrival time tat advances by interval
// per frame allowed, and a frame is allowed while tat is at most burst
// intervals ahead of now.
type Ceiling struct {
	tat        atomic.Int64 // theoretical arrival time of the next frame, ns
	interval   int64        // ns per frame at the ceiling rate
	tolerance  int64        // how far ahead of now tat may run: (burst-1)*interval
	pps        int
	suppressed atomic.Uint64
}

// clockSlack is how far apart the clocks of different callers may be before
// Ceiling takes a difference for a backwards jump of the clock.
const clockSlack = int64(time.Second)

// NewCeiling returns a ceiling of pps frames per second; pps ≤ 0 means
// DefaultCeilingPPS. The burst is pps/10 frames (at least 1).
func NewCeiling(pps int) *Ceiling {
	if pps <= 0 {
		pps = DefaultCeilingPPS
	}
	interval := int64(1e9) / int64(pps)
	if interval < 1 {
		interval = 1
	}
	burst := int64(max(pps/10, 1))
	c := &Ceiling{interval: interval, pps: pps}
	if burst-1 > math.MaxInt64/interval {
		burst = math.MaxInt64/interval + 1
	}
	c.tolerance = (burst - 1) * interval
	c.tat.Store(math.MinInt64 / 2) // a full bucket at any clock
	return c
}

// Allow reports whether one more frame may be sent at time now (ns, any
// clock the callers share, e.g. time.Now().UnixNano() or the capture
// timestamp; callers' clocks may differ by up to a second), and takes its
// token if so. A refusal is counted in Suppressed. A clock that jumps
// backwards by more than a second resets the bucket instead of stalling
// it. It does not allocate.
func (c *Ceiling) Allow(now int64) bool {
	for {
		old := c.tat.Load()
		tat := max(old, now)
		if tat-now > c.tolerance+c.interval+clockSlack {
			// tat is further ahead than Allow ever moves it: the callers'
			// clock jumped backwards. Start afresh rather than refuse
			// everything until the clock catches up again.
			tat = now
		}
		if tat-now > c.tolerance {
			c.suppressed.Add(1)
			return false
		}
		if c.tat.CompareAndSwap(old, tat+c.interval) {
			return true
		}
	}
}

// Room is how many frames Allow would let through one after another at
// time now, taking none of them: a proactive kill asks before it starts on
// a flow, so that it waits for the bucket to refill instead of spending
// frames it would then have refused. Other callers may take some in the
// meantime; Room is a hint, Allow decides.
func (c *Ceiling) Room(now int64) int {
	ahead := max(c.tat.Load(), now) - now
	switch {
	case ahead > c.tolerance+c.interval+clockSlack:
		return c.Burst() // Allow starts afresh after a backwards jump of the clock
	case ahead > c.tolerance:
		return 0
	}
	return int((c.tolerance-ahead)/c.interval) + 1
}

// Burst is the most frames the ceiling lets through at one instant.
func (c *Ceiling) Burst() int { return int(c.tolerance/c.interval) + 1 }

// Wait is how long from now until Room reaches n (at least 1, at most
// Burst), if nobody else takes a frame meanwhile: zero if it has already.
func (c *Ceiling) Wait(now int64, n int) time.Duration {
	n = min(max(n, 1), c.Burst())
	ahead := max(c.tat.Load(), now) - now
	if ahead > c.tolerance+c.interval+clockSlack {
		return 0
	}
	return time.Duration(max(0, ahead-(c.tolerance-int64(n-1)*c.interval)))
}

// Suppressed is how many frames Allow has refused so far.
func (c *Ceiling) Suppressed() uint64 { return c.suppressed.Load() }

// PPS is the configured ceiling in frames per second.
func (c *Ceiling) PPS() int { return c.pps }
