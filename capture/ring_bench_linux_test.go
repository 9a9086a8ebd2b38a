package capture

import (
	"encoding/binary"
	"fmt"
	"testing"
	"unsafe"

	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"
)

// fakeV3Block lays out one TPACKET_V3 block in user memory exactly as the
// kernel does (block descriptor, then per frame a tpacket3_hdr, the
// sockaddr_ll and the frame at tp_mac), so the ring reader can be measured
// and checked without a kernel.
func fakeV3Block(frame []byte, n, blockSize int, vlan bool) *sock {
	mem := make([]byte, blockSize)
	ne := binary.NativeEndian
	const first = 48
	const mac = 96 // TPACKET_ALIGN(48 + 20) + 16 of headroom, as the kernel does
	step := (mac + len(frame) + 15) &^ 15
	off := first
	for i := 0; i < n; i++ {
		next := step
		if i == n-1 {
			next = 0
		}
		ne.PutUint32(mem[off:], uint32(next))          // tp_next_offset
		ne.PutUint32(mem[off+4:], 1700000000)          // tp_sec
		ne.PutUint32(mem[off+8:], uint32(i))           // tp_nsec
		ne.PutUint32(mem[off+12:], uint32(len(frame))) // tp_snaplen
		ne.PutUint32(mem[off+16:], uint32(len(frame))) // tp_len
		status := uint32(unix.TP_STATUS_USER)
		if vlan {
			status |= unix.TP_STATUS_VLAN_VALID | unix.TP_STATUS_VLAN_TPID_VALID
			ne.PutUint32(mem[off+32:], 100)    // tp_vlan_tci
			ne.PutUint16(mem[off+36:], 0x8100) // tp_vlan_tpid
		}
		ne.PutUint32(mem[off+20:], status)
		ne.PutUint16(mem[off+24:], mac) // tp_mac
		copy(mem[off+mac:], frame)
		off += step
	}
	ne.PutUint32(mem[v3BlockNumPkts:], uint32(n))
	ne.PutUint32(mem[v3BlockFirstOff:], first)
	ne.PutUint32(mem[v3BlockStatus:], unix.TP_STATUS_USER)
	return &sock{fd: -1, mem: mem, blockSize: blockSize, numBlocks: 1}
}

func TestRingV3BlockReader(t *testing.T) {
	frame := serialize(t, eth(layers.EthernetTypeIPv4), ipv4(layers.IPProtocolTCP), tcp(FlagSYN))
	s := fakeV3Block(frame, 100, 1<<16, true)
	var rec recorder
	var m Meta
	var fb frameBatch
	n, bytes := s.v3Block(&rec, &m, &fb)
	if n != 100 || bytes != 100*len(frame) || len(rec.frames) != 100 {
		t.Fatalf("v3Block delivered %d frames, %d bytes", n, bytes)
	}
	for i, mm := range rec.metas {
		if mm.Timestamp != 1700000000*1e9+int64(i) || !mm.HasVLAN || mm.VLANTCI != 100 || mm.VLANTPID != 0x8100 || mm.WireLen != uint32(len(frame)+4) {
			t.Fatalf("frame %d meta %+v", i, mm)
		}
	}
	if s.status(v3BlockStatus) != unix.TP_STATUS_KERNEL {
		t.Fatal("block not handed back to the kernel")
	}
	// A BatchHandler gets the same frames and metadata, in order, in
	// batches of at most MaxBatch, all before the block is released.
	s = fakeV3Block(frame, 100, 1<<16, true)
	brec := batchRecorder{sock: s}
	if n, _ := s.v3Block(&brec, &m, &fb); n != 100 || len(brec.frames) != 100 {
		t.Fatalf("batched: %d frames delivered, %d recorded", n, len(brec.frames))
	}
	for i := range brec.metas {
		if brec.metas[i] != rec.metas[i] || string(brec.frames[i]) != string(rec.frames[i]) {
			t.Fatalf("batched frame %d differs: %+v, one at a time %+v", i, brec.metas[i], rec.metas[i])
		}
	}
	var want []int // full batches, then the rest
	for left := 100; left > 0; left -= MaxBatch {
		want = append(want, min(left, MaxBatch))
	}
	if fmt.Sprint(brec.sizes) != fmt.Sprint(want) {
		t.Fatalf("batch sizes %v, want %v", brec.sizes, want)
	}
	if brec.released || s.status(v3BlockStatus) != unix.TP_STATUS_KERNEL {
		t.Fatal("block released under a batch, or not at all")
	}
	// A lying offset must end the block, not crash.
	s = fakeV3Block(frame, 3, 1<<16, false)
	binary.NativeEndian.PutUint32(s.mem[48:], 1<<20)
	rec = recorder{}
	if n, _ := s.v3Block(&rec, &m, &fb); n != 1 {
		t.Fatalf("corrupt next offset: %d frames delivered, want 1", n)
	}
}

