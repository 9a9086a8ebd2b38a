package latency

import (
	"testing"
	"time"
)

func TestString(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "-"},
		{-time.Second, "-"},
		{999, "<1µs"},
		{time.Microsecond, "1µs"},
		{327679 * time.Nanosecond, "327µs"},
		{999999 * time.Nanosecond, "999µs"},
		{time.Millisecond, "1.0ms"},
		{5242879 * time.Nanosecond, "5.2ms"},
		{999 * time.Millisecond, "999.0ms"},
		{1300 * time.Millisecond, "1.3s"},
		{90 * time.Second, "90.0s"},
	} {
		if got := String(tc.d); got != tc.want {
			t.Errorf("String(%d) = %q, want %q", tc.d, got, tc.want)
		}
	}
}
