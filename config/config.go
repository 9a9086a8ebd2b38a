// Package config owns canopy's TOML configuration: its schema, defaults,
// strict decoding (unknown keys and type errors are reported with their
// position) and validation. Command-line flags override it; main.go applies
// them after Load.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the whole configuration. Every field is documented, with its
// default, in config.toml.example.
type Config struct {
	Mode    string  `toml:"mode"` // "enforce" or "observe"
	Capture Capture `toml:"capture"`
	Inject  Inject  `toml:"inject"`
	Rules   Rules   `toml:"rules"`
	Flow    Flow    `toml:"flow"`
	API     API     `toml:"api"`
	Log     Log     `toml:"log"`
}

// Capture configures the mirror-port sockets.
type Capture struct {
	Interfaces   []string      `toml:"interfaces"`    // mirror (SPAN/TAP) ports
	Workers      int           `toml:"workers"`       // 0: one per CPU
	BlockSize    int           `toml:"block_size"`    // TPACKET_V3 block bytes, power of two; 0: capture's default
	BlockCount   int           `toml:"block_count"`   // blocks per ring; 0: capture's default
	BlockTimeout time.Duration `toml:"block_timeout"` // TPACKET_V3 retire timeout
	Lane         bool          `toml:"lane"`          // low-latency lane for handshake/data packets
	// LaneNap is how long a worker sleeps between lane frames during a
	// flood instead of waking for each; 0: never nap.
	LaneNap     time.Duration `toml:"lane_nap"`
	Promiscuous bool          `toml:"promiscuous"`
	WorkerNice  int           `toml:"worker_nice"` // nice value of capture worker threads; 0 leaves them alone
	// WorkerRTPriority makes the capture worker threads SCHED_FIFO with
	// this priority (1..99); 0 leaves them normal threads (WorkerNice).
	WorkerRTPriority int `toml:"worker_rt_priority"`
}

// Inject configures where resets leave.
type Inject struct {
	Interface        string        `toml:"interface"`           // inject port; empty: reflect on the capture port
	NextHop          string        `toml:"next_hop"`            // IP (resolved via the neighbour table) or MAC
	QdiscBypass      bool          `toml:"qdisc_bypass"`        // PACKET_QDISC_BYPASS on the inject socket
	MaxPPS           int           `toml:"max_pps"`             // global ceiling on injected frames per second
	MaxResetsPerFlow int           `toml:"max_resets_per_flow"` // per-flow budget
	MinResetInterval time.Duration `toml:"min_reset_interval"`  // per flow, between two rounds of resets
	ConfirmAfter     time.Duration `toml:"confirm_after"`       // silence after the last reset that confirms a kill
	FailAfter        time.Duration `toml:"fail_after"`          // payload this long after the first reset, budget spent: failed
	UnreachableCode  string        `toml:"unreachable_code"`    // "port" (ECONNREFUSED) or "admin"
}

// Allow is one configured allowlist entry.
type Allow struct {
	Value   string `toml:"value"`
	Comment string `toml:"comment"`
}

// Ban is one configured ban.
type Ban struct {
	Value  string        `toml:"value"`
	Reason string        `toml:"reason"`
	TTL    time.Duration `toml:"ttl"` // 0: never expires
	Action string        `toml:"action"`
}

// Rules configures the rule store and its guards.
type Rules struct {
	StateDir      string        `toml:"state_dir"`
	BlockFile     string        `toml:"block_file"`
	DefaultBanTTL time.Duration `toml:"default_ban_ttl"`
	MaxPrefixV4   int           `toml:"max_prefix_v4"`
	MaxPrefixV6   int           `toml:"max_prefix_v6"`
	MaxEntries    int           `toml:"max_entries"`
	HomeNets      []string      `toml:"home_nets"`
	Allow         []Allow       `toml:"allow"`
	Ban           []Ban         `toml:"ban"`
}

// Flow configures the flow table.
type Flow struct {
	MaxFlows        int           `toml:"max_flows"`
	IdleEstablished time.Duration `toml:"idle_established"`
	IdleHalfOpen    time.Duration `toml:"idle_half_open"`
	IdleClosed      time.Duration `toml:"idle_closed"`
	IdleUDP         time.Duration `toml:"idle_udp"`
}