// batchRecorder is a BatchHandler that keeps copies of what it was given
// and notes whether ring memory it was given was already handed back
// under a batch: the block (V3), or any of the batch's frames (V2, the
// lane).
type batchRecorder struct {
	recorder
	sock     *sock
	sizes    []int
	released bool
}

func (r *batchRecorder) Frames(frames [][]byte, ms []Meta) {
	r.sizes = append(r.sizes, len(frames))
	s := r.sock
	if !s.lane {
		r.released = r.released || s.status(v3BlockStatus) == unix.TP_STATUS_KERNEL
	}
	for i := range frames {
		if s.lane {
			off := int(uintptr(unsafe.Pointer(unsafe.SliceData(frames[i]))) - uintptr(unsafe.Pointer(unsafe.SliceData(s.mem))))
			r.released = r.released || s.status(off-off%s.frameSize)&unix.TP_STATUS_USER == 0
		}
		r.Frame(frames[i], &ms[i])
	}
}

// BenchmarkRingV3Block measures the ring reader plus Decode per frame (the
// capture path a worker runs, minus the kernel): it must not allocate.
func BenchmarkRingV3Block(b *testing.B) {
	frame := serialize(b, eth(layers.EthernetTypeIPv4), ipv4(layers.IPProtocolTCP), tcp(FlagACK), payload(6))
	const n = 500
	s := fakeV3Block(frame, n, 1<<17, true)
	var h nopHandler
	var m Meta
	b.ReportAllocs()
	for b.Loop() {
		s.mem[v3BlockStatus] = unix.TP_STATUS_USER
		s.cur = 0
		s.v3Block(&h, &m, nil)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/frame")
	if h.reasons[OK] == 0 {
		b.Fatal("nothing decoded")
	}
}

// fakeV2Ring lays out a TPACKET_V2 ring in user memory as the kernel does
// and marks the first n frames ready.
func fakeV2Ring(frame []byte, n int) *sock {
	const frames, fpb = 64, 32
	s := &sock{fd: -1, lane: true, frameSize: laneFrameSize, framesPerBlock: fpb, blockSize: fpb * laneFrameSize, numBlocks: frames / fpb, numFrames: frames}
	s.mem = make([]byte, s.blockSize*s.numBlocks)
	ne := binary.NativeEndian
	for i := 0; i < n; i++ {
		off := s.v2FrameOff(i)
		ne.PutUint32(s.mem[off+4:], uint32(len(frame))) // tp_len
		ne.PutUint32(s.mem[off+8:], uint32(len(frame))) // tp_snaplen
		ne.PutUint16(s.mem[off+12:], 66)                // tp_mac
		ne.PutUint32(s.mem[off+16:], 1700000000)        // tp_sec
		ne.PutUint32(s.mem[off+20:], uint32(i))         // tp_nsec
		s.mem[off+v2PktType] = unix.PACKET_OTHERHOST    // sll_pkttype
		copy(s.mem[off+66:], frame)
		ne.PutUint32(s.mem[off:], unix.TP_STATUS_USER) // tp_status last, as the kernel does
	}
	return s
}

func TestRingV2Drain(t *testing.T) {
	frame := serialize(t, eth(layers.EthernetTypeIPv4), ipv4(layers.IPProtocolTCP), tcp(FlagSYN))
	s := fakeV2Ring(frame, 40)
	s.mem[s.v2FrameOff(3)+v2PktType] = unix.PACKET_OUTGOING // our own frame: skipped
	var rec recorder
	var m Meta
	if n := s.v2Drain(&rec, &m, &frameBatch{}); n != 39 {
		t.Fatalf("drained %d frames, want 39 (40 minus one outgoing)", n)
	}
	for _, mm := range rec.metas {
		if !mm.Lane || mm.Timestamp < 1700000000*1e9 {
			t.Fatalf("meta %+v", mm)
		}
	}
	for i := 0; i < 40; i++ {
		if s.status(s.v2FrameOff(i)) != unix.TP_STATUS_KERNEL {
			t.Fatalf("frame %d not handed back", i)
		}
	}
	if s.cur != 40 {
		t.Fatalf("cursor %d, want 40", s.cur)
	}
}

// TestRingV2DrainBatches: a BatchHandler gets the lane's ready frames
// through Frames, at most MaxBatch a call and in ring order, with the same
// frames and metadata Frame gets, every frame still ours during its call
// and all handed back after it; frames not delivered (our own) are handed
// back too and counted in no batch; the drain wraps around the ring, and a
// ring full of frames it skips does not make it go round for ever.
func TestRingV2DrainBatches(t *testing.T) {
	frame := serialize(t, eth(layers.EthernetTypeIPv4), ipv4(layers.IPProtocolTCP), tcp(FlagSYN))
	var m Meta
	var fb frameBatch
	var rec recorder
	s := fakeV2Ring(frame, 40)
	s.mem[s.v2FrameOff(3)+v2PktType] = unix.PACKET_OUTGOING
	s.v2Drain(&rec, &m, &fb)

	s = fakeV2Ring(frame, 40)
	s.mem[s.v2FrameOff(3)+v2PktType] = unix.PACKET_OUTGOING
	brec := batchRecorder{sock: s}
	if n := s.v2Drain(&brec, &m, &fb); n != 39 || len(brec.frames) != 39 {
		t.Fatalf("batched: %d frames delivered, %d recorded, want 39", n, len(brec.frames))
	}
	for i := range brec.metas {
		if brec.metas[i] != rec.metas[i] || string(brec.frames[i]) != string(rec.frames[i]) {
			t.Fatalf("batched frame %d differs: %+v, one at a time %+v", i, brec.metas[i], rec.metas[i])
		}
	}
	if fmt.Sprint(brec.sizes) != fmt.Sprint([]int{MaxBatch, 39 - MaxBatch}) {
		t.Fatalf("batch sizes %v, want [%d %d]", brec.sizes, MaxBatch, 39-MaxBatch)
	}
	if brec.released {
		t.Fatal("a frame was handed back to the kernel while its batch was being handled")
	}
	for i := range s.numFrames {
		if s.status(s.v2FrameOff(i)) != unix.TP_STATUS_KERNEL {
			t.Fatalf("frame %d not handed back", i)
		}
	}
	if s.cur != 40 || fb.n != 0 {
		t.Fatalf("cursor %d, %d frames left in the batch; want 40, 0", s.cur, fb.n)
	}

	// Round the end of the ring: frames 60-63 and 0-5 are ready.
	s = fakeV2Ring(frame, s.numFrames)
	for i := 6; i < 60; i++ {
		s.mem[s.v2FrameOff(i)] = unix.TP_STATUS_KERNEL
	}
	s.cur = 60
	brec = batchRecorder{sock: s}
	if n := s.v2Drain(&brec, &m, &fb); n != 10 || fmt.Sprint(brec.sizes) != "[10]" || brec.released {
		t.Fatalf("wrapping: %d frames in batches %v (released early: %v), want 10 in one", n, brec.sizes, brec.released)
	}
	for i, want := range []int{60, 61, 62, 63, 0, 1, 2, 3, 4, 5} {
		if got := brec.metas[i].Timestamp - 1700000000*1e9; got != int64(want) {
			t.Fatalf("wrapping: frame %d is ring frame %d, want %d", i, got, want)
		}
	}
	if s.cur != 6 || s.status(s.v2FrameOff(63)) != unix.TP_STATUS_KERNEL || s.status(s.v2FrameOff(5)) != unix.TP_STATUS_KERNEL {
		t.Fatalf("wrapping: cursor %d, or frames not handed back", s.cur)
	}

	// Every frame ready and every one our own: nothing delivered, all
	// handed back, one lap.
	s = fakeV2Ring(frame, s.numFrames)
	for i := range s.numFrames {
		s.mem[s.v2FrameOff(i)+v2PktType] = unix.PACKET_OUTGOING
	}
	brec = batchRecorder{sock: s}
	if n := s.v2Drain(&brec, &m, &fb); n != 0 || len(brec.sizes) != 0 || s.cur != 0 {
		t.Fatalf("all outgoing: %d delivered in %v, cursor %d", n, brec.sizes, s.cur)
	}
	for i := range s.numFrames {
		if s.status(s.v2FrameOff(i)) != unix.TP_STATUS_KERNEL {
			t.Fatalf("all outgoing: frame %d not handed back", i)
		}
	}
}

// nopBatchHandler decodes each frame of a batch, as nopHandler does one.
type nopBatchHandler struct{ nopHandler }

func (h *nopBatchHandler) Frames(frames [][]byte, ms []Meta) {
	for i := range frames {
		h.Frame(frames[i], &ms[i])
	}
}

// BenchmarkRingV2Drain measures the lane reader plus Decode per frame,
// 64 frames ready at a time, handed over one at a time (frame) or in
// batches (batch, as to the sensor's worker).
func BenchmarkRingV2Drain(b *testing.B) {
	frame := serialize(b, eth(layers.EthernetTypeIPv4), ipv4(layers.IPProtocolTCP), tcp(FlagSYN))
	for _, c := range []struct {
		name string
		h    Handler
	}{{"frame", &nopHandler{}}, {"batch", &nopBatchHandler{}}} {
		b.Run(c.name, func(b *testing.B) {
			s := fakeV2Ring(frame, 64)
			var m Meta
			var fb frameBatch
			b.ReportAllocs()
			for b.Loop() {
				for i := 0; i < 64; i++ {
					s.mem[s.v2FrameOff(i)] = unix.TP_STATUS_USER
				}
				s.v2Drain(c.h, &m, &fb)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/frame")
		})
	}
}
