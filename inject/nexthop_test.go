package inject

import (
	"context"
	"strings"
	"testing"
)

func TestNextHopParse(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		hop, want, err string
	}{
		{hop: "02:00:5e:00:01:01", want: "02:00:5e:00:01:01"},
		{hop: "0200.5e00.0101", want: "02:00:5e:00:01:01"},
		{hop: "ff:ff:ff:ff:ff:ff", err: "not a unicast MAC"},
		{hop: "01:00:5e:00:00:01", err: "not a unicast MAC"},
		{hop: "00:00:00:00:00:00", err: "not a unicast MAC"},
		{hop: "router", err: "neither an IP address nor a MAC"},
		{hop: "224.0.0.1", err: "not a unicast address"},
		{hop: "0.0.0.0", err: "not a unicast address"},
		{hop: "127.0.0.1", err: "not a unicast address"},
		{hop: "ff02::1", err: "not a unicast address"},
	} {
		mac, err := ResolveNextHop(ctx, "eth9", tc.hop)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "eth9") {
				t.Errorf("ResolveNextHop(%q) = %v, %v; want an error naming eth9 with %q", tc.hop, mac, err, tc.err)
			}
			if nh, err := NewNextHop(ctx, "eth9", tc.hop, 0); err == nil {
				t.Errorf("NewNextHop(%q) = %v", tc.hop, nh)
			}
			continue
		}
		if err != nil || mac.String() != tc.want {
			t.Errorf("ResolveNextHop(%q) = %v, %v; want %s", tc.hop, mac, err, tc.want)
		}
		nh, err := NewNextHop(ctx, "eth9", tc.hop, 0)
		if err != nil || nh.String() != tc.hop+" ("+tc.want+")" {
			t.Errorf("NewNextHop(%q) = %v, %v", tc.hop, nh, err)
		}
	}
}
