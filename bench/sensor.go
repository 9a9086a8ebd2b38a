package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"canopy/capture"
	"canopy/config"
	"canopy/inject"
	"canopy/lab"
	"canopy/rules"
	"canopy/sensor"
)

// canopy is a real sensor running on a lab's tap and inject ports in a
// process of its own, as it runs in production: this program re-executed
// as `bench sensor-child` inside the lab's sensor namespace, where it
// starts the engine the way sensor/lab_test.go (and the daemon) does —
// live TPACKET rings with the low-latency lane and 2 workers on the tap, a
// transmit socket on the inject port addressed to the router. A separate
// process matters: the lab's client probes, echo server and delay line run
// in this one, and sharing a Go runtime (scheduler, GC) with them would
// charge their pauses to the sensor's reaction time. tcpkill gets the same
// treatment, being a process of its own.
type canopy struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string // the child's stdout, line by line; closed at EOF
	done  <-chan struct{}
}

// startCanopy starts the sensor child in the lab's sensor namespace and
// waits until it captures. rt is capture.worker_rt_priority (0: the
// shipped default, off).
func startCanopy(l *lab.Lab, stateDir string, rt int) (*canopy, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	c := &canopy{}
	c.cmd = exec.Command("ip", "netns", "exec", l.Name(lab.Sensor), exe, childArg,
		l.TapIface, l.InjectIface, l.RouterInject4.String(), stateDir, fmt.Sprint(rt))
	c.cmd.Stderr = os.Stderr
	// The child dies with this process, whatever happens to it.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if c.in, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	c.cmd.Stdout = w
	done, err := startPinned(c.cmd)
	w.Close()
	if err != nil {
		stdout.Close()
		return nil, fmt.Errorf("canopy sensor process: %w", err)
	}
	c.done = done
	c.lines = make(chan string, 16)
	go func() {
		defer close(c.lines)
		defer stdout.Close()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<16), 1<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	line, err := c.reply(10 * time.Second)
	if err != nil || line != "ready" {
		c.kill()
		return nil, fmt.Errorf("canopy sensor process did not start: %q %v", line, err)
	}
	return c, nil
}

// reply reads the child's next line.
func (c *canopy) reply(limit time.Duration) (string, error) {
	select {
	case line, ok := <-c.lines:
		if !ok {
			return "", errors.New("sensor process ended")
		}
		return line, nil
	case <-time.After(limit):
		return "", fmt.Errorf("sensor process silent for %v", limit)
	}
}

// call sends one command line and returns the reply ("ok …" or "err …").
func (c *canopy) call(cmd string) (string, error) {
	if _, err := fmt.Fprintln(c.in, cmd); err != nil {
		return "", err
	}
	line, err := c.reply(10 * time.Second)
	if err != nil {
		return "", err
	}
	if rest, ok := strings.CutPrefix(line, "err "); ok {
		return "", fmt.Errorf("sensor: %s", rest)
	}
	return strings.TrimPrefix(line, "ok "), nil
}

// ban adds a ban through the sensor's rule store, as the API and the TUI do.
func (c *canopy) ban(value string) error {
	_, err := c.call("ban " + value)
	return err
}

// status returns the sensor's status (enforcement and capture counters)
// from a fresh snapshot.
func (c *canopy) status() (sensor.Status, error) {
	var st sensor.Status
	line, err := c.call("status")
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal([]byte(line), &st)
}

// block returns the sensor's latest record of the blocked flow whose
// client used port (nil if it has none: it never reset that flow).
func (c *canopy) block(port uint16) (*sensor.Block, error) {
	line, err := c.call(fmt.Sprint("block ", port))
	if err != nil || line == "none" {
		return nil, err
	}
	var b sensor.Block
	return &b, json.Unmarshal([]byte(line), &b)
}

// stop shuts the sensor down and waits for the process.
func (c *canopy) stop() error {
	_, err := c.call("quit")
	c.in.Close()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		c.kill()
		return errors.New("sensor process did not exit")
	}
	return err
}

func (c *canopy) kill() {
	if c.cmd.Process != nil {
		c.cmd.Process.Kill()
	}
	c.in.Close()
	<-c.done
}

// childArg is the hidden first argument that turns this program into the
// sensor process.
const childArg = "sensor-child"

