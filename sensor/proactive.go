package sensor

// This file holds the proactive kill: when a ban is added, each worker
// resets the live TCP sessions of the banned prefix from its flow table's
// last known numbers, without waiting for their next packet.
//
// A wide prefix can match much of the table (a scan of 1M flows takes
// ~15 ms, and every session killed costs a few sendto calls), so a kill
// goes a step at a time, killStep at most, between blocks of frames: the
// worker keeps reading its rings and chasing the packets in flight. And
// it waits for the injection ceiling instead of spending it: a ban of
// thousands of sessions resets every one of them at the ceiling's pace,
// leaving a quarter of its burst to the resets that chase packets.

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"canopy/capture"
	"canopy/flow"
	"canopy/inject"
)

// killJob is one ban's proactive kill on one worker.
type killJob struct {
	ban     netip.Prefix
	walk    flow.Walk
	since   int64     // the worker's clock when the ban reached it
	started time.Time // wall clock, for the log
	steps   int       // stepKills calls that went on with it
	round   int       // the stepKills call that last did
	flows   int       // sessions reset (or, observing, described)
	need    int       // frames the ceiling must have room for before the walk goes on (0: not waiting)
}

const (
	// killStep is the longest a step of proactive kills holds the
	// worker's frames (worker.killStep, which tests may raise).
	killStep = 200 * time.Microsecond
	// killSlots is how many slots (or addresses) of the flow table a walk
	// looks at between two looks at the clock: ~20 µs of a scan.
	killSlots = 1024
)

// killReserve is the part of the ceiling's burst a proactive kill leaves
// for resets that chase packets: those race the hosts, a kill from the
// table does not.
func killReserve(c *inject.Ceiling) int { return c.Burst() / 4 }

// killPrefix queues the proactive kill of p's live sessions (a ban was
// just added). It runs as a control request, within an Idle call, which
// takes the first step once it has run every request waiting: a block
// file of thousands of bans queues thousands of kills, and a step each
// would hold the worker for all of them.
func (w *worker) killPrefix(p netip.Prefix) {
	w.kills = append(w.kills, killJob{ban: p, walk: w.table.NewWalk(p), since: w.now, started: time.Now()})
	w.killing.Store(int64(len(w.kills)))
}

// stepKills goes on with the kills in hand, oldest first, for up to
// killStep, but resets one session at least, however slow the machine. If
// time ran out it asks the source for another Idle at once (a busy worker
// gets it after its next block); if the ceiling has no room it sets a
// timer for when it will.
func (w *worker) stepKills() {
	deadline := time.Now().Add(w.killStep)
	w.killRound++
	acted := 0 // sessions this step reset
	for len(w.kills) > 0 {
		j := &w.kills[0]
		if j.round != w.killRound {
			j.round = w.killRound
			j.steps++
		}
		j.need = 0
		timeUp := false
		done := w.table.Step(&j.walk, killSlots, func(f *flow.Flow) bool {
			before := j.flows
			ok, late := w.killFlow(f, j, deadline, acted > 0)
			acted += j.flows - before
			timeUp = late
			return ok
		})
		if done {
			w.finishKill(j)
			*j = killJob{}
			w.kills = w.kills[1:] // a queue: append reuses or replaces the array
			continue
		}
		if j.need > 0 {
			c := w.e.cfg.Injection.Ceiling
			w.wakeIn(max(c.Wait(time.Now().UnixNano(), j.need), time.Millisecond))
			break
		}
		if timeUp || time.Now().After(deadline) {
			w.e.src.Wake(w.id)
			break
		}
	}
	w.killing.Store(int64(len(w.kills)))
}

// killFlow resets one flow of a kill's walk, as Table.Step's fn. It
// returns false to stop the walk before f: late when the step's time is
// up (and it may stop: it has reset a session already), or with j.need
// set when the ceiling lacks room for f's resets and the reserve.
func (w *worker) killFlow(f *flow.Flow, j *killJob, deadline time.Time, mayStop bool) (ok, late bool) {
	if f.Proto() != capture.ProtoTCP || f.State().Closed() {
		return true, false
	}
	if f.Enf.Resets > 0 && f.Enf.LastReset >= j.since {
		return true, false // reset since the ban: by this kill before a pause, or chasing its own packets
	}
	act := w.verdict(f)
	if act != actBlock && act != actObserve {
		return true, false
	}
	obs := w.e.observe.Load() || act == actObserve
	if obs && f.Decision.Outcome == outObserved {
		return true, false // described already
	}
	a, b := &f.Dirs[flow.AtoB], &f.Dirs[flow.BtoA]
	n := proactiveShots(
		[2]uint32{a.Ack, b.Ack}, [2]uint32{a.NextSeq, b.NextSeq},
		[2]bool{f.HasAck(flow.AtoB), f.HasAck(flow.BtoA)}, [2]bool{f.HasSeq(flow.AtoB), f.HasSeq(flow.BtoA)}, &w.shots)
	if n == 0 {
		return true, false
	}
	now := time.Now()
	if mayStop && now.After(deadline) {
		return false, true
	}
	if !obs {
		c := w.e.cfg.Injection.Ceiling
		if need := min(n+killReserve(c), c.Burst()); c.Room(now.UnixNano()) < need {
			j.need = need
			return false, false
		}
	}
	rec := w.record(f, obs)
	rec.block.Proactive = true
	var sent []string
	for i := 0; i < n; i++ {
		s := w.shots[i]
		target := 1
		if s.toSender {
			target = 0
		}
		if d := w.sendReset(f, rec, target, s, obs); d != "" {
			sent = append(sent, d)
		}
	}
	if obs && len(sent) > 0 {
		f.Decision.Outcome = outObserved
		rec.block.Outcome = OutcomeObserved
		w.observed.Add(1)
		b := rec.block
		w.e.bus.publish(Event{Type: EventWouldBlock, Time: time.Now(), Block: &b, Sent: sent})
		w.publishBlock(rec)
		j.flows++
	} else if f.Enf.Resets > 0 {
		w.publishBlock(rec)
		j.flows++
	}
	return true, false
}

// finishKill logs the end of a kill, at Info if it took long enough for
// an operator to wonder (a wide ban, or one waiting for the ceiling).
func (w *worker) finishKill(j *killJob) {
	took := time.Since(j.started)
	level := slog.LevelDebug
	if took >= killSlow {
		level = slog.LevelInfo
	}
	w.e.cfg.Logger.Log(context.Background(), level, "proactive kill done", "ban", j.ban, "worker", w.id,
		"sessions", j.flows, "steps", j.steps, "took", took.Round(time.Microsecond))
}

// killSlow is how long a kill takes before its end is logged at Info.
const killSlow = 50 * time.Millisecond

// wakeIn has the source call Idle again after d, for a kill waiting for
// the ceiling.
func (w *worker) wakeIn(d time.Duration) {
	if w.killTimer == nil {
		w.killTimer = time.AfterFunc(d, func() { w.e.src.Wake(w.id) })
		return
	}
	w.killTimer.Reset(d)
}