// API configures the HTTP API.
type API struct {
	Listen    string `toml:"listen"`
	TokenFile string `toml:"token_file"`
}

// Log configures logs and the events stream.
type Log struct {
	Format     string `toml:"format"` // "json" or "text"
	Level      string `toml:"level"`  // debug, info, warn, error
	EventsFile string `toml:"events_file"`
}

// Default returns the configuration canopy runs with when nothing is set.
func Default() Config {
	return Config{
		Mode: "enforce",
		Capture: Capture{
			Interfaces:   []string{},
			BlockTimeout: time.Millisecond,
			Lane:         true,
			LaneNap:      20 * time.Microsecond, // capture.DefaultLaneNap (TestDefaultsMatchCapture)
			Promiscuous:  true,
			WorkerNice:   -10,
		},
		Inject: Inject{
			QdiscBypass:      true,
			MaxPPS:           50000,
			MaxResetsPerFlow: 32,
			MinResetInterval: 0,
			ConfirmAfter:     500 * time.Millisecond,
			FailAfter:        250 * time.Millisecond,
			UnreachableCode:  "port",
		},
		Rules: Rules{
			StateDir:      "/var/lib/canopy",
			DefaultBanTTL: time.Hour,
			MaxPrefixV4:   16,
			MaxPrefixV6:   48,
			MaxEntries:    2_000_000,
			HomeNets:      []string{},
		},
		Flow: Flow{
			MaxFlows:        1 << 20,
			IdleEstablished: 5 * time.Minute,
			IdleHalfOpen:    10 * time.Second,
			IdleClosed:      10 * time.Second,
			IdleUDP:         time.Minute,
		},
		API: API{Listen: "127.0.0.1:7850"},
		Log: Log{Format: "json", Level: "info"},
	}
}

// Load reads a TOML file over the defaults and validates the result.
func Load(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return Parse(b, path)
}

// Parse decodes TOML text over the defaults and validates the result. name
// is used in error messages.
func Parse(b []byte, name string) (Config, error) {
	c := Default()
	md, err := toml.NewDecoder(bytes.NewReader(b)).Decode(&c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return Config{}, fmt.Errorf("config %s line %d column %d: %s", name, pe.Position.Line, pe.Position.Col, pe.Message)
		}
		return Config{}, fmt.Errorf("config %s: %w", name, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return Config{}, fmt.Errorf("config %s: unknown key %s (check the spelling against config.toml.example)", name, strings.Join(keys, ", "))
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", name, err)
	}
	return c, nil
}

