package lab

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
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
// preallocated slots and queues them; a writer goroutine waits for each
// frame's due time (sleeping while far away, then spinning with Gosched
// for the last stretch, because Go timers are only millisecond-accurate
// here) and writes it. PACKET_IGNORE_OUTGOING keeps each socket from
// reading the frames the other direction writes on the same port.

const (
	delaySlotSize = 2048 // veth MTU 1500 + Ethernet + room for re-inserted VLAN tags
	vlanOff       = 4    // frames are read at this offset so a tag can be put back in front
	spinWindow    = 2 * time.Millisecond
	pollInterval  = 100 * time.Millisecond // how often a blocked reader checks for Close
)

// DelayStats are the counters of one direction of the delay line.
type DelayStats struct {
	Frames  uint64        // frames forwarded
	Drops   uint64        // frames dropped: queue full, truncated, or write failed
	MaxLate time.Duration // worst lateness: time written minus due time
	SumLate time.Duration // sum of lateness over Frames (mean = SumLate/Frames)
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
	name      string
	rfd, wfd  int
	delay     time.Duration
	slots     []delaySlot
	free      chan int32
	queue     chan int32
	frames    atomic.Uint64
	drops     atomic.Uint64
	maxLateNs atomic.Int64
	sumLateNs atomic.Int64
}

type delayLine struct {
	fds  [2]int
	dirs [2]*delayDir
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
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
	// Enough slots for the frames in flight at ~64k frames/s per direction.
	n := int(delay.Seconds() * 64000)
	n = max(1024, min(n, 32768))
	d.dirs[0] = newDelayDir("client→router", d.fds[0], d.fds[1], delay, n)
	d.dirs[1] = newDelayDir("router→client", d.fds[1], d.fds[0], delay, n)
	for _, dir := range d.dirs {
		d.wg.Add(2)
		go func() { defer d.wg.Done(); dir.read(d.stop) }()
		go func() { defer d.wg.Done(); dir.write(d.stop) }()
	}
	return d, nil
}

func newDelayDir(name string, rfd, wfd int, delay time.Duration, n int) *delayDir {
	dir := &delayDir{
		name: name, rfd: rfd, wfd: wfd, delay: delay,
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
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return -1, fmt.Errorf("AF_PACKET socket on %s (needs CAP_NET_RAW): %w", ifname, err)
	}
	opts := []struct {
		level, opt, val int
		name            string
	}{
		{unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING"},
		{unix.SOL_PACKET, unix.PACKET_AUXDATA, 1, "PACKET_AUXDATA"},
		{unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8 << 20, "SO_RCVBUFFORCE"},
		{unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8 << 20, "SO_SNDBUFFORCE"},
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.val); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("%s on %s: %w", o.name, ifname, err)
		}
	}
	tv := unix.NsecToTimeval(pollInterval.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("SO_RCVTIMEO on %s: %w", ifname, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind AF_PACKET socket to %s: %w", ifname, err)
	}
	return fd, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// read receives frames into free slots and queues them, stamped with their
// receive time, until stop is closed.
func (dir *delayDir) read(stop <-chan struct{}) {
	var scratch [delaySlotSize]byte
	oob := make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.TpacketAuxdata{}))))
	for {
		select {
		case <-stop:
			return
		default:
		}
		var idx int32 = -1
		buf := scratch[vlanOff:]
		select {
		case idx = <-dir.free:
			buf = dir.slots[idx].buf[vlanOff:]
		default: // queue full: read and drop, so the socket does not back up
		}
		n, oobn, flags, err := recvmsg(dir.rfd, buf, oob)
		if err != nil {
			if idx >= 0 {
				dir.free <- idx
			}
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.EBADF) {
				return
			}
			dir.drops.Add(1)
			continue
		}
		now := time.Now()
		if idx < 0 || flags&unix.MSG_TRUNC != 0 || n < 14 {
			if idx >= 0 {
				dir.free <- idx
			}
			dir.drops.Add(1)
			continue
		}
		s := &dir.slots[idx]
		s.at, s.off, s.n = now, vlanOff, n
		if tci, tpid, ok := auxVLAN(oob[:oobn]); ok {
			// The kernel moved the tag into metadata; put it back on the wire.
			copy(s.buf[0:12], s.buf[vlanOff:vlanOff+12])
			s.buf[12], s.buf[13] = byte(tpid>>8), byte(tpid)
			s.buf[14], s.buf[15] = byte(tci>>8), byte(tci)
			s.off, s.n = 0, n+4
		}
		dir.queue <- idx
	}
}

// write sends each queued frame at its due time, in order.
func (dir *delayDir) write(stop <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
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
			if wait > spinWindow {
				timer.Reset(wait - spinWindow)
				select {
				case <-stop:
					timer.Stop()
					return
				case <-timer.C:
				}
				continue
			}
			runtime.Gosched()
		}
		late := time.Since(due)
		_, err := unix.Write(dir.wfd, s.buf[s.off:s.off+s.n])
		dir.free <- idx
		if err != nil {
			dir.drops.Add(1)
			continue
		}
		dir.frames.Add(1)
		dir.sumLateNs.Add(int64(late))
		if int64(late) > dir.maxLateNs.Load() {
			dir.maxLateNs.Store(int64(late)) // single writer: no CAS needed
		}
	}
}

func (dir *delayDir) stats() DelayStats {
	return DelayStats{
		Frames:  dir.frames.Load(),
		Drops:   dir.drops.Load(),
		MaxLate: time.Duration(dir.maxLateNs.Load()),
		SumLate: time.Duration(dir.sumLateNs.Load()),
	}
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

// auxVLAN finds the VLAN tag in a PACKET_AUXDATA control message.
func auxVLAN(oob []byte) (tci, tpid uint16, ok bool) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if h.Len < unix.SizeofCmsghdr || int(h.Len) > len(oob) {
			return 0, 0, false
		}
		if h.Level == unix.SOL_PACKET && h.Type == unix.PACKET_AUXDATA &&
			int(h.Len) >= unix.CmsgLen(int(unsafe.Sizeof(unix.TpacketAuxdata{}))) {
			aux := (*unix.TpacketAuxdata)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
			if aux.Status&unix.TP_STATUS_VLAN_VALID == 0 {
				return 0, 0, false
			}
			tpid = unix.ETH_P_8021Q
			if aux.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 {
				tpid = aux.Vlan_tpid
			}
			return aux.Vlan_tci, tpid, true
		}
		oob = oob[unix.CmsgSpace(int(h.Len)-unix.CmsgLen(0)):]
	}
	return 0, 0, false
}

// Close stops both directions (frames still queued are dropped) and closes
// the sockets. Safe more than once.
func (d *delayLine) Close() error {
	d.once.Do(func() {
		close(d.stop)
		d.wg.Wait() // readers notice stop within pollInterval
		d.closeFDs()
	})
	return nil
}

func (d *delayLine) closeFDs() {
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
