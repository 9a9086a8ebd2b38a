package inject

import (
	"net/netip"
	"reflect"
	"strconv"
	"testing"

	"canopy/capture"
)

func TestRecorder(t *testing.T) {
	var s Sender = NewRecorder(2)
	r := s.(*Recorder)
	if got := r.Last(); len(got) != 0 {
		t.Fatalf("empty recorder has %q", got)
	}
	buf := make([]byte, MaxFrameLen)
	for i := range 3 {
		n, err := BuildReset(buf, &Reset{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"),
			SrcPort: 80, DstPort: uint16(1000 + i), Seq: uint32(i), Flags: capture.FlagRST, TTL: 9})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(buf[:n]); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if got := r.Last(); len(got) != 1 {
				t.Fatalf("after one send: %q", got)
			}
		}
	}
	if r.Count() != 3 {
		t.Errorf("Count = %d, want 3", r.Count())
	}
	want := []string{
		"RST 10.0.0.1:80 > 10.0.0.2:" + strconv.Itoa(1001) + " seq=1 ttl=9",
		"RST 10.0.0.1:80 > 10.0.0.2:1002 seq=2 ttl=9",
	}
	if got := r.Last(); !reflect.DeepEqual(got, want) {
		t.Errorf("Last = %q, want %q", got, want)
	}
}
