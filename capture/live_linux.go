package capture

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Live is a Source reading AF_PACKET rings: per worker one TPACKET_V3 socket
// on each interface, all of an interface's sockets joined in one
// PACKET_FANOUT hash group (symmetric, so both directions of a flow reach
// the same worker; defragmenting, so fragments follow their flow), plus an
// optional low-latency lane (see LiveConfig.Lane).
//
// Each interface has its own group (the kernel only groups sockets bound to
// the same device), every group has the same member count and is joined in
// worker order, and the symmetric hash uses one per-boot seed. So a flow
// maps to the same worker index in every group: on both TAP legs, and in the
// lane as in the bulk ring.
//
// Why the lane, measured (TestLiveLaneLatency: one SYN every 2 ms on a veth,
// 300 SYNs per run, five runs, Linux 6.18, 2 vCPUs shared with a load
// average of 7–10, so p99s are scheduler noise and swing between runs):
//
//	path                      send→handler p50   p99
//	V3 bulk, 1 ms timeout     545–618 µs         1.1–16 ms
//	V2 lane ring              14–80 µs           0.1–14 ms
//	plain recvfrom + filter   13–22 µs           0.07–14 ms
//
// V3 costs half a block timeout on average at low traffic, as the retire
// timer predicts. The V2 ring and recvfrom tie within the noise at p50; the
// ring is kept because the worker multiplexes lane, bulk and wake in one
// poll and the ring drains a burst (a SYN flood) without a syscall and a
// copy per frame, where recvfrom needs both.
type Live struct {
	cfg     LiveConfig
	workers []*liveWorker
	closing atomic.Bool

	statsMu sync.Mutex // guards socket counters and closed sockets
	socks   []*sock    // every socket, in a stable order for Stats
}

// liveWorker is one worker's sockets and wake machinery. Only its Run
// goroutine touches the rings.
type liveWorker struct {
	bulk, lane []*sock
	batch      frameBatch    // a bulk block's or the lanes' frames on their way to a BatchHandler
	efd        int           // eventfd: Wake, ctx cancel and Close kick the poll
	pfds       []unix.PollFd // lanes, then bulks, then efd
	wakeReq    atomic.Bool   // Wake asked for an Idle call
	runMu      sync.Mutex    // held for the duration of Run; Close waits on it
	bytes      atomic.Uint64 // bytes handed to the handler
	laneFrames atomic.Uint64 // frames delivered from lane rings
	// Napping (see napRate): laneFrames when the worker last slept and
	// when the window that started at winStart began; whether the last
	// window's rate makes the worker nap.
	sleptAt, winBase uint64
	winStart         int64
	napping          bool
	napFor           time.Duration // LiveConfig.LaneNap; 0: never nap
	naps             atomic.Uint64 // naps taken
	// efdMu keeps Close from closing efd under a concurrent Wake: a
	// write to a closed and reused fd number would hit someone's file.
	efdMu sync.RWMutex
}

var eventOne = [8]byte{1, 0, 0, 0, 0, 0, 0, 0}

// tryFanoutIgnoreOutgoing is false only in tests that exercise the path of
// kernels without PACKET_FANOUT_FLAG_IGNORE_OUTGOING (before 6.1).
var tryFanoutIgnoreOutgoing = true

