package sensor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"canopy/capture"
	"canopy/flow"
	"canopy/inject"
	"canopy/rules"
)

// Rules is what the engine needs from the rule store: the compiled set to
// match against, the changes feed (to kill a newly banned address's live
// sessions at once), the rule behind a block, and a listing for the
// snapshot.
type Rules interface {
	Set() *rules.Set
	Subscribe() (<-chan rules.Change, func())
	List(f rules.Filter) ([]rules.Entry, int)
	Get(id uint64) (rules.Entry, bool)
	Stats() rules.Stats
}

// Injection says how resets leave the sensor.
type Injection struct {
	// Sender transmits frames. Nil means nothing can be sent: the sensor
	// then runs in observe mode only and refuses to switch to enforce.
	Sender inject.Sender
	// Iface names the inject port, for status.
	Iface string
	// SrcMAC is the inject port's own address (ignored when Reflect).
	SrcMAC [6]byte
	// NextHop gives the destination MAC of every injected frame (ignored
	// when Reflect).
	NextHop interface{ MAC() [6]byte }
	// Reflect injects back on the capture port: each frame carries the MACs
	// of the host it impersonates, as observed.
	Reflect bool
	// Ceiling caps injected frames per second across all workers (nil:
	// inject.DefaultCeilingPPS).
	Ceiling *inject.Ceiling
	// Unreach is the ICMP code sent for blocked UDP.
	Unreach inject.UnreachCode
}

// Config configures an Engine. The zero value of every field but Injection
// has a working default.
type Config struct {
	Mode             Mode          // initial mode (default enforce; observe when Injection.Sender is nil)
	Flow             flow.Config   // flow settings; MaxFlows (default 1M) is for the whole sensor, divided among workers
	MaxResetsPerFlow int           // per-flow reset budget (default 32)
	MinResetInterval time.Duration // per flow, between two rounds of resets (default 0: answer every packet)
	ConfirmAfter     time.Duration // silence after the last reset that confirms a kill (default 500 ms)
	FailAfter        time.Duration // payload this long after the first reset, budget spent, is a failed kill (default 250 ms)
	WorkerNice       int           // nice value of the capture worker threads (0: unchanged; canopy's config defaults to -10)
	WorkerRTPriority int           // SCHED_FIFO priority of the capture worker threads, 1..99 (0: none; WorkerNice applies)
	PrefaultFlows    bool          // make the flow tables resident before capture starts (see flow.Table.Prefault)
	Injection        Injection
	Version          string
	Source           string   // "live" or the capture file's path, for status
	Ifaces           []string // capture interfaces, for status
	TopTalkers       int      // talkers per kind in a snapshot (default 200)
	RecentBlocks     int      // blocks kept for the live feed (default 500)
	RulesInSnapshot  int      // rule entries copied into a snapshot (default 1000)
	Logger           *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Mode == "" {
		c.Mode = ModeEnforce
	}
	if c.Injection.Sender == nil {
		c.Mode = ModeObserve
	}
	if c.MaxResetsPerFlow <= 0 {
		c.MaxResetsPerFlow = 32
	}
	if c.ConfirmAfter <= 0 {
		c.ConfirmAfter = 500 * time.Millisecond
	}
	if c.FailAfter <= 0 {
		c.FailAfter = 250 * time.Millisecond
	}
	if c.Injection.Ceiling == nil {
		c.Injection.Ceiling = inject.NewCeiling(inject.DefaultCeilingPPS)
	}
	if c.TopTalkers <= 0 {
		c.TopTalkers = 200
	}
	if c.RecentBlocks <= 0 {
		c.RecentBlocks = 500
	}
	if c.RulesInSnapshot <= 0 {
		c.RulesInSnapshot = 1000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Source == "" {
		c.Source = "live"
	}
}

// ErrNoInjector is returned when enforce mode is asked of a sensor that has
// no inject port.
var ErrNoInjector = errors.New("no inject port configured: canopy can only observe (set --inject-iface, or inject.interface in the config)")

// Engine is the running sensor.
type Engine struct {
	cfg     Config
	src     capture.Source
	rules   Rules
	workers []*worker
	bus     *bus
	observe atomic.Bool
	started time.Time
	running atomic.Bool
	ready   atomic.Bool
	blockID atomic.Uint64

	snap    atomic.Pointer[Snapshot]
	buckets chan bucketMsg     // workers → snapshotter: finished one-second buckets
	free    chan *flow.Bucket  // snapshotter → workers: emptied buckets
	blocks  chan Block         // workers → snapshotter: block records as they change
	kick    chan chan struct{} // ask the snapshotter for a snapshot now
}

type bucketMsg struct {
	worker int
	sec    int64
	b      *flow.Bucket
}

// New builds an engine over a capture source and a rule store. It opens
// nothing itself: the source and the sender are the caller's.
func New(cfg Config, src capture.Source, r Rules) (*Engine, error) {
	cfg.setDefaults()
	if cfg.Mode != ModeEnforce && cfg.Mode != ModeObserve {
		return nil, fmt.Errorf("sensor: mode %q: want enforce or observe", cfg.Mode)
	}
	n := src.Workers()
	if n <= 0 {
		return nil, fmt.Errorf("sensor: capture source has %d workers", n)
	}
	// Flow.MaxFlows is for the whole sensor; each worker's table gets its
	// share (a table reserves its slots up front and never grows).
	fc := cfg.Flow
	if fc.MaxFlows <= 0 {
		fc.MaxFlows = flow.DefaultMaxFlows
	}
	fc.MaxFlows = max(fc.MaxFlows/n, 1024)
	if fc.MaxFlows > flow.MaxTableFlows {
		return nil, fmt.Errorf("sensor: flow.max_flows = %d is %d per capture worker, over the %d one worker's table holds: lower max_flows or raise capture.workers",
			cfg.Flow.MaxFlows, fc.MaxFlows, flow.MaxTableFlows)
	}
	e := &Engine{
		cfg:     cfg,
		src:     src,
		rules:   r,
		bus:     newBus(),
		started: time.Now(),
		buckets: make(chan bucketMsg, 8*n),
		free:    make(chan *flow.Bucket, 8*n),
		blocks:  make(chan Block, 4096),
		kick:    make(chan chan struct{}),
	}
	e.observe.Store(cfg.Mode == ModeObserve)
	for i := 0; i < n; i++ {
		e.workers = append(e.workers, newWorker(e, i, fc))
	}
	e.publish(e.buildSnapshot(flow.Snapshot{At: time.Now()}, nil))
	return e, nil
}

// Run captures and blocks until ctx is done or the source ends (a capture
// file's last frame). It returns the first capture error.
func (e *Engine) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	e.running.Store(true)
	defer e.running.Store(false)

	changes, unsubscribe := e.rules.Subscribe()
	defer unsubscribe()
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { defer bg.Done(); e.watchRules(ctx, changes) }()
	snapDone := make(chan struct{})
	go func() { defer bg.Done(); e.snapshotter(ctx, snapDone) }()

	if e.cfg.PrefaultFlows {
		e.prefault()
	}
	errs := make(chan error, len(e.workers))
	var wg sync.WaitGroup
	for i, w := range e.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := pinWorker(e.cfg.WorkerNice, e.cfg.WorkerRTPriority); err != nil && i == 0 {
				e.cfg.Logger.Warn(err.Error())
			}
			err := e.src.Run(ctx, i, w)
			w.finish() // still this worker's goroutine: hand over the last bucket
			if err != nil {
				errs <- fmt.Errorf("capture worker %d: %w", i, err)
				cancel()
			}
		}()
	}
	e.ready.Store(true)
	wg.Wait()
	e.ready.Store(false)
	close(snapDone) // final snapshot with everything the workers handed over
	cancel()
	bg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// Workers is the number of capture workers.
