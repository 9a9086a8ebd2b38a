// Command canopy is an out-of-band network blocker: it reads a mirror
// (SPAN/TAP) port, and kills banned sessions by injecting exact-sequence TCP
// resets (ICMP unreachables for UDP) toward both ends.
//
// This file holds the command line: flags, subcommands and help. The parts
// are wired in stack.go (sensor), daemon.go, dashboard.go and demo.go.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"canopy/api"
	"canopy/config"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `canopy — out-of-band network blocker

Usage:
  canopy [flags]                 interactive dashboard (sensor in-process)
  canopy --daemon [flags]        headless: JSON logs, HTTP API, metrics, block file
  canopy --read FILE.pcap        replay a capture (no privileges needed)
  canopy --attach ADDR           dashboard on a running daemon's API
  canopy demo [--daemon]         throw-away lab with live traffic (root)
  canopy ban IP|CIDR [--for 1h] [--reason TEXT] [--observe] [--force] [--json]
  canopy unban ID|IP|CIDR [--json]
  canopy bans [--json] [--contains IP] [--origin ORIGIN] [--kind ban|acl|allow]
  canopy status [--json]
  canopy talkers [--by src|dst|pair|port|srcnet] [--window 2s|10s|40s] [-n 20] [--json]
  canopy flows IP|CIDR [--max 100] [--json]
  canopy check-config --config FILE
  canopy version

The client commands (ban, unban, bans, status, talkers, flows) talk to the daemon at --api
(default 127.0.0.1:7850) with the token in $CANOPY_API_TOKEN or
--token-file. They print tables, or JSON with --json, and exit non-zero with
the API's error message on failure.

Flags (they override the config file):
`

// options are the command-line flags.
type options struct {
	daemon      bool
	configPath  string
	ifaces      multiFlag
	injectIface string
	nextHop     string
	blockFile   string
	apiAddr     string
	tokenFile   string
	stateDir    string
	dryRun      bool
	readFile    string
	replaySpeed float64
	attach      string
	workers     int
	logFormat   string
	logLevel    string
	eventsFile  string
	delay       time.Duration // demo only
	set         map[string]bool
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

func newFlagSet(name string, o *options, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.BoolVar(&o.daemon, "daemon", false, "run headless: JSON logs, HTTP API, metrics, block-file watch")
	fs.StringVar(&o.configPath, "config", "", "TOML config `file` (see config.toml.example)")
	fs.Var(&o.ifaces, "iface", "`NAME` of a mirror (SPAN/TAP) port to capture on; repeat for several")
	fs.StringVar(&o.injectIface, "inject-iface", "", "`NAME` of the port resets leave by; empty: reflect on the capture port")
	fs.StringVar(&o.nextHop, "next-hop", "", "layer-2 destination of injected frames: `IP|MAC` (IP resolved via the neighbour table)")
	fs.StringVar(&o.blockFile, "block-file", "", "watched `file` of addresses to ban, one per line")
	fs.StringVar(&o.apiAddr, "api", "127.0.0.1:7850", "HTTP API `address` (daemon: listen; client commands: connect)")
	fs.StringVar(&o.tokenFile, "api-token-file", "", "bearer tokens for the API, one `file` line each: name:token[:ro]")
	fs.StringVar(&o.tokenFile, "token-file", "", "alias of --api-token-file for the client commands (first token is used)")
	fs.StringVar(&o.stateDir, "state-dir", "", "where bans and the audit log persist (`DIR`, default /var/lib/canopy)")
	fs.BoolVar(&o.dryRun, "dry-run", false, "observe mode: log \"would block\" with full detail, send nothing")
	fs.StringVar(&o.readFile, "read", "", "read frames from a pcap/pcapng `file` instead of a live port")
	fs.Float64Var(&o.replaySpeed, "replay-speed", 0, "with --read: 1 = real time, 2 = twice as fast, 0 = as fast as possible")
	fs.StringVar(&o.attach, "attach", "", "dashboard only: watch the daemon at this API `address` instead of capturing")
	fs.IntVar(&o.workers, "workers", 0, "capture workers (0: one per CPU)")
	fs.StringVar(&o.logFormat, "log-format", "", "daemon logs: json or text")
	fs.StringVar(&o.logLevel, "log-level", "", "debug, info, warn or error")
	fs.StringVar(&o.eventsFile, "events", "", "also append JSON-lines events to this `file`")
	if name == "demo" {
		fs.DurationVar(&o.delay, "delay", time.Millisecond, "one-way delay between the lab's client and router")
	}
	fs.Usage = func() {
		fmt.Fprint(out, usage)
		fs.PrintDefaults()
	}
	return fs
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cmd := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "version":
		fmt.Fprintln(stdout, "canopy", version)
		return 0
	case "ban", "unban", "bans", "status", "talkers", "flows":
		return runClient(ctx, cmd, args, stdout, stderr)
	case "", "demo", "check-config":
	default:
		fmt.Fprintf(stderr, "canopy: unknown command %q (see canopy --help)\n", cmd)
		return 2
	}

	var o options
	fs := newFlagSet(cmd, &o, stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "canopy: unexpected argument %q (see canopy --help)\n", fs.Arg(0))
		return 2
	}
	o.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })

	cfg, err := loadConfig(&o)
	if err != nil {
		fmt.Fprintln(stderr, "canopy:", err)
		return 1
	}
	switch {
	case cmd == "check-config":
		if o.configPath == "" {
			fmt.Fprintln(stderr, "canopy: check-config needs --config FILE")
			return 2
		}
		fmt.Fprintf(stdout, "# %s is valid; effective configuration (flags applied):\n%s", o.configPath, cfg.TOML())
		return 0
	case cmd == "demo":
		err = runDemo(ctx, cfg, &o, stdout, stderr)
	case o.attach != "":
		err = runAttach(ctx, cfg, &o)
	case o.daemon:
		err = runDaemon(ctx, cfg, &o, stdout, stderr)
	default:
		err = runDashboard(ctx, cfg, &o, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "canopy:", err)
		return 1
	}
	return 0
}

