package sensor

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// PromBuckets are the upper bounds of the canopy_reaction_seconds histogram
// exported to Prometheus.
var PromBuckets = [...]time.Duration{
	25 * time.Microsecond, 50 * time.Microsecond, 100 * time.Microsecond,
	200 * time.Microsecond, 500 * time.Microsecond, time.Millisecond,
	2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
	50 * time.Millisecond, 100 * time.Millisecond, time.Second,
}

// subBits sets the histogram's resolution: 2^subBits buckets per power of
// two, so a quantile read from it is within 1/2^subBits (12.5%) of the truth.
const subBits = 3

// numFine covers 0 … 2^41 ns (~37 min) at that resolution.
const numFine = 40 << subBits

// Histogram records reaction latencies without locks or allocation: writers
// (the workers) add with atomics, readers (the snapshotter) load. Each worker
// owns one, so the atomics never bounce between cores.
type Histogram struct {
	fine  [numFine]atomic.Uint64
	prom  [len(PromBuckets)]atomic.Uint64
	count atomic.Uint64
	sum   atomic.Int64 // ns
}

func fineIndex(ns int64) int {
	if ns < 1<<subBits {
		if ns < 0 {
			return 0
		}
		return int(ns)
	}
	e := bits.Len64(uint64(ns)) - 1 // ns in [2^e, 2^(e+1)), e >= subBits
	sub := int(uint64(ns)>>(e-subBits)) & (1<<subBits - 1)
	i := (e-subBits+1)<<subBits | sub
	if i >= numFine {
		return numFine - 1
	}
	return i
}

// fineUpper is the largest value that falls in fine bucket i.
func fineUpper(i int) int64 {
	if i < 1<<subBits {
		return int64(i)
	}
	e, sub := i>>subBits+subBits-1, int64(i&(1<<subBits-1))
	return (1<<subBits+sub+1)<<(e-subBits) - 1
}

// Observe records one latency.
func (h *Histogram) Observe(d time.Duration) {
	ns := int64(d)
	h.fine[fineIndex(ns)].Add(1)
	for i, b := range PromBuckets {
		if d <= b {
			h.prom[i].Add(1)
			break
		}
	}
	h.count.Add(1)
	h.sum.Add(ns)
}

// Reaction is a merged, immutable copy of one or more Histograms.
type Reaction struct {
	fine    [numFine]uint64
	Buckets [len(PromBuckets)]uint64 // cumulative counts per PromBuckets bound
	Count   uint64
	Sum     time.Duration
}

// Merge adds h's counts to r.
func (r *Reaction) Merge(h *Histogram) {
	for i := range h.fine {
		r.fine[i] += h.fine[i].Load()
	}
	var cum uint64
	for i := range h.prom {
		cum += h.prom[i].Load()
		r.Buckets[i] += cum
	}
	r.Count += h.count.Load()
	r.Sum += time.Duration(h.sum.Load())
}

// Quantile returns the latency at quantile q (0..1), as the upper bound of
// the bucket it falls in; zero when nothing was recorded.
func (r *Reaction) Quantile(q float64) time.Duration {
	var total uint64
	for _, c := range r.fine {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := uint64(q*float64(total) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var cum uint64
	for i, c := range r.fine {
		cum += c
		if cum >= rank {
			return time.Duration(fineUpper(i))
		}
	}
	return time.Duration(fineUpper(numFine - 1))
}
