package flow

import (
	"testing"
	"unsafe"
)

// TestFlowLayout pins the memory layout the performance figures depend on:
// a Flow is exactly four cache lines, and everything a lookup, Expire and
// eviction read (key, state, both directions' Last) is in the first two.
func TestFlowLayout(t *testing.T) {
	var f Flow
	if got := unsafe.Sizeof(f); got != 256 {
		t.Errorf("Flow is %d bytes, want 256 (4 cache lines): memory per flow and cache behaviour change", got)
	}
	if end := unsafe.Offsetof(f.bits) + 1; end > 64 {
		t.Errorf("key and state end at byte %d, past the first cache line", end)
	}
	last1 := unsafe.Offsetof(f.Dirs) + unsafe.Sizeof(f.Dirs[0]) + unsafe.Offsetof(f.Dirs[0].Last)
	if last1+8 > 128 {
		t.Errorf("Dirs[BtoA].Last ends at byte %d, past the second cache line", last1+8)
	}
	if unsafe.Sizeof(f.Enf) > 48 {
		t.Errorf("Enforcement grew to %d bytes", unsafe.Sizeof(f.Enf))
	}
}
