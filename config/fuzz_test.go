package config

import (
	"os"
	"testing"
)

// FuzzParse feeds Parse arbitrary text. It must never panic, and whatever
// it accepts must survive the trip through TOML (what `canopy
// check-config` prints, which an operator may save as a config): the
// rendering loads again, to the same configuration.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("../config.toml.example"); err == nil {
		f.Add(b)
	}
	for _, s := range []string{
		"",
		"mode = \"observe\"\n[capture]\ninterfaces = [\"eth1\", \"eth2\"]\nblock_timeout = \"5ms\"\n",
		"[[rules.ban]]\nvalue = \"192.0.2.0/24\"\nttl = \"1h\"\nreason = \"x\"\n[[rules.allow]]\nvalue = \"::1\"\n",
		"[flow]\nmax_flows = 4096\nidle_udp = 30000000000\n",
		"[inject]\nnext_hop = \"02:00:00:00:00:01\"\nmin_reset_interval = \"0s\"\n",
		"[rules]\nhome_nets = []\n",
		"[capture]\nworkers = \"two\"\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b, "fuzz.toml")
		if err != nil {
			return
		}
		out := c.TOML()
		c2, err := Parse([]byte(out), "rendered.toml")
		if err != nil {
			t.Fatalf("the rendering of an accepted config does not load: %v\n--- input\n%s\n--- rendering\n%s", err, b, out)
		}
		if out2 := c2.TOML(); out2 != out {
			t.Fatalf("the rendering loads to another config\n--- first\n%s\n--- second\n%s", out, out2)
		}
	})
}
