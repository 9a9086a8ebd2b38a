package sensor

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestFineBucketsCoverEveryValue(t *testing.T) {
	prev := int64(-1)
	for i := 0; i < numFine-1; i++ {
		up := fineUpper(i)
		if up <= prev {
			t.Fatalf("bucket %d upper %d not above bucket %d upper %d", i, up, i-1, prev)
		}
		if fineIndex(up) != i || fineIndex(prev+1) != i {
			t.Fatalf("bucket %d = (%d, %d] but fineIndex(%d)=%d fineIndex(%d)=%d", i, prev, up, prev+1, fineIndex(prev+1), up, fineIndex(up))
		}
		prev = up
	}
}

func TestQuantileWithinResolution(t *testing.T) {
	var h Histogram
	r := rand.New(rand.NewPCG(1, 2))
	vals := make([]time.Duration, 10000)
	for i := range vals {
		vals[i] = time.Duration(r.ExpFloat64() * float64(200*time.Microsecond))
		h.Observe(vals[i])
	}
	slices.Sort(vals)
	var m Reaction
	m.Merge(&h)
	for _, q := range []float64{0.5, 0.9, 0.99} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := m.Quantile(q)
		if got < exact || float64(got) > float64(exact)*1.13+1 {
			t.Errorf("p%v = %v, exact %v: outside one bucket (12.5%%)", q*100, got, exact)
		}
	}
	if m.Count != 10000 {
		t.Errorf("count %d", m.Count)
	}
	if last := m.Buckets[len(m.Buckets)-1]; last > m.Count {
		t.Errorf("cumulative bucket %d above count %d", last, m.Count)
	}
	for i := 1; i < len(m.Buckets); i++ {
		if m.Buckets[i] < m.Buckets[i-1] {
			t.Errorf("buckets not cumulative at %d: %v", i, m.Buckets)
		}
	}
}

func TestQuantileEmpty(t *testing.T) {
	var m Reaction
	if m.Quantile(0.99) != 0 {
		t.Error("empty histogram must report zero")
	}
}

func BenchmarkHistogramObserve(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Observe(time.Duration(i&0xffff) * time.Microsecond)
	}
}
