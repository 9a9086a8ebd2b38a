package lab

import (
	"fmt"
	"math/bits"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The delay line is a piece of wire with a fixed latency: every frame read
// on one of its ports is written, unchanged, to the other port at its
// receive time + delay. Both directions keep their order (a FIFO with a
// constant delay is already sorted by due time, so no heap is needed).
//
// Per direction: a reader goroutine receives frames with recvmsg into
// preallocated slots and queues them; a writer goroutine sleeps until each
// frame's due time and writes it. PACKET_IGNORE_OUTGOING keeps each socket from
// reading the frames the other direction writes on the same port.

const (
	delaySlotSize = 2048                    // veth MTU 1500 + Ethernet + room for re-inserted VLAN tags
	vlanOff       = 4                       // frames are read at this offset so a tag can be put back in front
	writerNice    = -10                     // nice value of the writer threads while they run
	coarseSleep   = 1500 * time.Microsecond // below this the writer uses nanosleep, above a Go timer
)

// DelayStats are the counters of one direction of the delay line.
type DelayStats struct {
	Frames  uint64        // frames forwarded
	Drops   uint64        // frames dropped: queue full, truncated, or write failed
	MaxLate time.Duration // worst lateness: time written minus due time
	SumLate time.Duration // sum of lateness over Frames (mean = SumLate/Frames)
	// LateHist counts frames by lateness: bucket 0 is under 1 µs, bucket
	// i ≥ 1 is [2^(i-1), 2^i) µs; the last bucket holds everything later.
	LateHist [LateBuckets]uint64
}

// LateBuckets is the number of buckets in DelayStats.LateHist (the last
// one starts at 2^(LateBuckets-2) µs ≈ 0.5 s).
const LateBuckets = 21

// LateQuantile returns an upper bound of the q-quantile (0 < q ≤ 1) of the
// frames' lateness: the upper edge of the histogram bucket it falls in.
func (s DelayStats) LateQuantile(q float64) time.Duration {
	var total uint64
	for _, c := range s.LateHist {
		total += c
	}
	if total == 0 {
		return 0
	}
	want := uint64(q*float64(total) + 0.5)
	var seen uint64
	for i, c := range s.LateHist {
		seen += c
		if seen >= want && c > 0 {
			if i == LateBuckets-1 {
				return s.MaxLate // the open-ended bucket has no upper edge
			}
			return time.Duration(uint64(1)<<i) * time.Microsecond
		}
	}
	return s.MaxLate
}

func lateBucket(late time.Duration) int {
	us := late.Microseconds()
	if us <= 0 {
		return 0
	}
	return min(bits.Len64(uint64(us)), LateBuckets-1)
}

// DelayLineStats are the delay line's counters in both directions.
type DelayLineStats struct {
	ClientToRouter DelayStats
	RouterToClient DelayStats
}

type delaySlot struct {
	at  time.Time
	off int
	n   int
	buf [delaySlotSize]byte
}

type delayDir struct {
	r, w      syscall.RawConn // read from one port, write to the other
	delay     time.Duration
	slots     []delaySlot
	free      chan int32
	queue     chan int32
	frames    atomic.Uint64
	drops     atomic.Uint64
	maxLateNs atomic.Int64
	sumLateNs atomic.Int64
	lateHist  [LateBuckets]atomic.Uint64
}

type delayLine struct {
	fds   [2]int
	files [2]*os.File // own fds once started; closing them wakes the readers
	dirs  [2]*delayDir
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

// startDelayLine opens the two AF_PACKET sockets inside the lab's delay
// namespace and starts both directions.
func startDelayLine(l *Lab, delay time.Duration) (*delayLine, error) {
	d := &delayLine{fds: [2]int{-1, -1}, stop: make(chan struct{})}
	if err := l.Do(DelayLine, func() error {
		for i, name := range []string{DelayCli, DelayRtr} {
			fd, err := openWire(name)
			if err != nil {
				return err
			}
			d.fds[i] = fd
		}
		return nil
	}); err != nil {
		d.closeFDs()
		return nil, err
	}
	// Hand the sockets to the runtime's poller, so a reader waiting for a
	// frame parks its goroutine instead of holding a P in a blocking
	// recvmsg (with GOMAXPROCS=2 two blocked readers stall the process
	// until sysmon retakes the Ps: milliseconds of jitter).
	var raws [2]syscall.RawConn
	for i, fd := range d.fds {
		if err := unix.SetNonblock(fd, true); err != nil {
			d.closeFDs()
			return nil, fmt.Errorf("non-blocking delay socket: %w", err)
		}
		d.files[i] = os.NewFile(uintptr(fd), "delay-line-"+[]string{DelayCli, DelayRtr}[i])
		d.fds[i] = -1 // owned by the file now
		rc, err := d.files[i].SyscallConn()
		if err != nil {
			d.closeFDs()
			return nil, fmt.Errorf("delay socket: %w", err)
		}
		raws[i] = rc
	}
	// Enough slots for the frames in flight at ~64k frames/s per direction.
	n := int(delay.Seconds() * 64000)
	n = max(1024, min(n, 32768))
	d.dirs[0] = newDelayDir(raws[0], raws[1], delay, n) // client → router
	d.dirs[1] = newDelayDir(raws[1], raws[0], delay, n) // router → client
	for _, dir := range d.dirs {
		d.wg.Add(2)
		go func() { defer d.wg.Done(); dir.read() }()
		go func() { defer d.wg.Done(); dir.write(d.stop) }()
	}
	return d, nil
}

func newDelayDir(r, w syscall.RawConn, delay time.Duration, n int) *delayDir {
	dir := &delayDir{
		r: r, w: w, delay: delay,
		slots: make([]delaySlot, n),
		free:  make(chan int32, n),
		queue: make(chan int32, n),
	}
	for i := range n {
		dir.free <- int32(i)
	}
	return dir
}

// openWire opens a raw AF_PACKET socket bound to ifname that sees every
// frame the interface receives (but not the ones it sends), with the VLAN
// tag the kernel stripped reported in auxdata.
func openWire(ifname string) (int, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return -1, fmt.Errorf("find %s: %w", ifname, err)
	}
	proto := htons(unix.ETH_P_ALL)
	// Protocol 0 receives nothing until bind names the interface; opened
	// with ETH_P_ALL it would queue the other port's frames meanwhile and
	// the line would send them back where they came from.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("AF_PACKET socket on %s (needs CAP_NET_RAW): %w", ifname, err)
	}
	opts := []struct {
		level, opt, val int
		name            string
	}{
		{unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING"},
		{unix.SOL_PACKET, unix.PACKET_AUXDATA, 1, "PACKET_AUXDATA"},
		{unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1, "SO_TIMESTAMPNS"},
		{unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8 << 20, "SO_RCVBUFFORCE"},
		{unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8 << 20, "SO_SNDBUFFORCE"},
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.val); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("%s on %s: %w", o.name, ifname, err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind AF_PACKET socket to %s: %w", ifname, err)
	}
	return fd, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// read receives frames into free slots and queues them, stamped with their
// kernel receive time, until the socket is closed.
func (dir *delayDir) read() {
	var scratch [delaySlotSize]byte
	oob := make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.TpacketAuxdata{})))+unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))))
	var (
		buf            []byte
		n, oobn, flags int
		rerr           error
	)
	recv := func(fd uintptr) bool { // built once: no allocation per frame
		n, oobn, flags, rerr = recvmsg(int(fd), buf, oob)
		return rerr != unix.EAGAIN
	}
	for {
		var idx int32 = -1
		buf = scratch[vlanOff:]
		select {
		case idx = <-dir.free:
			buf = dir.slots[idx].buf[vlanOff:]
		default: // queue full: read and drop, so the socket does not back up
		}
		if err := dir.r.Read(recv); err != nil {
			return // closed
		}
		if rerr != nil || idx < 0 || flags&unix.MSG_TRUNC != 0 || n < 14 {
			if idx >= 0 {
				dir.free <- idx
			}
			if rerr != unix.EINTR {
				dir.drops.Add(1)
			}
			continue
		}
		m := parseCmsgs(oob[:oobn])
		// Due times count from the kernel's receive stamp, so a reader
		// that was scheduled late does not stretch the delay.
		at := m.stamp
		if !m.hasStamp {
			at = time.Now()
		}
		s := &dir.slots[idx]
		s.at, s.off, s.n = at, vlanOff, n
		if m.vlan {
			// The kernel moved the tag into metadata; put it back on the wire.
			copy(s.buf[0:12], s.buf[vlanOff:vlanOff+12])
			s.buf[12], s.buf[13] = byte(m.tpid>>8), byte(m.tpid)
			s.buf[14], s.buf[15] = byte(m.tci>>8), byte(m.tci)
			s.off, s.n = 0, n+4
		}
		dir.queue <- idx
	}
}

