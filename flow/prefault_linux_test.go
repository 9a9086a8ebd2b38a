package flow

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// residentPct is how much of s's memory is resident, in percent.
func residentPct[T any](t *testing.T, s []T) int {
	t.Helper()
	var zero T
	p := uintptr(unsafe.Pointer(&s[0]))
	start := p &^ 4095
	n := (p + uintptr(len(s))*unsafe.Sizeof(zero) - start + 4095) / 4096
	vec := make([]byte, n)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, start, n*4096, uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Skip("mincore:", e)
	}
	c := 0
	for _, v := range vec {
		c += int(v & 1)
	}
	return c * 100 / len(vec)
}

// A table's memory faults in as flows arrive unless Prefault made it
// resident: then every page of the slots and both indexes is.
func TestPrefaultMakesTableResident(t *testing.T) {
	tb := NewTable(Config{MaxFlows: 1 << 18})
	before := residentPct(t, tb.flows)
	tb.Prefault()
	for name, pct := range map[string]int{"flows": residentPct(t, tb.flows), "heads": residentPct(t, tb.heads), "epHeads": residentPct(t, tb.epHeads)} {
		if pct != 100 {
			t.Errorf("after Prefault %d%% of %s is resident (flows before: %d%%)", pct, name, before)
		}
	}
	p := pk("10.0.0.1", 1000, "10.0.0.2", 80, syn, 1, 0, 0, t0)
	if f, _, created := tb.Update(p); f == nil || !created || tb.Len() != 1 {
		t.Fatal("a prefaulted table does not take a flow")
	}
}