// sensorChild is the sensor process: args are tap, inject port, next hop,
// state directory and capture.worker_rt_priority; it runs in the sensor namespace (ip netns exec).
// It answers one line per command read from stdin: "ban VALUE" → "ok",
// "status" → "ok {sensor.Status JSON}", "block PORT" → "ok {sensor.Block
// JSON}" of the flow whose client used PORT, or "ok none", "quit" → "ok"
// and exit.
func sensorChild(args []string) error {
	if len(args) != 5 {
		return errors.New("sensor-child TAP INJECT NEXTHOP STATEDIR RTPRIO")
	}
	tap, injIface, nextHop, stateDir := args[0], args[1], args[2], args[3]
	rt, err := strconv.Atoi(args[4])
	if err != nil {
		return fmt.Errorf("sensor-child: RTPRIO %q: %w", args[4], err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, err := capture.OpenLive(capture.LiveConfig{Ifaces: []string{tap}, Workers: 2, Lane: true, Promiscuous: true})
	if err != nil {
		return err
	}
	defer src.Close()
	sender, err := inject.OpenSender(inject.DefaultSenderConfig(injIface))
	if err != nil {
		return err
	}
	defer sender.Close()
	hop, err := inject.NewNextHop(ctx, injIface, nextHop, inject.DefaultRefresh)
	if err != nil {
		return err
	}
	defer hop.Close()
	store, err := rules.Open(rules.Config{StateDir: stateDir, Logger: quietLog})
	if err != nil {
		return err
	}
	defer store.Close()
	// The sensor runs with canopy's shipped defaults (config.Default): the
	// injection ceiling and the capture workers' priority among them.
	def := config.Default()
	inj := sensor.Injection{Sender: sender, Iface: injIface, NextHop: hop, Ceiling: inject.NewCeiling(def.Inject.MaxPPS)}
	copy(inj.SrcMAC[:], sender.MAC())
	e, err := sensor.New(sensor.Config{Mode: sensor.ModeEnforce, Injection: inj, ConfirmAfter: 200 * time.Millisecond,
		MaxResetsPerFlow: def.Inject.MaxResetsPerFlow, WorkerNice: def.Capture.WorkerNice, WorkerRTPriority: rt, PrefaultFlows: true, Logger: quietLog}, src, store)
	if err != nil {
		return err
	}
	defer e.ReserveProcs()() // as the canopy command does: the sensor owns this process
	// Keep the latest record of every blocked flow by its client port, so
	// the benchmark can ask what happened to a connection that leaked.
	var (
		blocksMu sync.Mutex
		blocks   = make(map[uint16]sensor.Block)
	)
	events, unsubscribe := e.Subscribe()
	defer unsubscribe()
	go func() {
		for ev := range events {
			if ev.Block != nil {
				blocksMu.Lock()
				blocks[ev.Block.SrcPort] = *ev.Block
				blocksMu.Unlock()
			}
		}
	}()
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	go store.Run(ctx)
	for deadline := time.Now().Add(5 * time.Second); !e.Ready(); {
		if time.Now().After(deadline) {
			return errors.New("sensor not ready after 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		switch cmd {
		case "ban":
			if _, _, err := store.Add(rules.Request{Kind: rules.KindBan, Value: arg, Origin: rules.OriginAPI, Reason: "benchmark"}); err != nil {
				fmt.Println("err", err)
				continue
			}
			fmt.Println("ok")
		case "status":
			rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
			st := e.Refresh(rctx).Status
			rcancel()
			b, _ := json.Marshal(st)
			fmt.Println("ok", string(b))
		case "block":
			port, err := strconv.ParseUint(arg, 10, 16)
			if err != nil {
				fmt.Println("err block PORT:", err)
				continue
			}
			blocksMu.Lock()
			b, ok := blocks[uint16(port)]
			blocksMu.Unlock()
			if !ok {
				fmt.Println("ok none")
				continue
			}
			j, _ := json.Marshal(b)
			fmt.Println("ok", string(j))
		case "quit":
			cancel()
			err := <-done
			if err != nil {
				fmt.Println("err", err)
			} else {
				fmt.Println("ok")
			}
			return err
		default:
			fmt.Println("err unknown command", cmd)
		}
	}
	cancel()
	return <-done
}

// quietLog drops the components' operational logs so the table stays
// readable; errors surface through return values.
var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// tcpkill is dsniff's tcpkill running in the lab's sensor namespace on the
// tap, killing connections of one host.
type tcpkill struct {
	cmd    *exec.Cmd
	l      *lab.Lab
	resets atomic.Int64 // RST lines tcpkill printed
	done   chan struct{}
	routes []string
	addr   string    // the placeholder address given to the tap, if any
	ready  time.Time // when tcpkill said it was listening
}

// tcpkillBinary is Debian's dsniff tcpkill.
const tcpkillBinary = "/usr/sbin/tcpkill"

// startTcpkill runs `tcpkill -i TAP host BANNED` in the sensor namespace
// and returns once it says it is listening and settle has passed.
// tcpkill injects through a libnet raw IPv4 socket, i.e. through the
// kernel's routing table, so the sensor namespace (which has only its
// inject subnet) first gets routes to the client and server subnets via the
// router's inject address: the same port and next hop canopy injects
// through. The routes are removed again by stop.
func startTcpkill(l *lab.Lab, banned string, settle time.Duration) (*tcpkill, error) {
	if _, err := os.Stat(tcpkillBinary); err != nil {
		return nil, fmt.Errorf("tcpkill: %w (apt-get install dsniff)", err)
	}
	ns := l.Name(lab.Sensor)
	t := &tcpkill{l: l, done: make(chan struct{})}
	for _, subnet := range []string{prefix24(l.ClientBanned4.String()), prefix24(l.Server4.String())} {
		if out, err := exec.Command("ip", "-n", ns, "route", "add", subnet, "via", l.RouterInject4.String()).CombinedOutput(); err != nil {
			t.removeRoutes()
			return nil, fmt.Errorf("tcpkill: route %s in %s: %v: %s", subnet, ns, err, out)
		}
		t.routes = append(t.routes, subnet)
	}
	if out, err := exec.Command("ip", "-n", ns, "addr", "add", tapPlaceholder, "dev", l.TapIface).CombinedOutput(); err != nil {
		t.removeRoutes()
		return nil, fmt.Errorf("tcpkill: address on %s in %s: %v: %s", l.TapIface, ns, err, out)
	}
	t.addr = tapPlaceholder
	t.cmd = exec.Command("ip", "netns", "exec", ns, tcpkillBinary, "-i", l.TapIface, "host", banned)
	t.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stderr, w, err := os.Pipe()
	if err != nil {
		t.removeRoutes()
		return nil, err
	}
	t.cmd.Stderr = w
	exited, err := startPinned(t.cmd)
	w.Close()
	if err != nil {
		stderr.Close()
		t.removeRoutes()
		return nil, fmt.Errorf("tcpkill: %w", err)
	}
	listening := make(chan string, 1)
	// tcpkill reports on stderr (warnx): first "listening on …", then one
	// line per RST it sends ("A:p > B:q: R seq:seq(0) win 0").
	errEOF := make(chan struct{})
	go func() {
		defer close(errEOF)
		defer stderr.Close()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), ": R ") {
				t.resets.Add(1)
				continue
			}
			select {
			case listening <- sc.Text():
			default:
			}
		}
	}()
	go func() { // tcpkill is done when its output ended and it exited
		<-errEOF
		<-exited
		close(t.done)
	}()
	select {
	case line := <-listening:
		t.ready = time.Now()
		if !strings.Contains(line, "listening") {
			t.stop()
			return nil, fmt.Errorf("tcpkill: %s", line)
		}
	case <-t.done:
		t.removeRoutes()
		return nil, errors.New("tcpkill exited at start")
	case <-time.After(5 * time.Second):
		t.stop()
		return nil, errors.New("tcpkill: no 'listening' after 5s")
	}
	time.Sleep(settle)
	return t, nil
}