// OpenLive opens and joins every socket, for every worker and interface,
// before returning, so the fanout groups are complete before anyone reads
// (the flow→worker mapping changes whenever membership changes). It must be
// called inside the network namespace whose interfaces it opens; the
// sockets stay in that namespace afterwards. Needs root or CAP_NET_RAW.
func OpenLive(cfg LiveConfig) (*Live, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.BlockSize%osPageSize != 0 {
		return nil, fmt.Errorf("live capture: block size %d is not a multiple of the page size %d", cfg.BlockSize, osPageSize)
	}
	l := &Live{cfg: cfg, workers: make([]*liveWorker, cfg.Workers)}
	ok := false
	defer func() {
		if !ok {
			l.closeAll()
		}
	}()
	for i := range l.workers {
		efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			return nil, fmt.Errorf("live capture: eventfd: %w", err)
		}
		l.workers[i] = &liveWorker{efd: efd, napFor: max(0, cfg.LaneNap)}
	}
	laneProg, err := laneFilter()
	if err != nil {
		return nil, err
	}
	ignoreOut := tryFanoutIgnoreOutgoing // cleared by the first join if the kernel lacks the flag
	for port, name := range cfg.Ifaces {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("live capture: interface %s: %w (is canopy running in the right network namespace?)", name, err)
		}
		if ifi.Flags&net.FlagUp == 0 {
			return nil, fmt.Errorf("live capture: interface %s is down: bring it up (ip link set %s up) or nothing will be captured", name, name)
		}
		// Bulk sockets first, joined in worker order; then the lane,
		// in the same order, so worker i is member i of both groups.
		var bulkID, laneID uint16
		if cfg.FanoutID != 0 {
			bulkID, laneID = cfg.FanoutID+uint16(2*port), cfg.FanoutID+uint16(2*port+1)
		}
		for i, w := range l.workers {
			s, err := openSock(ifi, uint8(port), &cfg, false)
			if err != nil {
				return nil, fmt.Errorf("live capture, worker %d: %w", i, err)
			}
			l.socks = append(l.socks, s)
			w.bulk = append(w.bulk, s)
			if bulkID, err = s.joinFanout(bulkID, unix.PACKET_FANOUT_FLAG_DEFRAG, &ignoreOut); err != nil {
				return nil, fmt.Errorf("live capture, worker %d: %w", i, err)
			}
		}
		if !cfg.Lane {
			continue
		}
		for i, w := range l.workers {
			s, err := openSock(ifi, uint8(port), &cfg, true)
			if err != nil {
				return nil, fmt.Errorf("live capture, worker %d: %w", i, err)
			}
			l.socks = append(l.socks, s)
			w.lane = append(w.lane, s)
			// No DEFRAG here: two defragmenting groups would feed the same
			// reassembly queue and steal each other's fragments. The lane
			// filter rejects IPv4 fragments instead (see laneFilter).
			if laneID, err = s.joinFanout(laneID, 0, &ignoreOut); err != nil {
				return nil, fmt.Errorf("live capture, worker %d: %w", i, err)
			}
		}
	}
	// Counters start when frames are let in, not at socket creation
	// (the start-up filter dropped everything, so nothing is lost here).
	for _, s := range l.socks {
		s.readStats()
		s.packets, s.drops, s.freezes = 0, 0, 0
	}
	// Every group is complete: let frames in.
	for _, s := range l.socks {
		if s.lane {
			err = attachFilter(s.fd, laneProg)
		} else {
			err = unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
		}
		if err != nil {
			return nil, fmt.Errorf("live capture on %s: install filter: %w", s.iface, err)
		}
	}
	for _, w := range l.workers {
		for _, s := range w.lane {
			w.pfds = append(w.pfds, unix.PollFd{Fd: int32(s.fd), Events: unix.POLLIN})
		}
		for _, s := range w.bulk {
			w.pfds = append(w.pfds, unix.PollFd{Fd: int32(s.fd), Events: unix.POLLIN})
		}
		w.pfds = append(w.pfds, unix.PollFd{Fd: int32(w.efd), Events: unix.POLLIN})
	}
	ok = true
	return l, nil
}

// Workers is the number of workers (fanout members per interface).
func (l *Live) Workers() int { return len(l.workers) }

// errClosed is returned by Run on a closed Live.
var errClosed = errors.New("live capture is closed")

// Run delivers worker i's frames to h until ctx is done (nil) or l is
// closed (nil). Lane frames are drained before every bulk block; Idle is
// called when the rings are empty and 100 ms have passed since the last
// Idle, and promptly after Wake (the wake flag is checked between blocks,
// so a busy worker still serves it). Between frames it waits in poll, or
// naps while lane frames come fast (see napRate).
func (l *Live) Run(ctx context.Context, worker int, h Handler) error {
	if worker < 0 || worker >= len(l.workers) {
		return fmt.Errorf("live capture: worker %d does not exist (have %d)", worker, len(l.workers))
	}
	w := l.workers[worker]
	if !w.runMu.TryLock() {
		return fmt.Errorf("live capture: worker %d is already running", worker)
	}
	defer w.runMu.Unlock()
	if l.closing.Load() {
		return errClosed
	}
	// A flag per Run: an AfterFunc of an earlier Run that fires late must
	// not stop this one.
	stopped := new(atomic.Bool)
	stop := context.AfterFunc(ctx, func() {
		stopped.Store(true)
		w.kick()
	})
	defer stop()

	var (
		m        Meta
		lastIdle = time.Now().UnixNano()
		drain    [8]byte
	)
	for {
		if stopped.Load() || l.closing.Load() {
			return nil
		}
		got := w.drainLanes(h, &m)
		// One block per interface per pass, so a busy leg cannot starve
		// the other; the lane, a Wake or a stop never wait for more than
		// one block.
		for _, s := range w.bulk {
			if !s.v3Ready() {
				continue
			}
			// Drain the lane again after seeing the block ready: the
			// kernel serves the lane group first (it was registered
			// last, and dev_add_pack inserts at the head), so the lane
			// copy of every frame in this block is already visible and
			// the handler always gets the lane copy first.
			got += w.drainLanes(h, &m)
			n, b := s.v3Block(h, &m, &w.batch)
			got += n + 1 // +1: an empty block (all frames skipped) is progress too
			w.bytes.Add(uint64(b))
			got += w.drainLanes(h, &m)
			if w.wakeReq.Load() {
				lastIdle = w.serveWake(h, &drain)
			}
			if stopped.Load() || l.closing.Load() {
				return nil
			}
		}
		if w.wakeReq.Load() {
			lastIdle = w.serveWake(h, &drain)
		}
		if got > 0 {
			continue
		}
		now := time.Now().UnixNano()
		if now-lastIdle >= int64(idleEvery) {
			if err := w.checkRemoved(); err != nil {
				return err
			}
			h.Idle(now)
			lastIdle = now
			continue
		}
		if w.napFor > 0 && w.napNext(now) {
			w.nap()
			continue
		}
		wait := (int64(idleEvery) - (now - lastIdle) + int64(time.Millisecond) - 1) / int64(time.Millisecond)
		if _, err := unix.Poll(w.pfds, int(wait)); err != nil && err != unix.EINTR {
			return fmt.Errorf("live capture, worker %d: poll: %w", worker, err)
		}
		for i := range w.pfds[:len(w.pfds)-1] {
			if w.pfds[i].Revents&(unix.POLLERR|unix.POLLNVAL) != 0 {
				if err := w.pollError(i); err != nil {
					return err
				}
			}
		}
	}
}