func (e *Engine) Workers() int { return len(e.workers) }

// ReserveProcs gives the Go scheduler one P per capture worker beyond the
// CPUs, for a process whose main job is this engine, and returns a func
// that restores the previous setting. The workers spend their lives in
// poll(2) and must run the moment it returns; with GOMAXPROCS = CPUs a
// worker coming back can find every P held (the other workers, the
// snapshotter, the API) and wait a scheduler tick, while with a spare P it
// waits only for the OS, where its thread's priority counts. Do not call
// it where the engine shares its process with heavy work (tests that run
// the lab in-process): more Ps there mean more competition, not less.
func (e *Engine) ReserveProcs() (restore func()) {
	procs := runtime.GOMAXPROCS(0)
	if procs > runtime.NumCPU() {
		return func() {} // the operator chose; leave it
	}
	runtime.GOMAXPROCS(procs + len(e.workers))
	return func() { runtime.GOMAXPROCS(procs) }
}

// prefault makes every worker's flow table resident, the tables in
// parallel, so that the first flows do not stall their worker on page
// faults while the first banned connections race past.
func (e *Engine) prefault() {
	t0 := time.Now()
	errs := make([]error, len(e.workers))
	var wg sync.WaitGroup
	for i, w := range e.workers {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = w.table.Prefault() }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		e.cfg.Logger.Warn("could not make the flow tables resident: the first flows may stall capture for milliseconds each on page faults (needs Linux 5.14)", "err", err)
		return
	}
	e.cfg.Logger.Info("flow tables resident", "workers", len(e.workers), "took", time.Since(t0).Round(time.Millisecond))
}

// Ready reports whether capture is running.
func (e *Engine) Ready() bool { return e.ready.Load() }

// Snapshot returns the latest published snapshot. It never blocks on the
// workers; the snapshot is at most a second old.
func (e *Engine) Snapshot() Snapshot { return *e.snap.Load() }

