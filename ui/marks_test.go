package ui

import (
	"net/netip"
	"testing"

	"canopy/rules"
)

// TestRuleIndexMarks: the allowlist wins over every ban, a blocking ban
// over an observing one, and a network row is marked only by entries that
// cover all of it.
func TestRuleIndexMarks(t *testing.T) {
	entry := func(kind rules.Kind, p string, action rules.Action) rules.Entry {
		return rules.Entry{Kind: kind, Value: netip.MustParsePrefix(p), Action: action}
	}
	ri := newRuleIndex([]rules.Entry{
		entry(rules.KindBan, "10.0.0.0/8", rules.ActionBlock),
		entry(rules.KindBan, "10.1.0.0/16", rules.ActionObserve),
		entry(rules.KindAllow, "10.2.3.4/32", ""),
		entry(rules.KindBan, "192.0.2.0/24", rules.ActionObserve),
		entry(rules.KindBan, "198.51.100.7/32", rules.ActionObserve),
	})
	for a, want := range map[string]mark{
		"10.1.2.3":     markBan, // the blocking /8 over the observing /16
		"10.2.3.4":     markAllow,
		"192.0.2.5":    markObserve,
		"198.51.100.7": markObserve,
		"203.0.113.1":  markNone,
	} {
		if got := ri.mark(netip.MustParseAddr(a)); got != want {
			t.Errorf("mark(%s) = %q, want %q", a, got.text(), want.text())
		}
	}
	for n, want := range map[string]mark{
		"10.1.0.0/16":     markBan,
		"192.0.2.0/24":    markObserve,
		"192.0.0.0/16":    markNone, // the ban is inside it, not over it
		"10.2.3.0/24":     markBan,  // so is the allowlisted address
		"198.51.100.7/32": markObserve,
	} {
		if got := ri.markNet(netip.MustParsePrefix(n)); got != want {
			t.Errorf("markNet(%s) = %q, want %q", n, got.text(), want.text())
		}
	}
	if e, ok := ri.banForNet(netip.MustParsePrefix("10.1.2.0/24")); !ok || e.Value.String() != "10.1.0.0/16" {
		t.Errorf("banForNet(10.1.2.0/24) = %v %v, want the most specific ban over it, 10.1.0.0/16", e.Value, ok)
	}
	if _, ok := ri.banForNet(netip.MustParsePrefix("192.0.0.0/16")); ok {
		t.Error("banForNet(192.0.0.0/16) found a ban that covers only part of it")
	}
}