// checkRemoved reports an error if an interface that went down was deleted:
// the kernel then unbinds the socket for good (its ifindex becomes -1)
// without raising another error, so the worker has to look.
func (w *liveWorker) checkRemoved() error {
	for _, group := range [2][]*sock{w.lane, w.bulk} {
		for _, s := range group {
			if s.linkDowns.Load() == 0 {
				continue
			}
			sa, err := unix.Getsockname(s.fd)
			if ll, ok := sa.(*unix.SockaddrLinklayer); err == nil && ok && ll.Ifindex > 0 {
				continue
			}
			return fmt.Errorf("live capture on %s: the interface was removed: recreate it and restart capture", s.iface)
		}
	}
	return nil
}

// pollError reads (and so clears) a socket error. A link going down
// (ENETDOWN) is survivable: the kernel takes the socket out of its fanout
// group and puts it back when the link comes up, so the worker carries on
// (flows may move between workers after the flap, because the group is
// rebuilt in a different order). Deletion also starts with ENETDOWN and is
// caught by checkRemoved; any other error ends Run.
func (w *liveWorker) pollError(i int) error {
	var s *sock
	if i < len(w.lane) {
		s = w.lane[i]
	} else {
		s = w.bulk[i-len(w.lane)]
	}
	if w.pfds[i].Revents&unix.POLLNVAL != 0 {
		return fmt.Errorf("live capture on %s: socket closed under a running worker", s.iface)
	}
	code, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return fmt.Errorf("live capture on %s: socket error, and reading it failed: %w", s.iface, err)
	}
	switch unix.Errno(code) {
	case 0, unix.ENETDOWN:
		s.linkDowns.Add(1)
		return nil
	}
	return fmt.Errorf("live capture on %s: socket error: %w", s.iface, unix.Errno(code))
}

func (w *liveWorker) drainLanes(h Handler, m *Meta) int {
	n := 0
	for _, s := range w.lane {
		n += s.v2Drain(h, m, &w.batch)
	}
	if n > 0 {
		w.laneFrames.Add(uint64(n))
	}
	return n
}

// While its lane rings bring napRate frames a second or more (measured
// over windows of napWindow or longer), a worker that has run out of
// frames naps for LiveConfig.LaneNap (waking early for a Wake or stop)
// rather than wait in poll for the next frame; it polls again after a nap that
// brought no lane frame, and once the rate falls. The kernel wakes a lane
// ring's poller for every frame (a TPACKET_V2 ring has no blocks to
// retire), and a wake-up costs far more than handling the frame: with
// every frame taking the lane (a SYN flood), wake-ups were most of the
// capture's CPU, about 2 µs a frame against 0.1 µs without the lane.
// Napping makes it one wake-up per nap, and delays a lane frame by at
// most a nap, at rates where frames come one per nap or faster
// anyway. Below that rate every frame is handled the moment it arrives.
// Napping at any rate, after any wake-up that brought two lane frames or
// more, lost resets their race on a LAN (`go run ./bench -only block`,
// one run each, one after the other: LAN block rate 96.34 % without
// naps, 94.11 % with them at any rate, 95.98 % with napRate; with
// worker_rt_priority 98.06, 97.95 and 98.26 %).
//
// A nap lasts LaneNap plus the thread's timer slack: up to 50 µs more for
// an ordinary thread (the kernel's default), none for a real-time one
// (capture.worker_rt_priority), which trades CPU for latency. Measured
// with BenchmarkLiveVsNetsniff (64-byte frames, every one through the
// lane; 4 runs each, alternating): trafgen on 1 CPU, capture CPU
// 2016-2201 → 441-509 ns a frame, and the generator, which shares the 2
// CPUs, 383-422 → 616-664 kpps; on 2 CPUs 1111-1162 → 781-864 ns. With
// the slack set to 1 µs (a 20 µs nap) it was 788-1165 ns on 1 CPU, and
// a 50 µs nap came near the default slack's figures.
const (
	napRate   = 50_000
	napWindow = time.Millisecond
)

