package flow

import "unsafe"

// touch3 asks the CPU to bring the cache lines at a, b and c into cache
// (PREFETCHT0) without waiting for them: a hint that never faults and
// changes nothing. Three at a time because a call into assembly costs
// about as much as the prefetches.
//
//go:noescape
func touch3(a, b, c unsafe.Pointer)
