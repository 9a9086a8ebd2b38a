package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"canopy/lab"
)

var update = flag.Bool("update", false, "rewrite testdata/dashboard-tmux.txt from this run")

func TestClientTargetFlags(t *testing.T) {
	dir := t.TempDir()
	tf := filepath.Join(dir, "tokens")
	os.WriteFile(tf, []byte("# ops\nsoar:3f0c9d2e8b7a4c1f:ro\n"), 0o600)
	addr, token, rest, err := clientTarget([]string{"10.0.0.1", "--api", "127.0.0.1:9", "--for", "1h", "--token-file=" + tf, "--json"})
	if err != nil {
		t.Fatal(err)
	}
	if addr != "127.0.0.1:9" || token != "3f0c9d2e8b7a4c1f" || strings.Join(rest, " ") != "10.0.0.1 --for 1h --json" {
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

// buildCanopy compiles the binary once per test.
func buildCanopy(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "canopy")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// daemon is a `canopy --daemon` process in a lab's sensor namespace.
type daemon struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{} // closed when the process has exited
}

func startDaemon(t *testing.T, l *lab.Lab, bin string, args ...string) *daemon {
	t.Helper()
	full := append([]string{"netns", "exec", l.Name(lab.Sensor), bin, "--daemon", "--log-format", "text",
		"--iface", l.TapIface, "--inject-iface", l.InjectIface, "--next-hop", l.RouterInject4.String()}, args...)
	d := &daemon{cmd: exec.Command("ip", full...), logs: new(syncBuffer), done: make(chan struct{})}
	d.cmd.Stderr = d.logs
	d.cmd.Stdout = new(bytes.Buffer)
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.done
	})
	return d
}