// write sends each queued frame at its due time, in order. Go timers are
// only millisecond-accurate (the poller sleeps in whole milliseconds), so
// it sleeps on a Go timer while the due time is far and covers the last
// stretch with nanosleep(2) on its own OS thread with a 1 µs timer slack:
// hrtimer precision without spinning.
func (dir *delayDir) write(stop <-chan struct{}) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// Timer slack is per thread; the default 50 µs would be our jitter.
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1000, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_TIMERSLACK, 0, 0, 0, 0) // back to the default
	// A wire must not stall because a busy machine runs something else:
	// raise this thread's CFS weight (nice -10, this thread only; root).
	tid := unix.Gettid()
	if unix.Setpriority(unix.PRIO_PROCESS, tid, writerNice) == nil {
		defer unix.Setpriority(unix.PRIO_PROCESS, tid, 0)
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var (
		frame []byte
		werr  error
	)
	send := func(fd uintptr) bool { // built once: no allocation per frame
		_, werr = unix.Write(int(fd), frame)
		return werr != unix.EAGAIN
	}
	for {
		var idx int32
		select {
		case <-stop:
			return
		case idx = <-dir.queue:
		}
		s := &dir.slots[idx]
		due := s.at.Add(dir.delay)
		for {
			wait := time.Until(due)
			if wait <= 0 {
				break
			}
			if wait > coarseSleep {
				timer.Reset(wait - coarseSleep)
				select {
				case <-stop:
					timer.Stop()
					return
				case <-timer.C:
				}
				continue
			}
			ts := unix.NsecToTimespec(int64(wait))
			_ = unix.Nanosleep(&ts, nil) // EINTR: the loop sleeps the rest
		}
		late := time.Since(due)
		frame = s.buf[s.off : s.off+s.n]
		err := dir.w.Write(send)
		dir.free <- idx
		if err == nil {
			err = werr
		}
		if err != nil {
			dir.drops.Add(1)
			continue
		}
		dir.frames.Add(1)
		dir.sumLateNs.Add(int64(late))
		dir.lateHist[lateBucket(late)].Add(1)
		if int64(late) > dir.maxLateNs.Load() {
			dir.maxLateNs.Store(int64(late)) // single writer: no CAS needed
		}
	}
}

