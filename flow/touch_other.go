//go:build !amd64

package flow

import (
	"sync/atomic"
	"unsafe"
)

// touchHits exists so the compiler cannot drop touch3's loads.
var touchHits atomic.Uint32

// touch3 loads a byte at a, b and c so their cache lines are on their way;
// without a prefetch instruction the loads are real ones, but the loads of
// a batch are independent, so an out-of-order core still overlaps them.
func touch3(a, b, c unsafe.Pointer) {
	if *(*byte)(a)^*(*byte)(b)^*(*byte)(c) == 0xa5 {
		touchHits.Add(1)
	}
}
