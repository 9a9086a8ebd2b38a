package flow

import (
	"testing"

	"canopy/internal/hugepage"
)

// residentPct is how much of s's memory is resident, in percent.
func residentPct[T any](t *testing.T, s []T) int {
	t.Helper()
	pct, err := hugepage.Resident(s)
	if err != nil {
		t.Skip("mincore:", err)
	}
	return pct
}

// A table's memory faults in as flows arrive unless Prefault made it
// resident: then every page of the slots and both indexes is.
func TestPrefaultMakesTableResident(t *testing.T) {
	tb := NewTable(Config{MaxFlows: 1 << 18})
	before := residentPct(t, tb.flows)
	if err := tb.Prefault(); err != nil {
		t.Fatal(err)
	}
	for name, pct := range map[string]int{"flows": residentPct(t, tb.flows), "idx": residentPct(t, tb.idx), "epHeads": residentPct(t, tb.epHeads)} {
		if pct != 100 {
			t.Errorf("after Prefault %d%% of %s is resident (flows before: %d%%)", pct, name, before)
		}
	}
	p := pk("10.0.0.1", 1000, "10.0.0.2", 80, syn, 1, 0, 0, t0)
	if f, _, created := tb.Update(p); f == nil || !created || tb.Len() != 1 {
		t.Fatal("a prefaulted table does not take a flow")
	}
}
