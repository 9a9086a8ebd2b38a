//go:build linux

package hugepage

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"
)

// anonHugeKB is the AnonHugePages figure of the mapping holding p.
func anonHugeKB(t *testing.T, p uintptr) int {
	t.Helper()
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Skip(err)
	}
	in := false
	for _, l := range strings.Split(string(data), "\n") {
		var lo, hi uintptr
		if n, _ := fmt.Sscanf(l, "%x-%x", &lo, &hi); n == 2 {
			in = p >= lo && p < hi
			continue
		}
		var kb int
		if in && strings.HasPrefix(l, "AnonHugePages:") {
			fmt.Sscanf(strings.TrimPrefix(l, "AnonHugePages:"), "%d", &kb)
			return kb
		}
	}
	t.Fatalf("no mapping holds %#x", p)
	return 0
}

// An array written on ordinary pages is on huge pages after Collapse.
func TestCollapseMovesWrittenArrayToHugePages(t *testing.T) {
	mode, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil || strings.Contains(string(mode), "[never]") {
		t.Skip("transparent huge pages are off on this machine")
	}
	s := make([]uint64, 16<<20/8)
	for i := range s {
		s[i] = uint64(i) // fault it in, on whatever pages the heap has
	}
	mid := uintptr(unsafe.Pointer(&s[len(s)/2]))
	Collapse(s)
	if kb := anonHugeKB(t, mid); kb == 0 {
		t.Fatalf("after Collapse the array's mapping has no huge pages")
	}
	for i := range s {
		if s[i] != uint64(i) {
			t.Fatalf("s[%d] = %d after Collapse", i, s[i])
		}
	}
}

func TestSpanCoversWholeAlignedPagesOnly(t *testing.T) {
	if span(make([]byte, minBytes-1)) != nil {
		t.Error("an array too small for a whole aligned huge page got a span")
	}
	s := make([]byte, 8<<20)
	b := span(s)
	if b == nil {
		t.Fatal("no span for an 8 MiB array")
	}
	start, base := uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&s[0]))
	if start%huge != 0 || len(b)%huge != 0 || start < base || start+uintptr(len(b)) > base+uintptr(len(s)) {
		t.Errorf("span [%#x, +%d) of [%#x, +%d) is not whole aligned huge pages inside the array", start, len(b), base, len(s))
	}
}

// A fresh array is not resident until written; after Populate every page
// of it is, and its contents are unchanged.
func TestPopulateMakesArrayResident(t *testing.T) {
	s := make([]uint64, 64<<20/8) // fresh from the OS: not yet faulted in
	s[len(s)/2] = 42
	resident := func() int {
		pct, err := Resident(s)
		if err != nil {
			t.Skip("mincore:", err)
		}
		return pct
	}
	before := resident()
	if err := Populate(s); err != nil {
		t.Fatal(err)
	}
	if after := resident(); after != 100 {
		t.Fatalf("after Populate %d%% of the array is resident (before: %d%%)", after, before)
	}
	if before == 100 {
		t.Logf("the array was already resident before Populate (the heap reused memory): the check above proves less")
	}
	if s[len(s)/2] != 42 || s[0] != 0 {
		t.Fatal("Populate changed the array")
	}
}
