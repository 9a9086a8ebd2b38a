package ui

import (
	"net/netip"
	"testing"

	"canopy/sensor"
)

func TestParseFilter(t *testing.T) {
	blk := sensor.Block{Src: netip.MustParseAddr("198.51.100.23"), SrcPort: 51234, Dst: netip.MustParseAddr("10.0.0.80"), DstPort: 443}
	for _, c := range []struct {
		in    string
		desc  string
		match bool // against blk
	}{
		{"10.0.0.80", "IP 10.0.0.80", true},
		{"10.0.0.81", "IP 10.0.0.81", false},
		{"10.0.0.0/8", "prefix 10.0.0.0/8", true},
		{"10.0.0.1/8", "prefix 10.0.0.0/8", true}, // masked
		{"192.168.0.0/16", "prefix 192.168.0.0/16", false},
		{":443", "port 443", true},
		{"port 443", "port 443", true},
		{"tcp/443", "port 443", true},
		{":80", "port 80", false},
		{"443", `port 443 or "443" in an address`, true},
		{"198", `port 198 or "198" in an address`, true},
		{"51.100", `text "51.100"`, true},
		{"nope", `text "nope"`, false},
		{"  ", "", true},
	} {
		f := parseFilter(c.in)
		if got := f.describe(); got != c.desc {
			t.Errorf("parseFilter(%q).describe() = %q, want %q", c.in, got, c.desc)
		}
		if got := f.matchBlock(&blk); got != c.match {
			t.Errorf("parseFilter(%q).matchBlock = %v, want %v", c.in, got, c.match)
		}
	}
}
