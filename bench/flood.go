package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"canopy/lab"
	"canopy/sensor"
)

// synFloodConfig is trafgen's SYN flood: 54-byte IPv4 SYNs from random
// source addresses and ports to one server port, every frame a new flow.
// The addresses are only ever written into the lab's tap cable.
const synFloodConfig = `{
  eth(da=02:00:00:00:00:02, sa=02:00:00:00:00:01),
  ipv4(saddr=drnd(), daddr=10.99.2.2, ttl=64),
  tcp(sport=drnd(), dport=443, seq=drnd(), syn),
}
`

// runFlood floods a real sensor with SYNs of new flows, the attack its
// flow tables must ride out: canopy's sensor process (as in the block
// benchmark: live rings with the lane, 2 workers, tables of 1M flows in
// all, prefaulted) on the lab's mirror port while trafgen writes SYNs
// into the tap cable, more flows than the tables hold, so that every SYN
// past the first million evicts a flow. It reports what the sensor saw and
// dropped, and the sensor process's CPU time per frame.
func runFlood(ctx context.Context, o *options) ([]*Section, error) {
	cmd := o.command("flood")
	s := &Section{Name: "flood", Title: "SYN flood: a real sensor tracking a million new flows and more",
		Target:  "never stop tracking new flows, never grow without bound (issue 4); no frame lost to a worker that cannot keep up",
		Columns: []string{"generator", "SYNs sent", "arrived at tap", "sensor captured", "kernel drops (bulk)", "lane delivered", "lane drops", "flows tracked after", "sensor CPU per SYN", "send rate"},
		Key:     1}
	ks := &Section{Name: "flood", Title: "Ban → death of 100 live sessions during a SYN flood",
		Target:  "as without a flood (kill): all 100 dead within 10 ms of the ban (p99); legitimate sessions untouched",
		Columns: []string{"flood", "flows tracked at the ban", "sessions", "dead", "p50", "p99", "max", "causes", "legit killed", "kernel drops during the flood"},
		Key:     1}
	secs := []*Section{s, ks}
	if _, err := exec.LookPath("trafgen"); err != nil {
		return secs[:1], fmt.Errorf("trafgen not found (apt-get install netsniff-ng): %w", err)
	}
	n, lead := 3_000_000, 4*time.Second
	if o.quick {
		n, lead = 300_000, time.Second
	}
	l, err := lab.New(lab.Config{Prefix: labPrefix})
	if err != nil {
		return secs[:1], err
	}
	defer l.Close()
	dir, cfgPath, err := trafgenFile("flood", synFloodConfig)
	if err != nil {
		return secs[:1], err
	}
	defer os.RemoveAll(dir)
	c, err := startCanopy(l, filepath.Join(dir, "state"), 0)
	if err != nil {
		return secs[:1], err
	}
	runErr := func() error {
		for _, r := range []struct {
			label string
			cpus  int
		}{{"trafgen full speed, 1 CPU", 1}, {"trafgen full speed, 2 CPUs", 2}} {
			progress("flood: %s, %d SYNs…", r.label, n)
			st0, err := c.status()
			if err != nil {
				return err
			}
			cpu0, err := procCPU(c.cmd.Process.Pid)
			if err != nil {
				return err
			}
			g, err := blast(ctx, l, "flood", cfgPath, n, 0, r.cpus)
			if err != nil {
				return fmt.Errorf("%s: %w", r.label, err)
			}
			cpu1, err := procCPU(c.cmd.Process.Pid)
			if err != nil {
				return err
			}
			st1, err := c.status()
			if err != nil {
				return err
			}
			s.add(cmd, r.label, fmt.Sprint(g.sent), fmt.Sprint(g.arrived),
				fmt.Sprint(st1.Capture.Packets-st0.Capture.Packets), fmt.Sprint(st1.Capture.Drops-st0.Capture.Drops),
				fmt.Sprint(st1.Capture.LanePackets-st0.Capture.LanePackets), fmt.Sprint(laneDrops(st1)-laneDrops(st0)),
				fmt.Sprint(st1.Flows), fmt.Sprintf("%.0f ns", float64(cpu1-cpu0)/float64(max(g.arrived, 1))),
				fmt.Sprintf("%.0f pps", float64(g.sent)/g.elapsed.Seconds()))
		}
		return floodKill(ctx, l, c, ks, cmd, cfgPath, n, lead)
	}()
	if err := errors.Join(runErr, c.stop()); err != nil {
		return secs, err
	}
	s.note("Setup: a fresh lab; canopy's sensor in a process of its own in the sensor namespace, with the shipped defaults (as in the block benchmark: live TPACKET_V3 rings with fanout and the low-latency lane, 2 workers, 1,048,576 flows in all, prefaulted at start). "+
		"The generator is `trafgen --dev r-tap --cpus C -n N` in the router namespace writing %d 54-byte IPv4 SYNs from random source addresses and ports to 10.99.2.2:443 into the tap cable, so they arrive on the mirror port as a mirrored SYN flood would: about three times the flows the tables hold, so each SYN after the first million creates a flow by evicting one. "+
		"Every SYN passes the lane's filter, so each is handled through the lane and its bulk copy is recognised as a duplicate. "+
		"sensor captured = frames the bulk sockets received (kernel count, drops included); kernel drops are the bulk rings' and lane drops the lane rings' (PACKET_STATISTICS); flows tracked after = live flows in the tables once the flood ended (at most 1,048,576). "+
		"sensor CPU per SYN = the sensor process's user and system CPU time (/proc/PID/stat) over the run, a second for the rings to drain included, divided by the SYNs that arrived. The generator and the sensor share this machine's 2 CPUs.", n)
	ks.note("The same sensor, after the runs above, with its tables full of their flows: %d sessions from the banned address to the echo server each send one line per 50 ms (lab.OpenSessions), plus %d from the legitimate address, as in the kill benchmark. "+
		"500 ms later trafgen (2 CPUs, full speed) starts another flood of %d SYNs; %v into it the address is banned (rules.Store.Add, answered with a proactive kill from the flow table's last numbers, so the sessions' flows must have outlived the flood's evictions: a session whose flow was evicted would die only at its next line, up to 50 ms later, reset from a flow made anew). "+
		"flows tracked at the ban = live flows in the tables just before it; latency = when each session's reader or writer first saw the error − ban time; kernel drops are the bulk and lane rings' during the whole flood.", killN, killLegit, n, lead)
	return secs, nil
}