// cli runs a client command in the sensor namespace (where the daemon's
// loopback API listens).
func cli(t *testing.T, l *lab.Lab, bin string, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", l.Name(lab.Sensor), bin}, args...)...).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// TestDaemonLifecycle runs the real binary headless: a ban through the CLI
// resets the banned client's sessions; SIGHUP with a broken config keeps
// the running one; SIGTERM exits within 2 s; the ban survives a restart.
func TestDaemonLifecycle(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for the lab's namespaces (CI runs as root)")
	}
	bin := buildCanopy(t)
	l := lab.NewT(t, lab.Config{})
	state := t.TempDir()
	conf := filepath.Join(t.TempDir(), "canopy.toml")
	os.WriteFile(conf, []byte("[[rules.allow]]\nvalue = \""+l.ClientLegit4.String()+"\"\ncomment = \"trading partner\"\n"), 0o600)
	api := "--api=127.0.0.1:7851"
	d := startDaemon(t, l, bin, "--config", conf, "--state-dir", state, api)

	ready := func() {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if out, code := cli(t, l, bin, "status", api); code == 0 && strings.Contains(out, "ready") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("daemon not ready; logs:\n%s", d.logs)
			}
		}
	}
	ready()

	ctx := context.Background()
	bad, err := l.OpenSessions(ctx, lab.SessionsConfig{Src: l.ClientBanned4, Dst: netip.AddrPortFrom(l.Server4, lab.EchoPort), N: 10, Interval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	good, err := l.OpenSessions(ctx, lab.SessionsConfig{Src: l.ClientLegit4, Dst: netip.AddrPortFrom(l.Server4, lab.EchoPort), N: 3, Interval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	time.Sleep(300 * time.Millisecond)

	if out, code := cli(t, l, bin, "ban", l.ClientBanned4.String(), "--for", "1h", "--reason", "daemon test", api); code != 0 {
		t.Fatalf("canopy ban: exit %d\n%s", code, out)
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if alive := bad.WaitDead(wctx, 0); alive != 0 {
		t.Errorf("%d of 10 banned sessions alive after the CLI ban", alive)
	}
	if good.Alive() != 3 {
		t.Errorf("legitimate sessions alive %d of 3", good.Alive())
	}
	// The allowlist from the config wins, with a message naming the entry.
	if out, code := cli(t, l, bin, "ban", l.ClientLegit4.String(), api); code == 0 || !strings.Contains(out, "trading partner") {
		t.Errorf("banning an allowlisted address: exit %d, %q", code, out)
	}

	// SIGHUP with a broken config: rejected, the daemon keeps running.
	os.WriteFile(conf, []byte("[rules]\nmax_prefix_v5 = 3\n"), 0o600)
	d.cmd.Process.Signal(syscall.SIGHUP)
	time.Sleep(500 * time.Millisecond)
	if !strings.Contains(d.logs.String(), "reload rejected") {
		t.Errorf("broken config on SIGHUP not reported; logs:\n%s", d.logs)
	}
	if out, code := cli(t, l, bin, "status", api); code != 0 || !strings.Contains(out, "ready") {
		t.Fatalf("daemon not healthy after a rejected reload: %d %s", code, out)
	}

	// SIGTERM: gone within 2 s.
	start := time.Now()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		t.Logf("SIGTERM → exit in %v", time.Since(start))
	case <-time.After(2 * time.Second):
		t.Fatalf("still running 2s after SIGTERM; logs:\n%s", d.logs)
	}

	// Restart on the same state: the ban is there.
	os.WriteFile(conf, []byte("mode = \"enforce\"\n"), 0o600)
	startDaemon(t, l, bin, "--config", conf, "--state-dir", state, api)
	ready()
	out, code := cli(t, l, bin, "bans", "--json", api)
	if code != 0 || !strings.Contains(out, l.ClientBanned4.String()) || !strings.Contains(out, "daemon test") {
		t.Errorf("after restart, bans: exit %d\n%s", code, out)
	}
}

// syncBuffer is a bytes.Buffer the daemon's stderr copier writes while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDaemonBlocksUnderAPILoad hammers the daemon's API with ban writes
// and status reads while a banned client keeps connecting: blocking must
// keep working (nothing leaks, the legitimate client is untouched) and the
// API must answer every request.
func TestDaemonBlocksUnderAPILoad(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for the lab's namespaces (CI runs as root)")
	}
	bin := buildCanopy(t)
	l := lab.NewT(t, lab.Config{Delay: 10 * time.Millisecond})
	addr := "127.0.0.1:7853"
	startDaemon(t, l, bin, "--state-dir", t.TempDir(), "--api", addr, "--log-level", "warn")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if out, code := cli(t, l, bin, "status", "--api", addr); code == 0 && strings.Contains(out, "ready") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("daemon not ready")
		}
	}
	if out, code := cli(t, l, bin, "ban", l.ClientBanned4.String(), "--api", addr); code != 0 {
		t.Fatalf("ban: %s", out)
	}

	// The API listens on the sensor namespace's loopback: dial there.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 16,
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			var c net.Conn
			err := l.Do(lab.Sensor, func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, a)
				return err
			})
			return c, err
		},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	var (
		mu       sync.Mutex
		lat      []time.Duration
		errs     int
		requests int
	)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				var req *http.Request
				if i%2 == 0 { // TEST-NET-3 and benchmarking addresses: never the lab's
					body := fmt.Sprintf(`{"value":"198.18.%d.%d","ttl":"10m","reason":"load"}`, g, i%250+1)
					req, _ = http.NewRequestWithContext(ctx, "POST", "http://"+addr+"/v1/bans", strings.NewReader(body))
				} else {
					req, _ = http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/v1/status", nil)
				}
				start := time.Now()
				resp, err := client.Do(req)
				if ctx.Err() != nil {
					return
				}
				d := time.Since(start)
				mu.Lock()
				requests++
				if err != nil || resp.StatusCode >= 300 {
					errs++
				} else {
					lat = append(lat, d)
				}
				mu.Unlock()
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	banned, err := l.Probe(ctx, lab.ProbeConfig{Src: l.ClientBanned4, Dst: netip.AddrPortFrom(l.Server4, lab.EchoPort), Conns: 300, Rate: 150, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	legit, err := l.Probe(context.Background(), lab.ProbeConfig{Src: l.ClientLegit4, Dst: netip.AddrPortFrom(l.Server4, lab.EchoPort), Conns: 100, Rate: 100, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	wg.Wait()
	slices.Sort(lat)
	if len(lat) == 0 {
		t.Fatal("no API request succeeded")
	}
	t.Logf("API under load: %d requests (%.0f/s), p50 %v, p99 %v, %d errors; banned %+v; legit completed %d of %d",
		requests, float64(requests)/4, lat[len(lat)/2], lat[len(lat)*99/100], errs, banned, legit.Completed, legit.Total())
	if errs != 0 {
		t.Errorf("%d API requests failed", errs)
	}
	if got := l.Echo.Count(l.ClientBanned4); got.Requests != 0 {
		t.Errorf("under API load the server read %d lines from the banned client", got.Requests)
	}
	if banned.Completed != 0 {
		t.Errorf("%d banned connections completed", banned.Completed)
	}
	if legit.Completed != legit.Total() {
		t.Errorf("legitimate client disturbed: %+v", legit)
	}
}

// logrotate renames the --events file: later events must go to a new file
// at the path, and the ones before the rename stay in the rotated one.
func TestEventsFileFollowsRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	f, err := openEventsFile(path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.every, f.next = 0, time.Time{} // look at the path on every write
	f.Write([]byte("one\n"))
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("two\n"))
	old, _ := os.ReadFile(path + ".1")
	cur, err := os.ReadFile(path)
	if err != nil || string(old) != "one\n" || string(cur) != "two\n" {
		t.Fatalf("rotated file %q, new file %q (%v)", old, cur, err)
	}
}
