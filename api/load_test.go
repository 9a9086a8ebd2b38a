package api

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"canopy/rules"
)

// loadResult is what one load run measured.
type loadResult struct {
	writes, reads, errors int64
	elapsed               time.Duration
	p50, p99, max         time.Duration
}

func (r loadResult) String() string {
	total := r.writes + r.reads
	return fmt.Sprintf("%d requests in %v: %.0f req/s (%.0f ban writes/s, %.0f status reads/s), p50 %v, p99 %v, max %v, errors %d",
		total, r.elapsed.Round(time.Millisecond), float64(total)/r.elapsed.Seconds(),
		float64(r.writes)/r.elapsed.Seconds(), float64(r.reads)/r.elapsed.Seconds(),
		r.p50, r.p99, r.max, r.errors)
}

// runLoad has workers goroutines, each with the real Client over loopback,
// alternate POST /v1/bans (a fresh address each time) and GET /v1/status
// until d has passed.
func runLoad(tb testing.TB, workers int, d time.Duration) loadResult {
	r, s := newFakeRules(), newFakeSensor()
	tok, _ := NewToken("load", rwSecret, false)
	srv, err := NewServer(Config{Addr: "127.0.0.1:0", Tokens: []Token{tok}, Rules: r, Sensor: s})
	if err != nil {
		tb.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	c := NewClient(ts.URL, rwSecret)

	var (
		next          atomic.Uint32
		writes, reads atomic.Int64
		errs          atomic.Int64
		mu            sync.Mutex
		lat           []time.Duration
		wg            sync.WaitGroup
	)
	ctx := context.Background()
	start := time.Now()
	stop := start.Add(d)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 1<<14)
			for i := 0; time.Now().Before(stop); i++ {
				t0 := time.Now()
				var err error
				if i%2 == 0 {
					n := next.Add(1)
					_, err = c.Ban(ctx, rules.Request{Value: fmt.Sprintf("10.%d.%d.%d", n>>16&255, n>>8&255, n&255), TTL: time.Hour, Reason: "load"})
					writes.Add(1)
				} else {
					_, err = c.Status(ctx)
					reads.Add(1)
				}
				local = append(local, time.Since(t0))
				if err != nil {
					errs.Add(1)
				}
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res := loadResult{writes: writes.Load(), reads: reads.Load(), errors: errs.Load(), elapsed: time.Since(start)}
	slices.Sort(lat)
	if len(lat) > 0 {
		res.p50, res.p99, res.max = lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	}
	return res
}

// TestLoad is the load test of issue 7, run on demand:
//
//	CANOPY_LOADTEST=1 go test -run TestLoad -v ./api/
//
// It reports figures rather than asserting on them (the machine is shared);
// it fails only on request errors.
func TestLoad(t *testing.T) {
	if os.Getenv("CANOPY_LOADTEST") != "1" {
		t.Skip("set CANOPY_LOADTEST=1 to run the API load test")
	}
	for _, workers := range []int{1, 8, 32} {
		res := runLoad(t, workers, 3*time.Second)
		t.Logf("%2d clients: %v", workers, res)
		if res.errors > 0 {
			t.Errorf("%d clients: %d errors", workers, res.errors)
		}
	}
}

// BenchmarkAPILoad reports requests/s and p99 for 16 concurrent clients.
// Target (issue 7): ≥ 5,000 ban writes/s, p99 ≤ 10 ms, 0 errors.
func BenchmarkAPILoad(b *testing.B) {
	b.ReportAllocs()
	var res loadResult
	for b.Loop() {
		res = runLoad(b, 16, 2*time.Second)
	}
	b.ReportMetric(float64(res.writes)/res.elapsed.Seconds(), "writes/s")
	b.ReportMetric(float64(res.writes+res.reads)/res.elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(res.p99.Microseconds()), "p99-µs")
	b.ReportMetric(float64(res.errors), "errors")
}

// BenchmarkHandlerPostBan is the server side of one POST /v1/bans, without
// the network: decode, authenticate, add to the (fake) store, encode.
func BenchmarkHandlerPostBan(b *testing.B) {
	tok, _ := NewToken("load", rwSecret, false)
	srv, err := NewServer(Config{Addr: "127.0.0.1:0", Tokens: []Token{tok}, Rules: newFakeRules(), Sensor: newFakeSensor()})
	if err != nil {
		b.Fatal(err)
	}
	h := srv.Handler()
	bodies := make([][]byte, 1<<16)
	for i := range bodies {
		bodies[i] = fmt.Appendf(nil, `{"value":"10.%d.%d.1","ttl":"1h","reason":"bench"}`, i>>8, i&255)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		req := httptest.NewRequest("POST", "/v1/bans", bytes.NewReader(bodies[i%len(bodies)]))
		req.Header.Set("Authorization", "Bearer "+rwSecret)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 300 {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		i++
	}
}

// BenchmarkHandlerGetStatus is the server side of one GET /v1/status.
func BenchmarkHandlerGetStatus(b *testing.B) {
	tok, _ := NewToken("load", rwSecret, false)
	srv, err := NewServer(Config{Addr: "127.0.0.1:0", Tokens: []Token{tok}, Rules: newFakeRules(), Sensor: newFakeSensor()})
	if err != nil {
		b.Fatal(err)
	}
	h := srv.Handler()
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("GET", "/v1/status", nil)
		req.Header.Set("Authorization", "Bearer "+rwSecret)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("status %d", rec.Code)
		}
	}
}
