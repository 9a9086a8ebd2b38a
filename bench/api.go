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
	"syscall"
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
// rules.Store (persisting to a temporary state directory: journal with
// fsync, audit log), a real engine following its changes, api.Server on a
// random loopback port, and N clients POSTing /v1/bans with distinct
// addresses while another polls GET /v1/status.
func runAPI(ctx context.Context, o *options) (*Section, error) {
	dur := 5 * time.Second
	if o.quick {
		dur = 2 * time.Second
	}
	cmd := o.command("api")
	s := &Section{Name: "api", Title: "API: ban writes per second",
		Target:  "≥ 5,000 ban writes/s, p99 ≤ 10 ms, 0 errors (issue 7)",
		Columns: []string{"clients", "state", "ban writes", "writes/s", "write p50", "write p99", "write max", "status reads", "status p99", "all requests/s", "errors"},
		Key:     2}
	var firstErrs []string
	for _, c := range []struct {
		workers int
		persist bool
	}{{1, true}, {8, true}, {32, true}, {32, false}} {
		if ctx.Err() != nil {
			return s, ctx.Err()
		}
		state := "state dir (fsync)"
		if !c.persist {
			state = "memory only"
		}
		progress("api: %d clients, %s, %v…", c.workers, state, dur)
		r, err := apiLoad(ctx, c.workers, dur, c.persist)
		if err != nil {
			return s, err
		}
		q := func(l []time.Duration, f float64) string {
			if len(l) == 0 {
				return "–"
			}
			return fmtDur(l[rank(f, len(l))])
		}
		s.add(cmd, fmt.Sprint(c.workers), state, fmt.Sprint(len(r.wlat)),
			fmt.Sprintf("%.0f", float64(len(r.wlat))/r.elapsed.Seconds()), q(r.wlat, 0.5), q(r.wlat, 0.99), q(r.wlat, 1),
			fmt.Sprint(len(r.rlat)), q(r.rlat, 0.99), fmt.Sprintf("%.0f", float64(len(r.wlat)+len(r.rlat))/r.elapsed.Seconds()), fmt.Sprint(r.errors))
		if r.firstErr != "" {
			firstErrs = append(firstErrs, fmt.Sprintf("%d clients, %s: %s", c.workers, state, r.firstErr))
		}
		if r.bans != len(r.wlat) {
			firstErrs = append(firstErrs, fmt.Sprintf("%d clients, %s: %d bans in the store after %d writes", c.workers, state, r.bans, len(r.wlat)))
		}
	}
	s.note("The state directory is a fresh temporary directory under %s, on %s, where one 4 KiB append + fsync takes %s: every persisted ban waits for a journal fsync there (group commit), so its figures are the disk's as much as canopy's.", os.TempDir(), fsType(os.TempDir()), fsyncCost(os.TempDir()))
	s.note("A real rules.Store (with a state directory: journal with group-commit fsync and audit log, as the daemon runs; or none, to show what persistence costs), a real sensor.Engine subscribed to its changes (its capture source never delivers a frame, so no traffic competes; every ban still triggers its proactive-kill lookup), and api.Server on a random 127.0.0.1 port without tokens (loopback). "+
		"N goroutines each loop on POST /v1/bans with a fresh address (api.Client, keep-alive) and one more polls GET /v1/status, for %v per row. Latency is per request, measured by the client; writes/s = completed writes / elapsed.", dur)
	for _, e := range firstErrs {
		s.note("Problem: %s", e)
	}
	return s, nil
}

// loadResult is one API load run.
type loadResult struct {
	wlat, rlat []time.Duration
	errors     int64
	firstErr   string
	elapsed    time.Duration
	bans       int
}

// apiLoad runs one API load: its own store, engine and server.
func apiLoad(ctx context.Context, workers int, dur time.Duration, persist bool) (loadResult, error) {
	var res loadResult
	cfg := rules.Config{Logger: quietLog}
	if persist {
		dir, err := os.MkdirTemp("", "canopy-bench-api-")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
		cfg.StateDir = dir
	}
	store, err := rules.Open(cfg)
	if err != nil {
		return res, err
	}
	defer store.Close()
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	go store.Run(ectx)
	e, err := sensor.New(sensor.Config{Logger: quietLog}, &quietSource{wake: make(chan struct{}, 1)}, store)
	if err != nil {
		return res, err
	}
	edone := make(chan error, 1)
	go func() { edone <- e.Run(ectx) }()
	srv, err := api.NewServer(api.Config{Addr: "127.0.0.1:0", Rules: apiRules{store}, Sensor: apiSensor{e}, Version: "bench", Logger: quietLog})
	if err != nil {
		cancel()
		<-edone
		return res, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		<-edone
		return res, err
	}
	sdone := make(chan error, 1)
	go func() { sdone <- srv.ServeListener(ectx, ln) }()
	client := api.NewClient("http://"+ln.Addr().String(), "")

	var (
		next     atomic.Uint32
		errs     atomic.Int64
		mu       sync.Mutex
		wg       sync.WaitGroup
		firstErr atomic.Value
		start    = time.Now()
		stop     = start.Add(dur)
	)
	recordErr := func(err error) {
		errs.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
	}
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
			res.wlat = append(res.wlat, local...)
			mu.Unlock()
		}()
	}
	wg.Add(1)
	go func() { // one dashboard or SOAR polling status as fast as it can
		defer wg.Done()
		for time.Now().Before(stop) && ctx.Err() == nil {
			t0 := time.Now()
			_, err := client.Status(ctx)
			d := time.Since(t0)
			if err != nil {
				recordErr(err)
			}
			mu.Lock()
			res.rlat = append(res.rlat, d)
			mu.Unlock()
		}
	}()
	wg.Wait()
	res.elapsed = time.Since(start)
	res.bans = store.Len()
	res.errors = errs.Load()
	if v := firstErr.Load(); v != nil {
		res.firstErr = v.(string)
	}
	cancel()
	<-sdone
	<-edone
	slices.Sort(res.wlat)
	slices.Sort(res.rlat)
	return res, nil
}

// fsType names the filesystem holding dir, for the notes.
func fsType(dir string) string {
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) != nil {
		return "an unknown filesystem"
	}
	switch uint32(st.Type) {
	case 0xEF53:
		return "ext4"
	case 0x01021994:
		return "tmpfs (fsync is free: RAM)"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x794c7630:
		return "overlayfs"
	}
	return fmt.Sprintf("filesystem type 0x%x", uint32(st.Type))
}

// fsyncCost measures 50 appends of 4 KiB each followed by fsync in dir and
// returns "p50 X, p99 Y", for the notes.
func fsyncCost(dir string) string {
	f, err := os.CreateTemp(dir, "canopy-bench-fsync-")
	if err != nil {
		return "an unknown time"
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	var lat []time.Duration
	for range 50 {
		t0 := time.Now()
		if _, err := f.Write(buf); err != nil {
			return "an unknown time"
		}
		if err := f.Sync(); err != nil {
			return "an unknown time"
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	return fmt.Sprintf("p50 %s, p99 %s", fmtDur(lat[rank(0.5, len(lat))]), fmtDur(lat[rank(0.99, len(lat))]))
}
