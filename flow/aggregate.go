package flow

import (
	"cmp"
	"slices"
	"time"
)

// DefaultMaxTracked is how many keys of each kind an Aggregator tracks
// when NewAggregator is given 0.
const DefaultMaxTracked = 16384

// series is one key's last SparkLen seconds, plus running window sums so a
// snapshot costs O(keys), not O(keys × seconds).
type series struct {
	key      talkerKey
	bytes    [SparkLen]uint64 // per second, indexed by unix second mod SparkLen
	pkts     [SparkLen]uint32
	sumBytes [NumWindows]uint64 // over the seconds inside each window
	sumPkts  [NumWindows]uint64
	flows    uint32 // distinct flows in second flowsSec
	flowsSec int64
	last     int64 // latest second with traffic
}

// clear forgets everything but the key.
func (s *series) clear() { *s = series{key: s.key} }

// advance moves s from second head to head+steps (steps < SparkLen): each
// second that leaves a window leaves its sum, and each new second starts
// at zero.
func (s *series) advance(head int64, steps int64) {
	for t := head + 1; t <= head+steps; t++ {
		for w := Window(0); w < NumWindows; w++ {
			old := slot(t - int64(w.Seconds()))
			s.sumBytes[w] -= s.bytes[old]
			s.sumPkts[w] -= uint64(s.pkts[old])
		}
		n := slot(t)
		s.bytes[n], s.pkts[n] = 0, 0
	}
}

// add counts bytes and pkts in second sec, given the current head.
func (s *series) add(head, sec int64, bytes, pkts uint64) {
	i := slot(sec)
	s.bytes[i] += bytes
	s.pkts[i] += uint32(pkts)
	for w := Window(0); w < NumWindows; w++ {
		if head-sec < int64(w.Seconds()) {
			s.sumBytes[w] += bytes
			s.sumPkts[w] += pkts
		}
	}
	if sec > s.last {
		s.last = sec
	}
}

func slot(sec int64) int { return int(((sec % SparkLen) + SparkLen) % SparkLen) }

// kindTable is the Aggregator's set of tracked keys of one kind.
type kindTable struct {
	index  map[talkerKey]int32
	series []series // len = slots handed out; free ones listed in free
	free   []int32
	other  series // keys beyond the tracking limit, and buckets' own overflow
}

// Aggregator merges the workers' one-second Buckets into a 60-second
// history and builds Snapshots from it. It belongs to the snapshotter
// goroutine: not safe for concurrent use, and no worker ever waits on it.
//
// Rates: a window's rate is the sum over its last w complete seconds
// divided by w, like iftop. Until the Aggregator has seen w seconds (from
// the first bucket's second to the latest), it divides by the seconds seen
// instead, so a fresh sensor shows real rates at once rather than ramping up.
type Aggregator struct {
	maxTracked int
	kinds      [NumKinds]kindTable
	nets       netTable // BySrcNet's scratch (srcnet.go)
	total      series   // Totals: bytes/pkts
	newFlows   series   // new flows per second, in the bytes field
	started    bool
	start      int64 // first second ever added
	head       int64 // latest second added
	evicted    uint64
	late       uint64 // buckets dropped because their second was out of the history
	restarts   uint64 // history restarted after the clock went back by more than clockStep
}

// clockStep is how far behind the latest second a bucket may be before the
// Aggregator takes it as the clock having gone back rather than a late
// worker (whose bucket is dropped once outside the history).
const clockStep = 300

// NewAggregator returns an empty aggregator tracking at most maxTracked
// keys of each kind (0 or less: DefaultMaxTracked); further keys are counted
// in an "other" row until a tracked key has been silent for SparkLen seconds.
// Each tracked key keeps its 60-second history in 832 bytes, so the
// default costs at most 52 MiB (4 kinds × 16384 keys), allocated as keys
// appear, and under 2 MiB more for summing the sources by network
// (BySrcNet: about 100 bytes per network, 4 per source).
func NewAggregator(maxTracked int) *Aggregator {
	if maxTracked <= 0 {
		maxTracked = DefaultMaxTracked
	}
	a := &Aggregator{maxTracked: maxTracked}
	for k := range a.kinds {
		a.kinds[k].index = make(map[talkerKey]int32)
	}
	return a
}

