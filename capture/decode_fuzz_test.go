package capture

import (
	"math/rand/v2"
	"testing"
)

// FuzzDecode feeds arbitrary bytes and metadata to Decode: it must never
// panic, never read past the frame, and whatever it reports must be
// self-consistent. The corpus lives in testdata/fuzz/FuzzDecode so the normal
// test run replays every input the fuzzer ever found interesting.
func FuzzDecode(f *testing.F) {
	r := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 32; i++ {
		f.Add(randomFrame(f, r), uint32(0), false, uint16(0), uint16(0))
	}
	f.Add([]byte{}, uint32(0), false, uint16(0), uint16(0))
	f.Add(make([]byte, 14), uint32(60), true, uint16(0x88a8), uint16(7))

	f.Fuzz(func(t *testing.T, frame []byte, wire uint32, hasVLAN bool, tpid, tci uint16) {
		m := Meta{WireLen: wire, HasVLAN: hasVLAN, VLANTPID: tpid, VLANTCI: tci, Timestamp: 1}
		// Cap the capacity so a read past len(frame) cannot hide in
		// spare capacity: the slice expression panics instead.
		frame = frame[:len(frame):len(frame)]
		var p Packet
		reason := Decode(frame, &m, &p)
		if reason >= NumReasons {
			t.Fatalf("reason %d out of range", reason)
		}
		if p.Timestamp != 1 {
			t.Fatal("timestamp not copied from meta")
		}
		if int(p.NumVLANs) > MaxVLANs {
			t.Fatalf("NumVLANs %d", p.NumVLANs)
		}
		if reason != OK {
			return
		}
		if p.IPVersion != 4 && p.IPVersion != 6 {
			t.Fatalf("OK without an IP version: %+v", p)
		}
		if int(p.L3Offset) >= len(frame) {
			t.Fatalf("L3Offset %d beyond frame of %d", p.L3Offset, len(frame))
		}
		if p.PayloadLen > p.IPLen {
			t.Fatalf("PayloadLen %d > IPLen %d", p.PayloadLen, p.IPLen)
		}
		if p.Frag == FragLater && (p.SrcPort != 0 || p.DstPort != 0) {
			t.Fatalf("later fragment with ports: %+v", p)
		}
		if (p.Proto == ProtoTCP || p.Proto == ProtoUDP) && p.Frag != FragLater && p.IPVersion == 4 {
			if hdr := int(p.IPLen) - int(p.PayloadLen); hdr < 28 {
				t.Fatalf("IPv4 transport header accounted as %d bytes", hdr)
			}
		}
	})
}
