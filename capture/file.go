package capture

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// idleEvery is how much source time may pass without a Handler.Idle call.
const idleEvery = 100 * time.Millisecond

// pcapngMagic is the block type of a pcapng Section Header Block; it reads
// the same in either byte order.
const pcapngMagic = 0x0a0d0d0a

// File is a Source that replays a pcap or pcapng capture file through one
// worker. It needs no privileges. It reads Ethernet and Linux cooked
// captures (SLL and SLL2, what `tcpdump -i any` writes), rewriting cooked
// headers in place so Decode sees Ethernet. In a pcapng file, frames from
// an interface of any other link type are skipped and counted (Skipped).
type File struct {
	path  string
	speed float64

	f    *os.File
	read func() ([]byte, gopacket.CaptureInfo, error)
	// link is the link type of a classic pcap file; for pcapng it comes
	// with every packet (the interfaces of one file may differ).
	link layers.LinkType
	ng   bool

	started atomic.Bool
	wakeReq atomic.Bool
	wakeCh  chan struct{}

	packets, bytes, skipped atomic.Uint64
}

// OpenFile opens a pcap or pcapng file (detected by its magic number; a
// gzip-compressed pcap also works) for replay. speed paces the replay
// against the file's timestamps: 0 reads as fast as possible, 1 in real time,
// 2 twice as fast.
func OpenFile(path string, speed float64) (*File, error) {
	if speed < 0 || math.IsNaN(speed) || math.IsInf(speed, 0) {
		return nil, fmt.Errorf("capture file %s: replay speed %v: use 0 (as fast as possible) or a positive factor (1 = real time)", path, speed)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("capture file: %w", err)
	}
	src := &File{path: path, speed: speed, f: f, wakeCh: make(chan struct{}, 1)}
	br := bufio.NewReaderSize(f, 1<<20)
	magic, err := br.Peek(4)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("capture file %s: too short to be a pcap or pcapng file: %w", path, err)
	}
	if be.Uint32(magic) == pcapngMagic {
		r, err := pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{WantMixedLinkType: true})
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("capture file %s: reading pcapng header: %w", path, err)
		}
		src.ng = true
		src.read = r.ZeroCopyReadPacketData
		for i := 0; i < r.NInterfaces(); i++ {
			ifc, _ := r.Interface(i)
			if !supportedLink(ifc.LinkType) {
				f.Close()
				return nil, fmt.Errorf("capture file %s: interface %d has link type %v; canopy reads Ethernet and Linux cooked (SLL, SLL2) captures: re-capture on an Ethernet interface", path, i, ifc.LinkType)
			}
		}
	} else {
		r, err := pcapgo.NewReader(br)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("capture file %s: not a pcap or pcapng file (magic %x): %w", path, magic, err)
		}
		if !supportedLink(r.LinkType()) {
			f.Close()
			return nil, fmt.Errorf("capture file %s: link type %v; canopy reads Ethernet and Linux cooked (SLL, SLL2) captures: re-capture on an Ethernet interface", path, r.LinkType())
		}
		src.link = r.LinkType()
		src.read = r.ZeroCopyReadPacketData
	}
	return src, nil
}

func supportedLink(t layers.LinkType) bool {
	return t == layers.LinkTypeEthernet || t == layers.LinkTypeLinuxSLL || t == layers.LinkTypeLinuxSLL2
}

// Workers is 1: a file is one ordered stream.
func (s *File) Workers() int { return 1 }

