// Package latency renders a reaction time for people, the same way in the
// dashboard and in `canopy status`: "312µs", "4.2ms", "1.3s", or "-" when
// there is none. The figures it is given are histogram quantiles, good to
// about 12% (sensor.Reaction), so it shows two or three digits, not the
// nanoseconds of a bucket bound.
package latency

import (
	"strconv"
	"time"
)

// Append appends d's rendering to dst (no allocation beyond dst's growth).
func Append(dst []byte, d time.Duration) []byte {
	switch {
	case d <= 0:
		return append(dst, '-')
	case d < time.Microsecond:
		return append(dst, "<1µs"...)
	case d < time.Millisecond:
		dst = strconv.AppendInt(dst, int64(d/time.Microsecond), 10)
		return append(dst, "µs"...)
	case d < time.Second:
		dst = strconv.AppendFloat(dst, float64(d)/float64(time.Millisecond), 'f', 1, 64)
		return append(dst, "ms"...)
	default:
		dst = strconv.AppendFloat(dst, d.Seconds(), 'f', 1, 64)
		return append(dst, 's')
	}
}

// String is Append as a string.
func String(d time.Duration) string {
	var b [16]byte
	return string(Append(b[:0], d))
}