func (dir *delayDir) stats() DelayStats {
	st := DelayStats{
		Frames:  dir.frames.Load(),
		Drops:   dir.drops.Load(),
		MaxLate: time.Duration(dir.maxLateNs.Load()),
		SumLate: time.Duration(dir.sumLateNs.Load()),
	}
	for i := range st.LateHist {
		st.LateHist[i] = dir.lateHist[i].Load()
	}
	return st
}

// recvmsg is recvmsg(2) without a source address, so it allocates nothing.
func recvmsg(fd int, p, oob []byte) (n, oobn, flags int, err error) {
	iov := unix.Iovec{Base: &p[0]}
	iov.SetLen(len(p))
	var msg unix.Msghdr
	msg.Iov = &iov
	msg.Iovlen = 1
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	r, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_TRUNC)
	if e != 0 {
		return 0, 0, 0, e
	}
	return int(r), int(msg.Controllen), int(msg.Flags), nil
}

// frameMeta is what the kernel says about a received frame in its control
// messages.
type frameMeta struct {
	vlan     bool
	tci      uint16
	tpid     uint16
	stamp    time.Time // kernel receive time (SO_TIMESTAMPNS); zero if absent
	hasStamp bool
}

// parseCmsgs reads PACKET_AUXDATA (the VLAN tag the kernel stripped) and
// SCM_TIMESTAMPNS (kernel receive time) from a recvmsg control buffer.
func parseCmsgs(oob []byte) (m frameMeta) {
	auxLen := unix.CmsgLen(int(unsafe.Sizeof(unix.TpacketAuxdata{})))
	tsLen := unix.CmsgLen(int(unsafe.Sizeof(unix.Timespec{})))
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		// Compare unsigned: a huge Len must not turn negative as an int.
		if h.Len < unix.SizeofCmsghdr || h.Len > uint64(len(oob)) {
			return m
		}
		data := oob[unix.CmsgLen(0):]
		switch {
		case h.Level == unix.SOL_PACKET && h.Type == unix.PACKET_AUXDATA && int(h.Len) >= auxLen:
			aux := (*unix.TpacketAuxdata)(unsafe.Pointer(&data[0]))
			if aux.Status&unix.TP_STATUS_VLAN_VALID != 0 {
				m.vlan, m.tci, m.tpid = true, aux.Vlan_tci, unix.ETH_P_8021Q
				if aux.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 {
					m.tpid = aux.Vlan_tpid
				}
			}
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && int(h.Len) >= tsLen:
			ts := (*unix.Timespec)(unsafe.Pointer(&data[0]))
			m.stamp, m.hasStamp = time.Unix(ts.Sec, ts.Nsec), true
		}
		oob = oob[min(len(oob), unix.CmsgSpace(int(h.Len)-unix.CmsgLen(0))):]
	}
	return m
}

// auxVLAN returns the VLAN tag reported in a control buffer, if any.
func auxVLAN(oob []byte) (tci, tpid uint16, ok bool) {
	m := parseCmsgs(oob)
	return m.tci, m.tpid, m.vlan
}

// Close stops both directions (frames still queued are dropped) and closes
// the sockets. Safe more than once.
func (d *delayLine) Close() error {
	d.once.Do(func() {
		close(d.stop)
		d.closeFDs() // wakes the readers
		d.wg.Wait()
	})
	return nil
}

func (d *delayLine) closeFDs() {
	for i, f := range d.files {
		if f != nil {
			f.Close()
			d.files[i] = nil
		}
	}
	for i, fd := range d.fds {
		if fd >= 0 {
			unix.Close(fd)
			d.fds[i] = -1
		}
	}
}

// DelayLineStats returns the delay line's counters (zero without a delay
// line). MaxLate and the mean lateness are the line's jitter.
func (l *Lab) DelayLineStats() DelayLineStats {
	if l.delay == nil {
		return DelayLineStats{}
	}
	return DelayLineStats{ClientToRouter: l.delay.dirs[0].stats(), RouterToClient: l.delay.dirs[1].stats()}
}