// napNext reports whether the worker, out of frames at time now, should
// nap rather than poll, and starts counting afresh for the next sleep.
func (w *liveWorker) napNext(now int64) bool {
	lane := w.laneFrames.Load() // only this worker's Run adds to it
	if el := now - w.winStart; el >= int64(napWindow) {
		w.napping = int64(lane-w.winBase)*int64(time.Second)/el >= napRate
		w.winStart, w.winBase = now, lane
	}
	nap := w.napping && lane != w.sleptAt
	w.sleptAt = lane
	return nap
}

// nap sleeps for napFor or until the worker is kicked (Wake, stop,
// Close).
func (w *liveWorker) nap() {
	w.naps.Add(1)
	ts := unix.NsecToTimespec(int64(w.napFor))
	unix.Ppoll(w.pfds[len(w.pfds)-1:], &ts, nil)
}

// serveWake clears the wake request and calls Idle; it returns the time.
func (w *liveWorker) serveWake(h Handler, buf *[8]byte) int64 {
	w.wakeReq.Store(false)
	unix.Read(w.efd, buf[:]) // clear the eventfd; EAGAIN when already clear
	now := time.Now().UnixNano()
	h.Idle(now)
	return now
}

// kick makes the worker's poll return.
func (w *liveWorker) kick() {
	w.efdMu.RLock()
	if w.efd >= 0 {
		unix.Write(w.efd, eventOne[:])
	}
	w.efdMu.RUnlock()
}

// Wake makes worker i's Run call h.Idle promptly. It is cheap (an atomic
// flag; one eventfd write only when the flag was clear) and safe from any
// goroutine.
func (l *Live) Wake(worker int) {
	if worker < 0 || worker >= len(l.workers) {
		return
	}
	w := l.workers[worker]
	if w.wakeReq.CompareAndSwap(false, true) {
		w.kick()
	}
}

// Stats reads and accumulates every socket's kernel counters (reading
// clears them in the kernel) and returns per-socket and total counts. The
// totals cover the bulk sockets (every frame once); lane sockets report
// their own counts per socket, and LanePackets counts lane deliveries.
// Safe from any goroutine, also after Close (last values).
func (l *Live) Stats() Stats {
	l.statsMu.Lock()
	defer l.statsMu.Unlock()
	var st Stats
	for _, s := range l.socks {
		s.readStats()
	}
	for wi, w := range l.workers {
		for _, group := range [][]*sock{w.bulk, w.lane} {
			for _, s := range group {
				st.Sockets = append(st.Sockets, SocketStats{
					Iface: s.iface, Worker: wi, Lane: s.lane,
					Packets: s.packets, Drops: s.drops, QueueFreezes: s.freezes,
					LinkDowns: s.linkDowns.Load(),
				})
				if !s.lane {
					st.Packets += s.packets
					st.Drops += s.drops
					st.QueueFreezes += s.freezes
				}
			}
		}
		st.Bytes += w.bytes.Load()
		st.LanePackets += w.laneFrames.Load()
		st.LaneNaps += w.naps.Load()
	}
	return st
}

// Close stops every Run (they return nil), waits for them to return, and
// only then unmaps the rings and closes the sockets, so no reader can touch
// freed memory.
func (l *Live) Close() error {
	if l.closing.Swap(true) {
		return nil
	}
	for _, w := range l.workers {
		w.kick()
	}
	for _, w := range l.workers {
		w.runMu.Lock() // waits for a running Run; later Runs see closing
		defer w.runMu.Unlock()
	}
	l.statsMu.Lock()
	for _, s := range l.socks {
		s.readStats() // keep the final counts for Stats after Close
	}
	l.statsMu.Unlock()
	l.closeAll()
	return nil
}

func (l *Live) closeAll() {
	l.statsMu.Lock()
	defer l.statsMu.Unlock()
	for _, s := range l.socks {
		s.close()
	}
	for _, w := range l.workers {
		if w == nil {
			continue
		}
		w.efdMu.Lock()
		if w.efd >= 0 {
			unix.Close(w.efd)
			w.efd = -1
		}
		w.efdMu.Unlock()
	}
}