// Validate checks values that TOML types cannot express. Every error names
// the key so the operator can find it.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Mode != "enforce" && c.Mode != "observe" {
		bad("mode = %q: want \"enforce\" or \"observe\"", c.Mode)
	}
	if c.Capture.Workers < 0 {
		bad("capture.workers = %d: want 0 (one per CPU) or more", c.Capture.Workers)
	}
	if bs := c.Capture.BlockSize; bs != 0 && (bs < 4096 || bs&(bs-1) != 0) {
		bad("capture.block_size = %d: want a power of two of at least 4096", bs)
	}
	if n := c.Capture.WorkerRTPriority; n < 0 || n > 99 {
		bad("capture.worker_rt_priority = %d: want 0 (off) or a SCHED_FIFO priority 1..99", n)
	}
	if n := c.Capture.WorkerNice; n < -20 || n > 19 {
		bad("capture.worker_nice = %d: want -20..19 (0 leaves the priority alone)", n)
	}
	if c.Capture.BlockCount < 0 {
		bad("capture.block_count = %d: want 0 (default) or more", c.Capture.BlockCount)
	}
	if t := c.Capture.BlockTimeout; t < time.Millisecond || t > time.Second {
		bad("capture.block_timeout = %s: want between 1ms and 1s (the kernel counts whole milliseconds)", t)
	}
	if t := c.Capture.LaneNap; t < 0 || t > time.Millisecond {
		bad("capture.lane_nap = %s: want between 0s (never nap) and 1ms (the block timeout)", t)
	}
	if hop := c.Inject.NextHop; hop != "" {
		if _, err := netip.ParseAddr(hop); err != nil {
			if _, err := net.ParseMAC(hop); err != nil {
				bad("inject.next_hop = %q: want an IP address or a MAC address", hop)
			}
		}
	}
	if c.Inject.MaxPPS <= 0 {
		bad("inject.max_pps = %d: want a positive ceiling", c.Inject.MaxPPS)
	}
	if c.Inject.MaxResetsPerFlow <= 0 {
		bad("inject.max_resets_per_flow = %d: want at least 1", c.Inject.MaxResetsPerFlow)
	}
	if c.Inject.MinResetInterval < 0 {
		bad("inject.min_reset_interval = %s: must not be negative", c.Inject.MinResetInterval)
	}
	if c.Inject.ConfirmAfter <= 0 {
		bad("inject.confirm_after = %s: want a positive duration", c.Inject.ConfirmAfter)
	}
	if c.Inject.FailAfter <= 0 {
		bad("inject.fail_after = %s: want a positive duration", c.Inject.FailAfter)
	}
	if u := c.Inject.UnreachableCode; u != "port" && u != "admin" {
		bad("inject.unreachable_code = %q: want \"port\" or \"admin\"", u)
	}
	if c.Rules.StateDir == "" {
		bad("rules.state_dir is empty: bans and the audit log need a directory")
	}
	if c.Rules.DefaultBanTTL < 0 {
		bad("rules.default_ban_ttl = %s: must not be negative (0 means never expires)", c.Rules.DefaultBanTTL)
	}
	if v := c.Rules.MaxPrefixV4; v < 0 || v > 32 {
		bad("rules.max_prefix_v4 = %d: want 0..32", v)
	}
	if v := c.Rules.MaxPrefixV6; v < 0 || v > 128 {
		bad("rules.max_prefix_v6 = %d: want 0..128", v)
	}
	if c.Rules.MaxEntries <= 0 {
		bad("rules.max_entries = %d: want a positive cap", c.Rules.MaxEntries)
	}
	for i, n := range c.Rules.HomeNets {
		if _, err := netip.ParsePrefix(n); err != nil {
			bad("rules.home_nets[%d] = %q: %v", i, n, err)
		}
	}
	for i, a := range c.Rules.Allow {
		if _, err := ParsePrefix(a.Value); err != nil {
			bad("rules.allow[%d].value = %q: %v", i, a.Value, err)
		}
	}
	for i, b := range c.Rules.Ban {
		if _, err := ParsePrefix(b.Value); err != nil {
			bad("rules.ban[%d].value = %q: %v", i, b.Value, err)
		}
		if b.Action != "" && b.Action != "block" && b.Action != "observe" {
			bad("rules.ban[%d].action = %q: want \"block\" or \"observe\"", i, b.Action)
		}
		if b.TTL < 0 {
			bad("rules.ban[%d].ttl = %s: must not be negative", i, b.TTL)
		}
	}
	if c.Flow.MaxFlows < 1024 {
		bad("flow.max_flows = %d: want at least 1024", c.Flow.MaxFlows)
	}
	for key, d := range map[string]time.Duration{
		"flow.idle_established": c.Flow.IdleEstablished, "flow.idle_half_open": c.Flow.IdleHalfOpen,
		"flow.idle_closed": c.Flow.IdleClosed, "flow.idle_udp": c.Flow.IdleUDP,
	} {
		if d <= 0 {
			bad("%s = %s: want a positive duration", key, d)
		}
	}
	if _, _, err := net.SplitHostPort(c.API.Listen); c.API.Listen != "" && err != nil {
		bad("api.listen = %q: want host:port, e.g. 127.0.0.1:7850", c.API.Listen)
	}
	if f := c.Log.Format; f != "json" && f != "text" {
		bad("log.format = %q: want \"json\" or \"text\"", f)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level = %q: want debug, info, warn or error", c.Log.Level)
	}
	return errors.Join(errs...)
}

// ParsePrefix reads an IP address (as a single-address prefix) or a CIDR.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// TOML renders the configuration as TOML, for `canopy check-config`.
func (c Config) TOML() string {
	var b bytes.Buffer
	enc := toml.NewEncoder(&b)
	enc.Indent = ""
	if err := enc.Encode(c); err != nil {
		return "# cannot render: " + err.Error()
	}
	return b.String()
}
