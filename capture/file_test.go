package capture

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// recorder is a Handler that keeps copies of what it was given.
type recorder struct {
	frames [][]byte
	metas  []Meta
	idles  []int64
	onIdle func()
}

func (r *recorder) Frame(b []byte, m *Meta) {
	r.frames = append(r.frames, append([]byte(nil), b...))
	r.metas = append(r.metas, *m)
}

func (r *recorder) Idle(now int64) {
	r.idles = append(r.idles, now)
	if r.onIdle != nil {
		r.onIdle()
	}
}

// writeCapture writes frames with timestamps t0 + i*step as pcap (ng=false)
// or pcapng, with the given link type, and returns the path.
func writeCapture(tb testing.TB, frames [][]byte, step time.Duration, ng bool, link layers.LinkType) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "c.pcap")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	t0 := time.Unix(1700000000, 123456000)
	var write func(gopacket.CaptureInfo, []byte) error
	if ng {
		w, err := pcapgo.NewNgWriter(f, link)
		if err != nil {
			tb.Fatal(err)
		}
		defer w.Flush()
		write = w.WritePacket
	} else {
		w := pcapgo.NewWriterNanos(f)
		if err := w.WriteFileHeader(65536, link); err != nil {
			tb.Fatal(err)
		}
		write = w.WritePacket
	}
	for i, fr := range frames {
		ci := gopacket.CaptureInfo{Timestamp: t0.Add(time.Duration(i) * step), CaptureLength: len(fr), Length: len(fr)}
		if err := write(ci, fr); err != nil {
			tb.Fatal(err)
		}
	}
	return path
}

func randomFrames(tb testing.TB, n int) [][]byte {
	r := rand.New(rand.NewPCG(3, 4))
	out := make([][]byte, n)
	for i := range out {
		out[i] = randomFrame(tb, r)
	}
	return out
}

