package flow

import (
	"testing"
	"unsafe"
)

// TestFlowLayout pins the memory layout the performance figures depend on:
// a Flow is exactly three cache lines, everything a lookup, an Update and
// the sensor's per-packet verdict read (key, generation, state, both
// directions, Decision and RuleGen) is in the first two, which are all
// Prefetch fetches, and all Expire and eviction read (key, bits, state and
// the directions' last packet times) is in the first.
func TestFlowLayout(t *testing.T) {
	var f Flow
	if got := unsafe.Sizeof(f); got != 192 {
		t.Errorf("Flow is %d bytes, want 192 (3 cache lines): memory per flow and cache behaviour change", got)
	}
	if got := unsafe.Sizeof(f.Dirs[0]); got != 32 {
		t.Errorf("DirState is %d bytes, want 32", got)
	}
	for name, end := range map[string]uintptr{
		"Dirs":     unsafe.Offsetof(f.Dirs) + unsafe.Sizeof(f.Dirs),
		"Decision": unsafe.Offsetof(f.Decision) + unsafe.Sizeof(f.Decision),
		"RuleGen":  unsafe.Offsetof(f.RuleGen) + unsafe.Sizeof(f.RuleGen),
	} {
		if end > 128 {
			t.Errorf("%s ends at byte %d, past the second cache line: every packet would read a third", name, end)
		}
	}
	if end := unsafe.Offsetof(f.talk) + 2; end > 64 {
		t.Errorf("talk ends at byte %d, past the first cache line", end)
	}
	if got := unsafe.Sizeof(flowRow{}); got != 32 {
		t.Errorf("flowRow is %d bytes, want 32 (two a cache line)", got)
	}
	if end := unsafe.Offsetof(f.gen) + 4; end > 64 {
		t.Errorf("key, state and generation end at byte %d, past the first cache line", end)
	}
	if end := unsafe.Offsetof(f.last) + unsafe.Sizeof(f.last); end > 64 {
		t.Errorf("last ends at byte %d, past the first cache line: eviction samples and Expire would read two", end)
	}
	if end := unsafe.Offsetof(f.state) + 1; end > 64 {
		t.Errorf("state ends at byte %d, past the first cache line", end)
	}
	if got := unsafe.Sizeof(l2Entry{}); got != 32 {
		t.Errorf("l2Entry is %d bytes, want 32", got)
	}
	if unsafe.Sizeof(f.Enf) > 48 {
		t.Errorf("Enforcement grew to %d bytes", unsafe.Sizeof(f.Enf))
	}
}
