package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"canopy/capture"
	"canopy/inject"
	"canopy/lab"
	"canopy/rules"
	"canopy/sensor"
)

// canopy is a real sensor running on a lab's tap and inject ports, started
// the way sensor/lab_test.go starts one (and the daemon does): live
// TPACKET rings with the low-latency lane and 2 workers on the tap, a
// transmit socket on the inject port addressed to the router.
type canopy struct {
	e     *sensor.Engine
	store *rules.Store
	stop  func() error
}

// startCanopy starts a sensor in the lab's sensor namespace and waits until
// it captures. stateDir holds the rule store's files.
func startCanopy(l *lab.Lab, stateDir string) (*canopy, error) {
	var (
		src    *capture.Live
		sender *inject.PacketSender
		hop    *inject.NextHop
	)
	ctx, cancel := context.WithCancel(context.Background())
	err := l.Do(lab.Sensor, func() error {
		var err error
		if src, err = capture.OpenLive(capture.LiveConfig{Ifaces: []string{l.TapIface}, Workers: 2, Lane: true, Promiscuous: true}); err != nil {
			return err
		}
		if sender, err = inject.OpenSender(inject.DefaultSenderConfig(l.InjectIface)); err != nil {
			return err
		}
		hop, err = inject.NewNextHop(ctx, l.InjectIface, l.RouterInject4.String(), inject.DefaultRefresh)
		return err
	})
	closeAll := func() {
		if src != nil {
			src.Close()
		}
		if sender != nil {
			sender.Close()
		}
		if hop != nil {
			hop.Close()
		}
	}
	if err != nil {
		cancel()
		closeAll()
		return nil, fmt.Errorf("canopy on lab %s: %w", l.ID, err)
	}
	store, err := rules.Open(rules.Config{StateDir: stateDir, Logger: quietLog})
	if err != nil {
		cancel()
		closeAll()
		return nil, err
	}
	inj := sensor.Injection{Sender: sender, Iface: l.InjectIface, NextHop: hop, Ceiling: inject.NewCeiling(100000)}
	copy(inj.SrcMAC[:], sender.MAC())
	e, err := sensor.New(sensor.Config{Mode: sensor.ModeEnforce, Injection: inj, ConfirmAfter: 200 * time.Millisecond, Logger: quietLog}, src, store)
	if err != nil {
		cancel()
		closeAll()
		store.Close()
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	go store.Run(ctx)
	c := &canopy{e: e, store: store}
	c.stop = func() error {
		cancel()
		err := <-done
		closeAll()
		return errors.Join(err, store.Close())
	}
	for deadline := time.Now().Add(5 * time.Second); !e.Ready(); {
		if time.Now().After(deadline) {
			c.stop()
			return nil, errors.New("canopy: sensor not ready after 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return c, nil
}

// ban adds a ban through the store, as the API and the TUI do.
func (c *canopy) ban(value string) error {
	_, _, err := c.store.Add(rules.Request{Kind: rules.KindBan, Value: value, Origin: rules.OriginAPI, Reason: "benchmark"})
	return err
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
	// stdbuf: tcpkill prints one line per RST it sends; line-buffer them so
	// they can be counted even though it dies by signal.
	t.cmd = exec.Command("ip", "netns", "exec", ns, "stdbuf", "-oL", tcpkillBinary, "-i", l.TapIface, "host", banned)
	t.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := t.cmd.StdoutPipe()
	if err != nil {
		t.removeRoutes()
		return nil, err
	}
	stderr, err := t.cmd.StderrPipe()
	if err != nil {
		t.removeRoutes()
		return nil, err
	}
	if err := t.cmd.Start(); err != nil {
		t.removeRoutes()
		return nil, fmt.Errorf("tcpkill: %w", err)
	}
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case listening <- sc.Text():
			default:
			}
		}
	}()
	go func() {
		defer close(t.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), " R ") {
				t.resets.Add(1)
			}
		}
		t.cmd.Wait()
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