// Run replays the file to h on worker 0. It returns nil after the last
// frame (having called h.Idle once more with the last frame's time, so the
// handler can flush), nil when ctx is done, and an error if the file is
// damaged; a file cut off mid-packet returns an error wrapping
// io.ErrUnexpectedEOF after delivering every complete frame. A File can be
// run once.
//
// Idle is called every 100 ms of capture time (now = the last frame's
// time), and promptly after Wake.
func (s *File) Run(ctx context.Context, worker int, h Handler) error {
	if worker != 0 {
		return fmt.Errorf("capture file %s: worker %d does not exist: a file has one worker (0)", s.path, worker)
	}
	if !s.started.CompareAndSwap(false, true) {
		return fmt.Errorf("capture file %s: already replayed: open it again to replay it twice", s.path)
	}
	var (
		m        Meta
		lastTS   int64
		lastIdle int64
		first    = true
		wall0    time.Time
		ts0      int64
		timer    *time.Timer
		done     = ctx.Done()
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for n := 0; ; n++ {
		if n&63 == 0 {
			select {
			case <-done:
				return nil
			default:
			}
		}
		data, ci, err := s.read()
		if err != nil {
			if errors.Is(err, io.EOF) {
				if !first {
					h.Idle(lastTS)
				}
				return nil
			}
			return fmt.Errorf("capture file %s: after %d frames: %w", s.path, s.packets.Load(), err)
		}
		s.packets.Add(1)
		link := s.link
		if s.ng && len(ci.AncillaryData) > 0 {
			link, _ = ci.AncillaryData[0].(layers.LinkType)
		}
		wire := ci.Length
		switch link {
		case layers.LinkTypeEthernet:
		case layers.LinkTypeLinuxSLL:
			var ok bool
			if data, ok = sllToEthernet(data); !ok {
				// Shorter than a cooked header: hand the decoder the
				// stub so it is counted as a truncated frame.
				data = data[:0]
			}
			wire -= 2
		case layers.LinkTypeLinuxSLL2:
			var ok bool
			if data, ok = sll2ToEthernet(data); !ok {
				data = data[:0]
			}
			wire -= 6
		default:
			s.skipped.Add(1)
			continue
		}
		ts := ci.Timestamp.UnixNano()
		if s.speed > 0 {
			if first {
				wall0, ts0 = time.Now(), ts
			} else if d := time.Duration(float64(ts-ts0)/s.speed) - time.Since(wall0); d > 0 {
				if timer == nil {
					timer = time.NewTimer(d)
				} else {
					timer.Reset(d)
				}
				if !s.pace(done, timer, h, lastTS) {
					return nil
				}
			}
		}
		if first {
			lastIdle = ts
			first = false
		}
		m = Meta{Timestamp: ts, WireLen: uint32(max(wire, 0)), Port: uint8(min(ci.InterfaceIndex, math.MaxUint8))}
		s.bytes.Add(uint64(len(data)))
		h.Frame(data, &m)
		lastTS = ts
		if ts-lastIdle >= int64(idleEvery) {
			lastIdle = ts
			h.Idle(ts)
		} else if s.wakeReq.Load() {
			s.wakeReq.Store(false)
			h.Idle(ts)
		}
	}
}

// pace waits for timer while serving Wake; it returns false if ctx ended.
func (s *File) pace(done <-chan struct{}, timer *time.Timer, h Handler, now int64) bool {
	for {
		select {
		case <-done:
			return false
		case <-timer.C:
			return true
		case <-s.wakeCh:
			s.wakeReq.Store(false)
			h.Idle(now)
		}
	}
}

// sllToEthernet rewrites a Linux cooked-capture (SLL) header in place into
// an Ethernet header two bytes further on, so Decode reads one link type.
// The source MAC is the SLL address; the destination MAC is not recorded by
// SLL and is left zero.
func sllToEthernet(b []byte) ([]byte, bool) {
	const sllLen = 16
	if len(b) < sllLen {
		return b, false
	}
	// SLL: packet type(2) ARPHRD(2) addr len(2) addr(8) protocol(2).
	copy(b[8:14], b[6:12])
	clear(b[2:8])
	return b[2:], true
}

// sll2ToEthernet does the same for the 20-byte LINUX_SLL2 header that
// `tcpdump -i any` writes since libpcap 1.10: protocol(2) reserved(2)
// ifindex(4) ARPHRD(2) packet type(1) addr len(1) addr(8). The Ethernet
// header lands at offset 6, its source MAC already in place.
func sll2ToEthernet(b []byte) ([]byte, bool) {
	const sll2Len = 20
	if len(b) < sll2Len {
		return b, false
	}
	proto0, proto1 := b[0], b[1]
	clear(b[6:12])
	b[18], b[19] = proto0, proto1
	return b[6:], true
}

// Wake makes Run call h.Idle promptly; safe from any goroutine.
func (s *File) Wake(worker int) {
	if s.wakeReq.CompareAndSwap(false, true) {
		select {
		case s.wakeCh <- struct{}{}:
		default:
		}
	}
}

// Skipped is how many frames were skipped because their pcapng interface
// has a link type canopy does not decode.
func (s *File) Skipped() uint64 { return s.skipped.Load() }

// Stats returns frames and bytes read so far. A file has no kernel drops.
func (s *File) Stats() Stats {
	return Stats{Packets: s.packets.Load(), Bytes: s.bytes.Load()}
}

// Close closes the file.
func (s *File) Close() error {
	if err := s.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("capture file %s: close: %w", s.path, err)
	}
	return nil
}