// Refresh asks for a new snapshot now (after a ban, say) and returns it,
// or the latest one if the engine is not running.
func (e *Engine) Refresh(ctx context.Context) Snapshot {
	if e.running.Load() {
		done := make(chan struct{})
		select {
		case e.kick <- done:
			select {
			case <-done:
			case <-ctx.Done():
			}
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return e.Snapshot()
}

// Subscribe returns a feed of events (blocks, would-blocks, bans, unbans,
// expiries, mode changes). A subscriber that falls behind loses events
// rather than slowing the sensor.
func (e *Engine) Subscribe() (<-chan Event, func()) { return e.bus.subscribe(1024) }

// Mode is the current enforcement mode.
func (e *Engine) Mode() Mode {
	if e.observe.Load() {
		return ModeObserve
	}
	return ModeEnforce
}

// SetMode switches between enforce and observe for the whole sensor.
func (e *Engine) SetMode(m Mode, who string) error {
	switch m {
	case ModeObserve:
	case ModeEnforce:
		if e.cfg.Injection.Sender == nil {
			return ErrNoInjector
		}
	default:
		return fmt.Errorf("mode %q: want enforce or observe", m)
	}
	if e.Mode() == m {
		return nil
	}
	e.observe.Store(m == ModeObserve)
	e.cfg.Logger.Info("mode changed", "mode", m, "by", who)
	e.bus.publish(Event{Type: EventMode, Time: time.Now(), Mode: m})
	return nil
}

// Flows returns copies of the live flows with an endpoint inside p, at most
// max of them (0: 1000), asking every worker for its shard.
func (e *Engine) Flows(ctx context.Context, p netip.Prefix, maxFlows int) ([]flow.Info, error) {
	if !e.running.Load() {
		return nil, errors.New("the sensor is not capturing")
	}
	if maxFlows <= 0 {
		maxFlows = 1000
	}
	replies := make(chan []flow.Info, len(e.workers))
	for i := range e.workers {
		if err := e.do(ctx, i, func(w *worker) {
			var out []flow.Info
			w.table.ForEach(p, func(f *flow.Flow) bool {
				out = append(out, w.table.Info(f))
				return len(out) < maxFlows
			})
			replies <- out
		}); err != nil {
			return nil, err
		}
	}
	var all []flow.Info
	for range e.workers {
		select {
		case part := <-replies:
			all = append(all, part...)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
			return nil, errors.New("a capture worker did not answer within 2s")
		}
	}
	if len(all) > maxFlows {
		all = all[:maxFlows]
	}
	return all, nil
}

// do runs fn on worker i's goroutine, between frames.
func (e *Engine) do(ctx context.Context, i int, fn func(*worker)) error {
	select {
	case e.workers[i].ctl <- fn:
		e.src.Wake(i)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Second):
		return fmt.Errorf("capture worker %d is not taking requests", i)
	}
}

// watchRules turns store changes into events and kills the live sessions of
// newly banned addresses. The store publishes the new rule set before it
// delivers the change, so the workers already match the ban.
func (e *Engine) watchRules(ctx context.Context, changes <-chan rules.Change) {
	for {
		select {
		case <-ctx.Done():
			return
		case c, ok := <-changes:
			if !ok {
				return
			}
			ev := Event{Time: c.At, Entry: &c.Entry}
			switch c.Op {
			case rules.OpAdded, rules.OpExtended, rules.OpUpdated:
				ev.Type = EventBan
			case rules.OpRemoved:
				ev.Type = EventUnban
			case rules.OpExpired:
				ev.Type = EventExpire
			default:
				ev.Type = EventType(c.Op)
			}
			e.bus.publish(ev)
			// A new ban, or one switched from observe to block, kills the
			// address's live sessions now.
			if (c.Op == rules.OpAdded || c.Op == rules.OpUpdated) && c.Entry.Kind == rules.KindBan && c.Entry.Value.IsValid() {
				p := c.Entry.Value
				for i := range e.workers {
					if err := e.do(ctx, i, func(w *worker) { w.killPrefix(p) }); err != nil {
						e.cfg.Logger.Warn("proactive kill not delivered", "worker", i, "ban", p, "err", err)
					}
				}
			}
		}
	}
}

// publish makes s the snapshot readers see.
func (e *Engine) publish(s Snapshot) { e.snap.Store(&s) }

// Summary is the final account of a run, printed by `canopy --read FILE
// --daemon` for offline triage.
type Summary struct {
	Packets      uint64            `json:"packets"`       // every frame read, decodable or not
	Bytes        uint64            `json:"bytes"`         // bytes of those frames
	DecodeErrors map[string]uint64 `json:"decode_errors"` // frames skipped, by reason
	Flows        uint64            `json:"flows"`         // distinct TCP/UDP sessions
	Blocks       BlockStats        `json:"blocks"`
}

// Summary totals the workers' counters. Call it after Run returned for
// final figures.
func (e *Engine) Summary() Summary {
	st := e.src.Stats() // the source counts every frame it read, decodable or not
	s := Summary{Packets: st.Packets, Bytes: st.Bytes, DecodeErrors: map[string]uint64{}}
	for _, w := range e.workers {
		s.Flows += w.created.Load()
		for r := capture.Reason(1); r < capture.NumReasons; r++ {
			if n := w.decode[r].Load(); n > 0 {
				s.DecodeErrors[r.String()] += n
			}
		}
	}
	s.Blocks = e.Snapshot().Status.Blocks
	return s
}
