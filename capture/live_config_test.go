package capture

import (
	"strings"
	"testing"
	"time"
)

// A LiveConfig that cannot work is refused before any socket opens, with
// the reason; zero values take the defaults.
func TestLiveConfigDefaultsAndRefusals(t *testing.T) {
	c, err := LiveConfig{Ifaces: []string{"eth1"}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.BlockTimeout != DefaultBlockTimeout || c.LaneFrames != DefaultLaneFrames || c.LaneNap != DefaultLaneNap || c.Workers < 1 {
		t.Errorf("defaults %+v", c)
	}
	if c, err := (LiveConfig{Ifaces: []string{"eth1"}, LaneNap: -1}).withDefaults(); err != nil || c.LaneNap != -1 {
		t.Errorf("napping off: %v %v", c.LaneNap, err)
	}
	if c, err := (LiveConfig{Ifaces: []string{"eth1"}, LaneNap: time.Millisecond}).withDefaults(); err != nil || c.LaneNap != time.Millisecond {
		t.Errorf("the longest nap: %v %v", c.LaneNap, err)
	}
	for _, b := range []struct {
		cfg  LiveConfig
		want string
	}{
		{LiveConfig{}, "no interface given"},
		{LiveConfig{Ifaces: []string{"eth1", "eth1"}}, "listed twice"},
		{LiveConfig{Ifaces: []string{"eth1"}, Workers: 257}, "257 workers"},
		{LiveConfig{Ifaces: []string{"eth1"}, BlockSize: 5000}, "power of two"},
		{LiveConfig{Ifaces: []string{"eth1"}, NumBlocks: 1}, "at least 2"},
		{LiveConfig{Ifaces: []string{"eth1"}, BlockTimeout: 2 * time.Second}, "1ms..1s"},
		{LiveConfig{Ifaces: []string{"eth1"}, LaneFrames: 8}, "at least 16"},
		{LiveConfig{Ifaces: []string{"eth1"}, LaneNap: 2 * time.Millisecond}, "lane nap 2ms: use at most 1ms"},
	} {
		if _, err := b.cfg.withDefaults(); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%+v: %v, want an error saying %q", b.cfg, err, b.want)
		}
	}
}