// Add merges b, worker's counters for the second starting at unix second
// sec, and clears b so it can go back to the worker. Buckets may come late
// or out of order across workers: a second still in the 60-second history
// is merged where it belongs; older ones are dropped (and counted). Flows
// live on exactly one worker, so per-second distinct-flow counts simply
// add up across workers; worker is accepted for symmetry and not needed.
func (a *Aggregator) Add(worker int, b *Bucket, sec int64) {
	if b == nil {
		return
	}
	defer b.Reset()
	if !a.started || sec < a.head-clockStep {
		// First bucket, or the clock went back by more than any worker
		// could lag (an NTP step, a replayed file, or a garbage timestamp
		// that had dragged head into the future): start the history over
		// rather than drop every bucket until the clock catches up.
		if a.started {
			a.restarts++
			a.forgetAll()
		}
		a.started, a.start, a.head = true, sec, sec
	}
	if sec > a.head {
		a.advance(sec)
	}
	if a.head-sec >= SparkLen {
		a.late++
		return
	}
	if sec < a.start {
		a.start = sec
	}
	a.total.add(a.head, sec, b.bytes, b.pkts)
	a.newFlows.add(a.head, sec, b.newFlows, 0)
	a.evicted += b.evicted
	for k := range a.kinds {
		kt := &a.kinds[k]
		m := &b.maps[k]
		for i := range m.rows {
			r := &m.rows[i]
			k := m.key(i)
			s := a.track(kt, &k)
			s.add(a.head, sec, r.bytes, uint64(r.pkts))
			if sec > s.flowsSec {
				s.flows, s.flowsSec = 0, sec
			}
			if sec == s.flowsSec {
				s.flows += r.flows
			}
		}
		if m.other.pkts != 0 {
			kt.other.add(a.head, sec, m.other.bytes, uint64(m.other.pkts))
		}
	}
}

// track finds or starts the series of key k, or returns the "other" series
// when kt is full.
func (a *Aggregator) track(kt *kindTable, k *talkerKey) *series {
	if i, ok := kt.index[*k]; ok {
		return &kt.series[i]
	}
	var i int32
	switch {
	case len(kt.free) > 0:
		i = kt.free[len(kt.free)-1]
		kt.free = kt.free[:len(kt.free)-1]
	case len(kt.series) < a.maxTracked:
		kt.series = append(kt.series, series{})
		i = int32(len(kt.series) - 1)
	default:
		return &kt.other
	}
	kt.series[i] = series{key: *k, flowsSec: -1}
	kt.index[*k] = i
	return &kt.series[i]
}

// advance moves the head to sec, retiring seconds that leave each window
// and forgetting keys silent for the whole history.
func (a *Aggregator) advance(sec int64) {
	steps := sec - a.head
	all := func(f func(s *series)) {
		f(&a.total)
		f(&a.newFlows)
		for k := range a.kinds {
			kt := &a.kinds[k]
			f(&kt.other)
			for i := range kt.series {
				f(&kt.series[i]) // free slots too: harmless, and cheaper than asking the index
			}
		}
	}
	if steps >= SparkLen {
		a.clearAll()
	} else {
		head := a.head
		all(func(s *series) { s.advance(head, steps) })
	}
	a.head = sec
	for k := range a.kinds {
		kt := &a.kinds[k]
		for key, i := range kt.index {
			if sec-kt.series[i].last >= SparkLen {
				delete(kt.index, key)
				kt.free = append(kt.free, i)
			}
		}
	}
}

// clearAll zeroes every series' history; keys stay tracked until the
// silence rule forgets them.
func (a *Aggregator) clearAll() {
	a.total.clear()
	a.newFlows.clear()
	for k := range a.kinds {
		kt := &a.kinds[k]
		kt.other.clear()
		for i := range kt.series {
			kt.series[i].clear()
		}
	}
}

// forgetAll drops every tracked key and all history.
func (a *Aggregator) forgetAll() {
	a.clearAll()
	for k := range a.kinds {
		kt := &a.kinds[k]
		clear(kt.index)
		kt.series = kt.series[:0]
		kt.free = kt.free[:0]
	}
}

// Restarts is how many times a clock step back made the Aggregator start
// its history over.
func (a *Aggregator) Restarts() uint64 { return a.restarts }

// elapsed is how many seconds window w averages over now.
func (a *Aggregator) elapsed(w Window) float64 {
	n := min(int64(w.Seconds()), a.head-a.start+1)
	return float64(max(n, 1))
}

// Head is the latest second merged (unix seconds), and false before the first Add.
func (a *Aggregator) Head() (int64, bool) { return a.head, a.started }

// Late is how many buckets arrived too late for the history and were dropped.
func (a *Aggregator) Late() uint64 { return a.late }

