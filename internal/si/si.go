// Package si formats rates, counts and sizes the way an operator reads
// them: three significant digits and an SI step of 1000 ("812 Mb/s",
// "45.6k", "1.22 GB"). The dashboard and the command line share it, so a
// number reads the same in both. Every function appends to the caller's
// buffer: a frame of a thousand rows costs no allocation per cell.
package si

import (
	"math"
	"strconv"
)

var (
	bitRate  = [...]string{" b/s", " kb/s", " Mb/s", " Gb/s", " Tb/s"}
	byteRate = [...]string{" B/s", " kB/s", " MB/s", " GB/s", " TB/s"}
	count    = [...]string{"", "k", "M", "G", "T"}
	size     = [...]string{" B", " kB", " MB", " GB", " TB"}
)

// Append appends v scaled by steps of 1000 with three significant digits,
// then the unit from units for the step reached (the last unit absorbs
// anything larger). Negative and NaN values read as 0.
func Append(dst []byte, v float64, units []string) []byte {
	if v < 0 || math.IsNaN(v) {
		v = 0
	}
	i := 0
	for v >= 999.5 && i < len(units)-1 {
		v /= 1000
		i++
	}
	switch {
	case v == 0:
		dst = append(dst, '0')
	case i == 0 && v >= 1:
		dst = strconv.AppendFloat(dst, math.Round(v), 'f', 0, 64)
	case v < 9.995:
		dst = strconv.AppendFloat(dst, v, 'f', 2, 64)
	case v < 99.95:
		dst = strconv.AppendFloat(dst, v, 'f', 1, 64)
	default:
		dst = strconv.AppendFloat(dst, v, 'f', 0, 64)
	}
	return append(dst, units[i]...)
}

// AppendBitRate appends a rate in bits per second ("812 Mb/s").
func AppendBitRate(dst []byte, bitsPerSec float64) []byte {
	return Append(dst, bitsPerSec, bitRate[:])
}

// AppendByteRate appends a rate given in bits per second as bytes per
// second ("101 MB/s").
func AppendByteRate(dst []byte, bitsPerSec float64) []byte {
	return Append(dst, bitsPerSec/8, byteRate[:])
}

// AppendCount appends a count or a per-second count such as packets/s
// ("45.6k").
func AppendCount(dst []byte, v float64) []byte {
	return Append(dst, v, count[:])
}

// AppendSize appends a number of bytes ("1.22 GB").
func AppendSize(dst []byte, bytes uint64) []byte {
	return Append(dst, float64(bytes), size[:])
}
