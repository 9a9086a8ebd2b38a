package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"canopy/lab"
)

var update = flag.Bool("update", false, "rewrite testdata/dashboard-tmux.txt from this run")

func TestClientTargetFlags(t *testing.T) {
	dir := t.TempDir()
	tf := filepath.Join(dir, "tokens")
	os.WriteFile(tf, []byte("# ops\nsoar:s3cret:ro\n"), 0o600)
	addr, token, rest, err := clientTarget([]string{"10.0.0.1", "--api", "127.0.0.1:9", "--for", "1h", "--token-file=" + tf, "--json"})
	if err != nil {
		t.Fatal(err)
	}
	if addr != "127.0.0.1:9" || token != "s3cret" || strings.Join(rest, " ") != "10.0.0.1 --for 1h --json" {
		t.Errorf("got addr %q token %q rest %q", addr, token, rest)
	}
	if _, _, _, err := clientTarget([]string{"--api"}); err == nil {
		t.Error("--api without a value accepted")
	}
}

func TestCommandLine(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "canopy ") {
		t.Errorf("version: %d %q", code, out.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"--help"}, &out, &errb); code != 0 {
		t.Errorf("--help exit %d", code)
	}
	for _, want := range []string{"--daemon", "-config", "-iface", "-inject-iface", "-next-hop", "-block-file", "-api", "-state-dir", "-dry-run", "-read",
		"canopy ban", "canopy unban", "canopy bans", "canopy status", "canopy demo", "check-config", "canopy version"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("--help does not mention %s", want)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("[inject]\nnext_hopp = \"10.0.0.1\"\n"), 0o600)
	errb.Reset()
	if code := run([]string{"check-config", "--config", bad}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "inject.next_hopp") {
		t.Errorf("check-config on a typo'd key: exit %d, %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 {
		t.Errorf("unknown command exit %d", code)
	}
	errb.Reset()
	if code := run([]string{"--daemon", "--state-dir", t.TempDir(), "--api", "127.0.0.1:0"}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "no capture interface") {
		t.Errorf("daemon without an interface: exit %d, %q", code, errb.String())
	}
}

// TestDashboardInTmux is the real-terminal check: the binary runs under
// tmux on a lab's tap while traffic flows; the test types the keys an
// operator would (filter to the attacker, b, Enter) and the attacker's
// sessions die while the legitimate ones live.
func TestDashboardInTmux(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for the lab's namespaces (CI runs as root)")
	}
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed (.ci/run installs it)")
	}
	bin := filepath.Join(t.TempDir(), "canopy")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	l := lab.NewT(t, lab.Config{Delay: time.Millisecond})
	ctx := context.Background()
	bad, err := l.OpenSessions(ctx, lab.SessionsConfig{Src: l.ClientBanned4, Dst: netip.AddrPortFrom(l.Server4, lab.EchoPort), N: 10, Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	good, err := l.OpenSessions(ctx, lab.SessionsConfig{Src: l.ClientLegit4, Dst: netip.AddrPortFrom(l.Server4, lab.EchoPort), N: 3, Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()

	session := "canopy-test-" + l.ID
	cmd := fmt.Sprintf("ip netns exec %s %s --iface %s --inject-iface %s --next-hop %s --state-dir %s",
		l.Name(lab.Sensor), bin, l.TapIface, l.InjectIface, l.RouterInject4, t.TempDir())
	tmux := func(args ...string) string {
		out, err := exec.Command("tmux", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	tmux("new-session", "-d", "-s", session, "-x", "140", "-y", "40", "env TERM=tmux-256color NO_COLOR=1 "+cmd)
	t.Cleanup(func() { exec.Command("tmux", "kill-session", "-t", session).Run() })
	screen := func() string { return tmux("capture-pane", "-p", "-t", session) }
	waitFor := func(what string, ok func(string) bool) string {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			s := screen()
			if ok(s) {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s; screen:\n%s", what, s)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	attacker := l.ClientBanned4.String()
	waitFor("the attacker in the talkers", func(s string) bool { return strings.Contains(s, attacker) })
	if bad.Alive() != 10 {
		t.Fatalf("banned sessions dying before the ban: %d alive", bad.Alive())
	}

	// Filter to the attacker so the selection is on it, ban it with the
	// form's defaults.
	tmux("send-keys", "-t", session, "/")
	tmux("send-keys", "-t", session, "-l", attacker)
	tmux("send-keys", "-t", session, "Enter")
	time.Sleep(300 * time.Millisecond)
	tmux("send-keys", "-t", session, "b")
	waitFor("the ban form", func(s string) bool { return strings.Contains(s, "Ban "+attacker) })
	tmux("send-keys", "-t", session, "Enter")
	banned := waitFor("the ban in the bans pane", func(s string) bool {
		return regexp.MustCompile(`(?m)^\s*▸?\s*` + regexp.QuoteMeta(attacker) + `\s+ban\s+tui`).MatchString(s)
	})

	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if alive := bad.WaitDead(wctx, 0); alive != 0 {
		t.Errorf("%d of 10 banned sessions still alive 5s after pressing b", alive)
	}
	if alive := good.Alive(); alive != 3 {
		t.Errorf("legitimate sessions alive: %d of 3", alive)
	}
	final := waitFor("confirmed blocks", func(s string) bool { return strings.Contains(s, "confirmed") })
	_ = banned

	// The layout golden: where each pane title sits on a 140×40 screen.
	layout := paneTitles(final)
	golden := filepath.Join("testdata", "dashboard-tmux.txt")
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(golden, []byte(final), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got, exp := layout, paneTitles(string(want)); got != exp {
		t.Errorf("dashboard layout changed:\n got %s\nwant %s\nscreen:\n%s", got, exp, final)
	}
	tmux("send-keys", "-t", session, "q")
}

// paneTitles reduces a screen to the rows of its fixed landmarks.
func paneTitles(screen string) string {
	var b strings.Builder
	for i, line := range strings.Split(screen, "\n") {
		for _, mark := range []string{" canopy ", "Top talkers", "Live blocks", "Bans ·"} {
			if strings.Contains(line, mark) {
				fmt.Fprintf(&b, "%d:%s ", i, strings.TrimSpace(mark))
			}
		}
	}
	return b.String()
}