// Snapshot builds an immutable picture from the history: per kind, the top
// n talkers by bits/s over 10 s (then 40 s, then 2 s; ties by key), with
// their 2/10/40 s rates and 60-second sparkline, and the totals.
// activeFlows is the sum of the tables' Len, which only the sensor knows.
// Its cost depends on the number of tracked keys, never on flows.
func (a *Aggregator) Snapshot(n int, activeFlows int) Snapshot {
	var snap Snapshot
	if !a.started {
		snap.Totals.ActiveFlows = activeFlows
		return snap
	}
	snap.At = time.Unix(a.head+1, 0).UTC()
	var el [NumWindows]float64
	for w := Window(0); w < NumWindows; w++ {
		el[w] = a.elapsed(w)
		snap.Totals.Bits[w] = float64(a.total.sumBytes[w]) * 8 / el[w]
		snap.Totals.Pkts[w] = float64(a.total.sumPkts[w]) / el[w]
	}
	snap.Totals.ActiveFlows = activeFlows
	snap.Totals.NewFlows = float64(a.newFlows.sumBytes[Win10s]) / el[Win10s]
	snap.Totals.Evictions = a.evicted
	if n <= 0 {
		return snap
	}
	n = min(n, a.maxTracked+1) // never more rows than keys (+ "other"), whatever the caller asks
	top := make([]*series, 0, n)
	for k := TalkerKind(0); k < NumKinds; k++ {
		kt := &a.kinds[k]
		top = top[:0]
		for _, i := range kt.index {
			if s := &kt.series[i]; s.sumPkts[Win40s] != 0 {
				top = offerTop(top, n, s)
			}
		}
		if kt.other.sumPkts[Win40s] != 0 {
			top = offerTop(top, n, &kt.other)
		}
		rows := make([]Talker, len(top))
		for j, s := range top {
			rows[j] = a.talker(k, s, s == &kt.other, &el)
		}
		snap.Talkers[k] = rows
	}
	srcOther := &a.kinds[BySrc].other
	top = append(top[:0], a.srcNets(n)...)
	if srcOther.sumPkts[Win40s] != 0 {
		top = offerTop(top, n, srcOther)
	}
	rows := make([]Talker, len(top))
	for j, s := range top {
		rows[j] = a.talker(BySrcNet, s, s == srcOther, &el)
	}
	snap.Talkers[BySrcNet] = rows
	return snap
}

// offerTop inserts s into top (sorted best first, at most n long) if it
// ranks there: a bounded insertion, O(keys × log n) comparisons for the
// usual case where few keys beat the current n-th.
func offerTop(top []*series, n int, s *series) []*series {
	if len(top) == n && rank(s, top[n-1]) >= 0 {
		return top
	}
	i, _ := slices.BinarySearchFunc(top, s, rank)
	if len(top) < n {
		top = append(top, nil)
	}
	copy(top[i+1:], top[i:len(top)-1])
	top[i] = s
	return top
}

// rank orders series best first (rankBy).
func rank(x, y *series) int { return rankBy(&x.sumBytes, &y.sumBytes, &x.key, &y.key) }

// rankBy orders talkers best first by their window sums: bits over 10 s,
// then 40 s, then 2 s, then by key so equal rates come out in a stable
// order.
func rankBy(xb, yb *[NumWindows]uint64, xk, yk *talkerKey) int {
	if c := cmp.Compare(yb[Win10s], xb[Win10s]); c != 0 {
		return c
	}
	if c := cmp.Compare(yb[Win40s], xb[Win40s]); c != 0 {
		return c
	}
	if c := cmp.Compare(yb[Win2s], xb[Win2s]); c != 0 {
		return c
	}
	return cmpKey(xk, yk)
}

func cmpKey(x, y *talkerKey) int {
	if c := cmp16(&x.a, &y.a); c != 0 {
		return c
	}
	if c := cmp16(&x.b, &y.b); c != 0 {
		return c
	}
	if c := cmp.Compare(x.port, y.port); c != 0 {
		return c
	}
	if c := cmp.Compare(x.proto, y.proto); c != 0 {
		return c
	}
	return cmp.Compare(x.v6, y.v6)
}

// talker turns a series into a snapshot row.
func (a *Aggregator) talker(k TalkerKind, s *series, other bool, el *[NumWindows]float64) Talker {
	t := Talker{Other: other}
	if !other {
		switch k {
		case BySrc:
			t.Src = s.key.a.addr(s.key.v6)
		case ByDst:
			t.Dst = s.key.a.addr(s.key.v6)
		case ByPair:
			t.Src = s.key.a.addr(s.key.v6)
			t.Dst = s.key.b.addr(s.key.v6)
		case ByPort:
			t.Port, t.Proto = s.key.port, s.key.proto
		case BySrcNet:
			t.Net = netOf(&s.key)
		}
	}
	for w := Window(0); w < NumWindows; w++ {
		t.Bits[w] = float64(s.sumBytes[w]) * 8 / el[w]
		t.Pkts[w] = float64(s.sumPkts[w]) / el[w]
	}
	if s.flowsSec >= a.head-1 {
		t.Flows = int(s.flows)
	}
	for i := range SparkLen {
		sec := a.head - SparkLen + 1 + int64(i)
		if sec >= a.start {
			t.Spark[i] = float32(s.bytes[slot(sec)] * 8)
		}
	}
	return t
}