// loadConfig reads the config file (if any) and lays the flags over it.
func loadConfig(o *options) (config.Config, error) {
	cfg := config.Default()
	if o.configPath != "" {
		var err error
		if cfg, err = config.Load(o.configPath); err != nil {
			return cfg, err
		}
	}
	applyFlags(&cfg, o)
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("after applying flags: %w", err)
	}
	return cfg, nil
}

// applyFlags overrides the configuration with the flags that were given.
func applyFlags(cfg *config.Config, o *options) {
	if o.set["iface"] {
		cfg.Capture.Interfaces = o.ifaces
	}
	if o.set["inject-iface"] {
		cfg.Inject.Interface = o.injectIface
	}
	if o.set["next-hop"] {
		cfg.Inject.NextHop = o.nextHop
	}
	if o.set["block-file"] {
		cfg.Rules.BlockFile = o.blockFile
	}
	if o.set["api"] {
		cfg.API.Listen = o.apiAddr
	}
	if o.set["api-token-file"] || o.set["token-file"] {
		cfg.API.TokenFile = o.tokenFile
	}
	if o.set["state-dir"] {
		cfg.Rules.StateDir = o.stateDir
	}
	if o.dryRun {
		cfg.Mode = "observe"
	}
	if o.set["workers"] {
		cfg.Capture.Workers = o.workers
	}
	if o.set["log-format"] {
		cfg.Log.Format = o.logFormat
	}
	if o.set["log-level"] {
		cfg.Log.Level = o.logLevel
	}
	if o.set["events"] {
		cfg.Log.EventsFile = o.eventsFile
	}
}

// runClient runs ban/unban/bans/status/talkers/flows against a daemon's API.
func runClient(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) int {
	addr, token, rest, err := clientTarget(args)
	if err != nil {
		fmt.Fprintln(stderr, "canopy:", err)
		return 2
	}
	return api.RunCLI(ctx, append([]string{cmd}, rest...), stdout, stderr, addr, token)
}

// clientTarget takes --api and --token-file out of a client command's
// arguments; the token may also come from $CANOPY_API_TOKEN.
func clientTarget(args []string) (addr, token string, rest []string, err error) {
	addr = api.DefaultAddr
	tokenFile := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || (name != "api" && name != "token-file" && name != "api-token-file") {
			rest = append(rest, a)
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return "", "", nil, fmt.Errorf("flag --%s needs a value", name)
			}
			i++
			val = args[i]
		}
		if name == "api" {
			addr = val
		} else {
			tokenFile = val
		}
	}
	if token, err = api.LoadClientToken(tokenFile); err != nil { // "" reads $CANOPY_API_TOKEN
		return "", "", nil, err
	}
	return addr, token, rest, nil
}
