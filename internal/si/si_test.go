package si

import (
	"math"
	"testing"
)

func TestAppend(t *testing.T) {
	for _, c := range []struct {
		got  []byte
		want string
	}{
		{AppendBitRate(nil, 0), "0 b/s"},
		{AppendBitRate(nil, 999), "999 b/s"},
		{AppendBitRate(nil, 999.6), "1.00 kb/s"}, // rounds up into the next step, not "1000 b/s"
		{AppendBitRate(nil, 1500), "1.50 kb/s"},
		{AppendBitRate(nil, 85e6), "85.0 Mb/s"},
		{AppendBitRate(nil, 850e6), "850 Mb/s"},
		{AppendBitRate(nil, 1.22e9), "1.22 Gb/s"},
		{AppendBitRate(nil, 8e12), "8.00 Tb/s"},
		{AppendBitRate(nil, 8e16), "80000 Tb/s"}, // the last unit absorbs the rest
		{AppendBitRate(nil, -5), "0 b/s"},
		{AppendBitRate(nil, math.NaN()), "0 b/s"},
		{AppendByteRate(nil, 850e6), "106 MB/s"},
		{AppendByteRate(nil, 8), "1 B/s"},
		{AppendCount(nil, 0.5), "0.50"},
		{AppendCount(nil, 45600), "45.6k"},
		{AppendSize(nil, 1_220_000_000), "1.22 GB"},
		{AppendSize(nil, 42), "42 B"},
		{AppendSize(append([]byte("rx "), 0), 1), "rx \x001 B"}, // appends, keeps what was there
	} {
		if string(c.got) != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestAppendDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 32)
	if n := testing.AllocsPerRun(100, func() { buf = AppendBitRate(buf[:0], 1.22e9) }); n != 0 {
		t.Errorf("AppendBitRate allocates %.0f times per call into a buffer with room", n)
	}
}