// floodKill opens live sessions, floods the sensor, bans the sessions'
// address in the middle of the flood, and adds the kill's row to ks.
func floodKill(ctx context.Context, l *lab.Lab, c *canopy, ks *Section, cmd, cfgPath string, n int, lead time.Duration) error {
	progress("flood: %d live sessions, then %d SYNs, banned %v into the flood…", killN, n, lead)
	st0, err := c.status()
	if err != nil {
		return err
	}
	var (
		flows    int
		floodErr error
		flooded  = make(chan error, 1)
	)
	cells, err := killSessions(ctx, l, func() (time.Time, func(), error) {
		go func() {
			_, err := blast(ctx, l, "flood", cfgPath, n, 0, 2)
			flooded <- err
		}()
		wait := func() { floodErr = <-flooded }
		time.Sleep(lead)
		st, err := c.status()
		if err != nil {
			return time.Time{}, wait, err
		}
		flows = st.Flows
		return time.Now(), wait, c.ban(l.ClientBanned4.String())
	})
	if err := errors.Join(err, floodErr); err != nil {
		return err
	}
	st1, err := c.status()
	if err != nil {
		return err
	}
	drops := st1.Capture.Drops - st0.Capture.Drops + laneDrops(st1) - laneDrops(st0)
	ks.add(cmd, append(append([]string{fmt.Sprintf("%d SYNs, 2 generator CPUs", n), fmt.Sprint(flows)}, cells...), fmt.Sprint(drops))...)
	return nil
}

// laneDrops is the frames the kernel dropped from the lane rings.
func laneDrops(st sensor.Status) (d uint64) {
	for _, so := range st.Capture.Sockets {
		if so.Lane {
			d += so.Drops
		}
	}
	return d
}

// procCPU is the user and system CPU time process pid has used, all its
// threads together.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14 and stime 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	var ticks uint64
	for _, s := range f[11:13] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on every Linux
// architecture Go supports.
const clockTicks = 100