// stop ends tcpkill (its process group, which this program started) and
// removes the routes it needed.
func (t *tcpkill) stop() {
	if t.cmd.Process != nil {
		syscall.Kill(-t.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-t.done:
		case <-time.After(3 * time.Second):
			syscall.Kill(-t.cmd.Process.Pid, syscall.SIGKILL)
			<-t.done
		}
	}
	t.removeRoutes()
}

func (t *tcpkill) removeRoutes() {
	if t.addr != "" {
		exec.Command("ip", "-n", t.l.Name(lab.Sensor), "addr", "del", t.addr, "dev", t.l.TapIface).Run()
		t.addr = ""
	}
	for _, subnet := range t.routes {
		exec.Command("ip", "-n", t.l.Name(lab.Sensor), "route", "del", subnet).Run()
	}
	t.routes = nil
}

// tapPlaceholder is the address tcpkill's libpcap needs on the tap.
const tapPlaceholder = "192.0.2.254/32"

// prefix24 turns an IPv4 address into its /24 ("10.77.1.10" → "10.77.1.0/24").
func prefix24(ip string) string {
	i := strings.LastIndexByte(ip, '.')
	return ip[:i] + ".0/24"
}

// startPinned starts cmd from a goroutine locked to its OS thread for the
// child's whole life and returns a channel closed once it exited (Wait
// returned). Pdeathsig fires when the *thread* that forked the child dies,
// and the Go runtime may retire threads; pinning keeps the child alive for
// as long as this process is.
func startPinned(cmd *exec.Cmd) (<-chan struct{}, error) {
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer close(done)
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
	}()
	return done, <-started
}