func TestFileReplaysEveryFrame(t *testing.T) {
	frames := randomFrames(t, 500)
	for _, ng := range []bool{false, true} {
		name := map[bool]string{false: "pcap", true: "pcapng"}[ng]
		t.Run(name, func(t *testing.T) {
			path := writeCapture(t, frames, 10*time.Millisecond, ng, layers.LinkTypeEthernet)
			src, err := OpenFile(path, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if src.Workers() != 1 {
				t.Fatalf("Workers = %d", src.Workers())
			}
			var rec recorder
			if err := src.Run(context.Background(), 0, &rec); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if len(rec.frames) != len(frames) {
				t.Fatalf("got %d frames, want %d", len(rec.frames), len(frames))
			}
			var bytes uint64
			t0 := time.Unix(1700000000, 123456000).UnixNano()
			for i := range frames {
				if string(rec.frames[i]) != string(frames[i]) {
					t.Fatalf("frame %d differs", i)
				}
				if want := t0 + int64(i)*int64(10*time.Millisecond); rec.metas[i].Timestamp != want {
					t.Fatalf("frame %d timestamp %d, want %d", i, rec.metas[i].Timestamp, want)
				}
				if rec.metas[i].WireLen != uint32(len(frames[i])) {
					t.Fatalf("frame %d WireLen %d", i, rec.metas[i].WireLen)
				}
				bytes += uint64(len(frames[i]))
			}
			// 500 frames 10 ms apart span 4.99 s of capture time: an Idle
			// every 100 ms of it, plus the final one at the end.
			if len(rec.idles) < 49 || len(rec.idles) > 51 {
				t.Errorf("Idle called %d times over 4.99 s of capture time, want ~50", len(rec.idles))
			}
			if last := rec.idles[len(rec.idles)-1]; last != rec.metas[len(frames)-1].Timestamp {
				t.Errorf("final Idle(%d), want the last frame's time %d", last, rec.metas[len(frames)-1].Timestamp)
			}
			st := src.Stats()
			if st.Packets != uint64(len(frames)) || st.Bytes != bytes {
				t.Errorf("Stats = %+v, want %d packets %d bytes", st, len(frames), bytes)
			}
			if err := src.Run(context.Background(), 0, &rec); err == nil {
				t.Error("second Run succeeded; a File replays once")
			}
		})
	}
}

func TestFileLinuxCookedCapture(t *testing.T) {
	eth := serialize(t, eth(layers.EthernetTypeIPv4), ipv4(layers.IPProtocolTCP), tcp(FlagSYN))
	sll := make([]byte, 16, 16+len(eth)-14)
	be.PutUint16(sll[0:], 0) // to us
	be.PutUint16(sll[2:], 1) // ARPHRD_ETHER
	be.PutUint16(sll[4:], 6) // address length
	copy(sll[6:12], macA)    // sender
	be.PutUint16(sll[14:], 0x0800)
	sll = append(sll, eth[14:]...)
	path := writeCapture(t, [][]byte{sll}, 0, false, layers.LinkTypeLinuxSLL)
	src, err := OpenFile(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var rec recorder
	if err := src.Run(context.Background(), 0, &rec); err != nil {
		t.Fatal(err)
	}
	var p Packet
	if r := Decode(rec.frames[0], &rec.metas[0], &p); r != OK {
		t.Fatalf("decode SLL frame: %v", r)
	}
	if p.SrcMAC != [6]byte(macA) || p.SrcPort != 40000 || p.Flags != FlagSYN || p.WireLen != uint32(len(eth)) {
		t.Fatalf("decoded %+v", p)
	}
}

func TestFileLinuxCookedCaptureV2(t *testing.T) {
	eth := serialize(t, eth(layers.EthernetTypeIPv6), ipv6(layers.IPProtocolTCP), tcp(FlagSYN))
	sll2 := make([]byte, 20, 20+len(eth)-14)
	be.PutUint16(sll2[0:], 0x86dd) // protocol
	be.PutUint32(sll2[4:], 7)      // ifindex
	be.PutUint16(sll2[8:], 1)      // ARPHRD_ETHER
	sll2[10], sll2[11] = 0, 6      // to us, address length
	copy(sll2[12:18], macA)
	sll2 = append(sll2, eth[14:]...)
	src, err := OpenFile(writeCapture(t, [][]byte{sll2, sll2[:15]}, 0, true, layers.LinkTypeLinuxSLL2), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var rec recorder
	if err := src.Run(context.Background(), 0, &rec); err != nil {
		t.Fatal(err)
	}
	var p Packet
	if r := Decode(rec.frames[0], &rec.metas[0], &p); r != OK {
		t.Fatalf("decode SLL2 frame: %v", r)
	}
	if p.SrcMAC != [6]byte(macA) || p.IPVersion != 6 || p.Flags != FlagSYN || p.WireLen != uint32(len(eth)) {
		t.Fatalf("decoded %+v", p)
	}
	if r := Decode(rec.frames[1], &rec.metas[1], &p); r != ReasonTruncEther {
		t.Fatalf("short SLL2 frame decoded as %v, want %v", r, ReasonTruncEther)
	}
}

func TestFileRejectsGarbage(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "notes.txt")
	os.WriteFile(bad, []byte("this is not a capture"), 0o644)
	if _, err := OpenFile(bad, 0); err == nil || !strings.Contains(err.Error(), "not a pcap") {
		t.Errorf("OpenFile(text) = %v, want a 'not a pcap' error", err)
	}
	if _, err := OpenFile(filepath.Join(dir, "missing.pcap"), 0); err == nil {
		t.Error("OpenFile(missing) succeeded")
	}
	if _, err := OpenFile(writeCapture(t, nil, 0, false, layers.LinkTypeRaw), 0); err == nil || !strings.Contains(err.Error(), "link type") {
		t.Errorf("OpenFile(raw IP) = %v, want a link type error", err)
	}
	if _, err := OpenFile(writeCapture(t, nil, 0, false, layers.LinkTypeEthernet), -1); err == nil {
		t.Error("negative speed accepted")
	}
}

func TestFileTruncatedMidPacket(t *testing.T) {
	frames := randomFrames(t, 10)
	path := writeCapture(t, frames, time.Millisecond, false, layers.LinkTypeEthernet)
	st, _ := os.Stat(path)
	os.Truncate(path, st.Size()-5)
	src, err := OpenFile(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var rec recorder
	err = src.Run(context.Background(), 0, &rec)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Run = %v, want io.ErrUnexpectedEOF", err)
	}
	if len(rec.frames) != 9 {
		t.Fatalf("delivered %d complete frames, want 9", len(rec.frames))
	}
}

func TestFileRealTimePacingAndWake(t *testing.T) {
	frames := randomFrames(t, 5)
	path := writeCapture(t, frames, 100*time.Millisecond, false, layers.LinkTypeEthernet)
	src, err := OpenFile(path, 2) // 400 ms of capture at 2× → ≥ 200 ms
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	// Wake from inside the first Frame call: the replay then sits in the
	// 50 ms paced gap before frame 2 and must serve the Wake there.
	rec := &wakingRecorder{src: src}
	start := time.Now()
	if err := src.Run(context.Background(), 0, rec); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 190*time.Millisecond {
		t.Fatalf("replay at 2× of 400 ms took %v; pacing is not applied", el)
	}
	if len(rec.frames) != 5 {
		t.Fatalf("%d frames", len(rec.frames))
	}
	// Idle fires for the Wake during the first gap, before frame 2.
	if rec.idleBeforeSecond == 0 {
		t.Fatalf("Wake during a paced gap was not served before the next frame (Idle calls: %v)", rec.idles)
	}
}

// wakingRecorder wakes its source on the first frame and notes whether the
// Idle came before the second frame.
type wakingRecorder struct {
	recorder
	src              *File
	idleBeforeSecond int
}

func (w *wakingRecorder) Frame(b []byte, m *Meta) {
	w.recorder.Frame(b, m)
	if len(w.frames) == 1 {
		w.src.Wake(0)
	}
}

func (w *wakingRecorder) Idle(now int64) {
	w.recorder.Idle(now)
	if len(w.frames) == 1 {
		w.idleBeforeSecond++
	}
}

func TestFileStopsOnContext(t *testing.T) {
	frames := randomFrames(t, 3)
	path := writeCapture(t, frames, time.Hour, false, layers.LinkTypeEthernet)
	src, err := OpenFile(path, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	var rec recorder
	go func() { errc <- src.Run(ctx, 0, &rec) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
}

// nopHandler decodes every frame, as the sensor would, and keeps nothing.
type nopHandler struct {
	p       Packet
	reasons [NumReasons]uint64
}

func (h *nopHandler) Frame(b []byte, m *Meta) { h.reasons[Decode(b, m, &h.p)]++ }
func (h *nopHandler) Idle(int64)              {}

// BenchmarkFileReplay measures the whole offline path (file read, pcap
// parsing, Meta, Decode) in packets per second.
func BenchmarkFileReplay(b *testing.B) {
	for _, ng := range []bool{false, true} {
		b.Run(map[bool]string{false: "pcap", true: "pcapng"}[ng], func(b *testing.B) {
			const n = 20000
			path := writeCapture(b, randomFrames(b, n), time.Microsecond, ng, layers.LinkTypeEthernet)
			b.ReportAllocs()
			b.ResetTimer()
			var total int
			for b.Loop() {
				src, err := OpenFile(path, 0)
				if err != nil {
					b.Fatal(err)
				}
				var h nopHandler
				if err := src.Run(context.Background(), 0, &h); err != nil {
					b.Fatal(err)
				}
				src.Close()
				total += n
			}
			b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "pkts/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(total), "ns/pkt")
		})
	}
}

// TestFileWakeDuringPacedGap wakes the replay while it waits out a long
// gap between frames; the Idle must come during the gap, not after it.
func TestFileWakeDuringPacedGap(t *testing.T) {
	path := writeCapture(t, randomFrames(t, 2), 10*time.Second, false, layers.LinkTypeEthernet)
	src, err := OpenFile(path, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	h := &chanHandler{frames: make(chan struct{}, 4), idles: make(chan int64, 4)}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- src.Run(ctx, 0, h) }()
	<-h.frames
	src.Wake(0)
	select {
	case <-h.idles:
	case <-time.After(5 * time.Second):
		t.Fatal("no Idle while waiting out a 10 s gap after Wake")
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if len(h.frames) != 0 {
		t.Fatal("the second frame was delivered: the replay did not pace")
	}
}

type chanHandler struct {
	frames chan struct{}
	idles  chan int64
}

func (h *chanHandler) Frame([]byte, *Meta) { h.frames <- struct{}{} }
func (h *chanHandler) Idle(now int64)      { h.idles <- now }
