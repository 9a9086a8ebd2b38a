package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"canopy/api"
	"canopy/capture"
	"canopy/flow"
	"canopy/rules"
	"canopy/sensor"
)

// apiRules adapts the rule store to the API's Rules seam (as the daemon's
// backend.go does; that lives in the root package main, so it is copied).
type apiRules struct{ *rules.Store }

func (r apiRules) List(f api.RuleFilter) ([]rules.Entry, int) {
	return r.Store.List(rules.Filter{Kind: f.Kind, Origin: f.Origin, Contains: f.Contains, Offset: f.Offset, Limit: f.Limit})
}

// apiSensor adapts a running engine to the API's Sensor seam.
type apiSensor struct{ e *sensor.Engine }

func (a apiSensor) Snapshot() sensor.Snapshot { return a.e.Snapshot() }
func (a apiSensor) Flows(ctx context.Context, p netip.Prefix, max int) ([]flow.Info, error) {
	return a.e.Flows(ctx, p, max)
}
func (a apiSensor) SetMode(m sensor.Mode, who string) error  { return a.e.SetMode(m, who) }
func (a apiSensor) Subscribe() (<-chan sensor.Event, func()) { return a.e.Subscribe() }
func (a apiSensor) Ready() bool                              { return a.e.Ready() }

// quietSource is a capture source that never delivers a frame: the engine
// behind the API runs for real (snapshotter, rule-change feed, proactive
// kill lookups on every ban) without needing a network.
type quietSource struct{ wake chan struct{} }

func (q *quietSource) Workers() int { return 1 }
func (q *quietSource) Run(ctx context.Context, _ int, h capture.Handler) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-q.wake:
		}
		h.Idle(time.Now().UnixNano())
	}
}
func (q *quietSource) Wake(int) {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
func (q *quietSource) Stats() capture.Stats { return capture.Stats{} }
func (q *quietSource) Close() error         { return nil }

// runAPI measures ban writes per second through the real HTTP API: a real
// rules.Store persisting to a temporary state directory (journal with
// fsync, audit log), a real engine following its changes, api.Server on a
// random loopback port, and N clients POSTing /v1/bans with distinct
// addresses while another polls GET /v1/status.
func runAPI(ctx context.Context, o *options) (*Section, error) {
	workers, dur := 32, 5*time.Second
	if o.quick {
		dur = 2 * time.Second
	}
	cmd := o.command("api")
	s := &Section{Name: "api", Title: "API: ban writes per second",
		Target:  "≥ 5,000 ban writes/s, p99 ≤ 10 ms, 0 errors (issue 7)",
		Columns: []string{"clients", "duration", "ban writes", "writes/s", "write p50", "write p99", "write max", "status reads", "status p99", "errors", "bans in store"},
		Key:     1}
	dir, err := os.MkdirTemp("", "canopy-bench-api-")
	if err != nil {
		return s, err
	}
	defer os.RemoveAll(dir)
	store, err := rules.Open(rules.Config{StateDir: dir, Logger: quietLog})
	if err != nil {
		return s, err
	}
	defer store.Close()
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	go store.Run(ectx)
	e, err := sensor.New(sensor.Config{Logger: quietLog}, &quietSource{wake: make(chan struct{}, 1)}, store)
	if err != nil {
		return s, err
	}
	edone := make(chan error, 1)
	go func() { edone <- e.Run(ectx) }()
	srv, err := api.NewServer(api.Config{Addr: "127.0.0.1:0", Rules: apiRules{store}, Sensor: apiSensor{e}, Version: "bench", Logger: quietLog})
	if err != nil {
		return s, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return s, err
	}
	sdone := make(chan error, 1)
	go func() { sdone <- srv.ServeListener(ectx, ln) }()
	url := "http://" + ln.Addr().String()
	progress("api: %d clients POST /v1/bans for %v at %s (state in %s)…", workers, dur, url, dir)

	var (
		next       atomic.Uint32
		errs       atomic.Int64
		mu         sync.Mutex
		wlat, rlat []time.Duration
		wg         sync.WaitGroup
		firstErr   atomic.Value
		stop       = time.Now().Add(dur)
		start      = time.Now()
		client     = api.NewClient(url, "")
		recordErr  = func(err error) {
			errs.Add(1)
			firstErr.CompareAndSwap(nil, err.Error())
		}
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 1<<14)
			for time.Now().Before(stop) && ctx.Err() == nil {
				n := next.Add(1)
				ip := fmt.Sprintf("100.%d.%d.%d", 64+n>>16&63, n>>8&255, n&255) // distinct, inside 100.64.0.0/10
				t0 := time.Now()
				_, err := client.Ban(ctx, rules.Request{Value: ip, TTL: time.Hour, Reason: "bench"})
				local = append(local, time.Since(t0))
				if err != nil {
					recordErr(err)
				}
			}
			mu.Lock()
			wlat = append(wlat, local...)
			mu.Unlock()
		}()
	}
	wg.Add(1)
	go func() { // one operator dashboard / SOAR polling status as fast as it can
		defer wg.Done()
		for time.Now().Before(stop) && ctx.Err() == nil {
			t0 := time.Now()
			_, err := client.Status(ctx)
			d := time.Since(t0)
			if err != nil {
				recordErr(err)
			}
			mu.Lock()
			rlat = append(rlat, d)
			mu.Unlock()
		}
	}()
	wg.Wait()
	elapsed := time.Since(start)
	bans := store.Len()
	cancel()
	<-sdone
	<-edone
	slices.Sort(wlat)
	slices.Sort(rlat)
	q := func(l []time.Duration, f float64) string {
		if len(l) == 0 {
			return "–"
		}
		return fmtDur(l[rank(f, len(l))])
	}
	s.add(cmd, fmt.Sprint(workers), elapsed.Round(time.Millisecond).String(), fmt.Sprint(len(wlat)),
		fmt.Sprintf("%.0f", float64(len(wlat))/elapsed.Seconds()), q(wlat, 0.5), q(wlat, 0.99), q(wlat, 1),
		fmt.Sprint(len(rlat)), q(rlat, 0.99), fmt.Sprint(errs.Load()), fmt.Sprint(bans))
	s.note("A real rules.Store with a state directory (journal with fsync, audit log), a real sensor.Engine subscribed to its changes (no capture: a source that never delivers, so no traffic competes), and api.Server on a random 127.0.0.1 port without tokens (loopback). %d goroutines each loop on POST /v1/bans with a fresh address (api.Client, keep-alive connections) and one more polls GET /v1/status, for %v. Latency is per request, client side.", workers, dur)
	if v := firstErr.Load(); v != nil {
		s.note("First error: %v", v)
	}
	return s, nil
}
