package flow

import "time"

// Defaults used for Config fields left at their zero value.
const (
	// DefaultMaxFlows is the per-table capacity when Config.MaxFlows is 0.
	// A sensor sizes each of its N tables as total/N (1<<20 / N for ~1M
	// flows in all).
	DefaultMaxFlows = 1 << 20
	// DefaultIdleEstablished is how long an established TCP flow may be idle.
	DefaultIdleEstablished = 5 * time.Minute
	// DefaultIdleHalfOpen is how long a TCP flow whose handshake (or, when
	// picked up mid-stream, whose second direction) has not been seen may be idle.
	DefaultIdleHalfOpen = 10 * time.Second
	// DefaultIdleClosed is how long a TCP flow that saw an RST or both FINs is kept.
	DefaultIdleClosed = 10 * time.Second
	// DefaultIdleUDP is how long a UDP flow may be idle.
	DefaultIdleUDP = 60 * time.Second
	// DefaultMaxTalkers is how many distinct keys of each kind one Bucket holds.
	DefaultMaxTalkers = 4096
	// DefaultExpireBatch is how many slots one Expire call examines at most.
	DefaultExpireBatch = 8192
	// DefaultSweepEvery is how often Expire aims to have examined every slot.
	DefaultSweepEvery = 5 * time.Second
	// DefaultEvictSample is how many slots are drawn when the table is
	// full and a slot must be reclaimed (see evictor).
	DefaultEvictSample = 5

	// MaxTableFlows bounds one table's capacity so a slot number fits the
	// 24 bits an index entry holds (see ibucket): 3.2 GB of flows.
	MaxTableFlows = maxSlot
	maxMaxFlows   = MaxTableFlows
	// maxMaxTalkers bounds a bucket's key tables (~15 MiB per bucket),
	// keeping row numbers below flowRow's markers.
	maxMaxTalkers = 1<<16 - 2
	// maxEvictSample bounds Config.EvictSample.
	maxEvictSample = 64
	// maxIdle bounds the idle timeouts: a flow must expire before Expire
	// clamps its last-packet tick (2^30 ms, 12.4 days; see clampLast).
	maxIdle = 12 * 24 * time.Hour
)

// Config sizes a Table and sets its idle timeouts. The zero value of every
// field means "use the default"; negative or oversized values are clamped
// (durations to at most 12 days).
type Config struct {
	// MaxFlows is the capacity of this table (one shard). Memory for all of
	// it is reserved up front (and touched only as flows arrive); when it is
	// full the table evicts rather than grows. Default DefaultMaxFlows;
	// at most 1<<24 - 1.
	MaxFlows int
	// IdleEstablished is the idle timeout of established TCP flows
	// (including those with a FIN from one side only). Default 5 min.
	IdleEstablished time.Duration
	// IdleHalfOpen is the idle timeout of TCP flows not yet established.
	// Default 10 s.
	IdleHalfOpen time.Duration
	// IdleClosed is the idle timeout of TCP flows that saw an RST or both
	// FINs. Default 10 s.
	IdleClosed time.Duration
	// IdleUDP is the idle timeout of UDP flows. Default 60 s.
	IdleUDP time.Duration
	// MaxTalkers is how many distinct keys per kind (source, destination,
	// pair, port) a one-second Bucket tracks before it counts the rest into
	// an "other" row. A bucket takes about 202 × MaxTalkers bytes for the
	// keys of all four kinds (0.8 MiB at the default 4096) plus 32 bytes
	// for each of the 4 × MaxTalkers flows whose packets it counts the
	// short way (flowRow; 0.5 MiB); at most 65534.
	MaxTalkers int
	// ExpireBatch is the most slots one Expire call examines, which bounds
	// how long it holds the worker. Default 8192 (about 0.2 ms on a full
	// 1M table).
	ExpireBatch int
	// SweepEvery is how long (in the Expire clock) a full sweep of the
	// table should take: each Expire call examines the share of slots the
	// time since the previous call is due, within ExpireBatch. Expiry is
	// therefore up to SweepEvery late (longer if calls are rarer than
	// SweepEvery × ExpireBatch / Cap). Default 5 s.
	SweepEvery time.Duration
	// EvictSample is how many slots are drawn at random to pick the victim
	// when the table is full: of them and the best candidates kept from
	// earlier draws, the one furthest past (or closest to) its idle
	// deadline wins. Default 5; at most 64.
	EvictSample int
}

// withDefaults returns c with zero fields set to their defaults and every
// field clamped to a usable range.
func (c Config) withDefaults() Config {
	if c.MaxFlows <= 0 {
		c.MaxFlows = DefaultMaxFlows
	}
	if c.MaxFlows > maxMaxFlows {
		c.MaxFlows = maxMaxFlows
	}
	dur := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
		*d = min(*d, maxIdle)
	}
	dur(&c.IdleEstablished, DefaultIdleEstablished)
	dur(&c.IdleHalfOpen, DefaultIdleHalfOpen)
	dur(&c.IdleClosed, DefaultIdleClosed)
	dur(&c.IdleUDP, DefaultIdleUDP)
	if c.MaxTalkers <= 0 {
		c.MaxTalkers = DefaultMaxTalkers
	}
	if c.MaxTalkers > maxMaxTalkers {
		c.MaxTalkers = maxMaxTalkers
	}
	if c.ExpireBatch <= 0 {
		c.ExpireBatch = DefaultExpireBatch
	}
	dur(&c.SweepEvery, DefaultSweepEvery)
	if c.EvictSample <= 0 {
		c.EvictSample = DefaultEvictSample
	}
	if c.EvictSample > maxEvictSample {
		c.EvictSample = maxEvictSample
	}
	return c
}
