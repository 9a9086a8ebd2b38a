package api

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"canopy/internal/latency"
	"canopy/rules"
)

// Exit codes of RunCLI.
const (
	ExitOK    = 0 // done
	ExitError = 1 // the daemon refused or could not be reached; the reason is on stderr
	ExitUsage = 2 // bad command line
)

const cliUsage = `usage: canopy [--api HOST:PORT] COMMAND ...

commands (talk to a running canopy --daemon):
  ban IP|CIDR [--for 1h] [--reason "..."] [--observe] [--force] [--json]
      ban an address or prefix; banning it again extends the ban
  unban ID|IP|CIDR [--reason "..."] [--json]
      lift a ban by id or by value
  bans [--contains IP] [--origin api|cli|tui|file|config|feed|system] [--kind ban|acl|allow] [--json]
      list bans (or ACLs, or the allowlist)
  status [--json]
      the sensor's health and headline numbers
  talkers [--by src|dst|pair|port|srcnet] [--window 2s|10s|40s] [-n 20] [--json]
      the top talkers, largest bits/s first (srcnet: the sources summed by /24 and /64)
  flows IP|CIDR [--max 100] [--json]
      the live flows of an address or prefix, the heaviest first

exit status: 0 done, 1 the daemon refused or is unreachable (reason on stderr), 2 usage error
`

// RunCLI runs one client command (ban, unban, bans, status, talkers,
// flows) against the
// daemon at addr with token, writing results to stdout and errors to
// stderr, and returns the process exit code: ExitOK, ExitError (API error,
// message on stderr) or ExitUsage.
func RunCLI(ctx context.Context, args []string, stdout, stderr io.Writer, addr, token string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, cliUsage)
		return ExitUsage
	}
	cmd, rest := args[0], args[1:]
	cl := &cli{c: NewClient(addr, token), out: stdout, err: stderr}
	switch cmd {
	case "ban":
		return cl.ban(ctx, rest)
	case "unban":
		return cl.unban(ctx, rest)
	case "bans":
		return cl.bans(ctx, rest)
	case "status":
		return cl.status(ctx, rest)
	case "talkers":
		return cl.talkers(ctx, rest)
	case "flows":
		return cl.flows(ctx, rest)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, cliUsage)
		return ExitOK
	}
	fmt.Fprintf(stderr, "canopy: unknown command %q\n\n%s", cmd, cliUsage)
	return ExitUsage
}

type cli struct {
	c        *Client
	out, err io.Writer
}

// parse parses flags that may come before or after the positional
// arguments ("ban 1.2.3.4 --for 1h" and "ban --for 1h 1.2.3.4").
func (cl *cli) parse(fs *flag.FlagSet, args []string) ([]string, bool) {
	fs.SetOutput(cl.err)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, false
		}
		if fs.NArg() == 0 {
			return pos, true
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func (cl *cli) usage(format string, a ...any) int {
	fmt.Fprintf(cl.err, "canopy: "+format+"\n\n%s", append(a, cliUsage)...)
	return ExitUsage
}

// fail reports an error from the client and returns ExitError.
func (cl *cli) fail(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		fmt.Fprintf(cl.err, "canopy: %s (HTTP %d)\n", ae.Message, ae.Status)
		if ae.Detail != "" {
			fmt.Fprintf(cl.err, "  %s\n", ae.Detail)
		}
		if ae.Status == http.StatusUnauthorized {
			fmt.Fprintln(cl.err, "  the daemon needs a token: pass one from its --api-token-file")
		}
		return ExitError
	}
	fmt.Fprintf(cl.err, "canopy: %v\n", err)
	return ExitError
}

func (cl *cli) printJSON(v any) int {
	enc := json.NewEncoder(cl.out)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(cl.err, "canopy: writing output: %v\n", err)
		return ExitError
	}
	return ExitOK
}

func (cl *cli) ban(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("ban", flag.ContinueOnError)
	ttl := fs.String("for", "", "how long, e.g. 30m, 4h, 7d (default: the daemon's policy, or never)")
	reason := fs.String("reason", "", "why, for the audit log")
	observe := fs.Bool("observe", false, "only log what would be blocked")
	force := fs.Bool("force", false, "pass the prefix-width and allowlist guards (audited)")
	asJSON := fs.Bool("json", false, "print the entry as JSON")
	pos, ok := cl.parse(fs, args)
	if !ok {
		return ExitUsage
	}
	if len(pos) != 1 {
		return cl.usage("ban takes exactly one IP or CIDR, got %d arguments", len(pos))
	}
	d, err := parseTTL(*ttl)
	if err != nil {
		return cl.usage("--for %q: want a duration such as 30m, 4h or 7d", *ttl)
	}
	req := rules.Request{Kind: rules.KindBan, Value: pos[0], TTL: d, Reason: *reason, Origin: rules.OriginCLI, Force: *force, Action: rules.ActionBlock}
	if *observe {
		req.Action = rules.ActionObserve
	}
	e, created, err := cl.c.ban(ctx, req)
	if err != nil {
		code := cl.fail(err)
		var ae *APIError
		if errors.As(err, &ae) && (ae.Status == http.StatusUnprocessableEntity || ae.Status == http.StatusConflict) && !*force {
			// The API says "force"; on the command line it is a flag.
			fmt.Fprintf(cl.err, "  to override: canopy ban %s --force (audited)\n", pos[0])
		}
		return code
	}
	if *asJSON {
		return cl.printJSON(e)
	}
	verb := "banned"
	if !created {
		verb = "extended ban of"
	}
	if e.Action == rules.ActionObserve {
		verb = strings.Replace(verb, "ban", "observe", 1)
	}
	fmt.Fprintf(cl.out, "%s %s (id %d), expires %s\n", verb, e.Value, e.ID, expiresIn(e.Expires, time.Now()))
	return ExitOK
}

func (cl *cli) unban(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("unban", flag.ContinueOnError)
	reason := fs.String("reason", "", "why, for the audit log")
	asJSON := fs.Bool("json", false, "print the lifted entry as JSON")
	pos, ok := cl.parse(fs, args)
	if !ok {
		return ExitUsage
	}
	if len(pos) != 1 {
		return cl.usage("unban takes exactly one ID, IP or CIDR, got %d arguments", len(pos))
	}
	e, err := cl.c.Remove(ctx, rules.KindBan, pos[0], *reason)
	if err != nil {
		return cl.fail(err)
	}
	if *asJSON {
		return cl.printJSON(e)
	}
	fmt.Fprintf(cl.out, "lifted ban of %s (id %d)\n", e.Value, e.ID)
	return ExitOK
}

func (cl *cli) bans(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("bans", flag.ContinueOnError)
	contains := fs.String("contains", "", "only entries covering this IP")
	origin := fs.String("origin", "", "only entries from this origin")
	kind := fs.String("kind", "ban", "ban, acl or allow")
	asJSON := fs.Bool("json", false, "print {items, total} as JSON")
	pos, ok := cl.parse(fs, args)
	if !ok {
		return ExitUsage
	}
	if len(pos) != 0 {
		return cl.usage("bans takes no arguments; filter with --contains IP")
	}
	f := RuleFilter{Kind: rules.Kind(*kind), Origin: rules.Origin(*origin), Limit: maxPage}
	switch f.Kind {
	case rules.KindBan, rules.KindACL, rules.KindAllow:
	default:
		return cl.usage("--kind %q: want ban, acl or allow", *kind)
	}
	if *contains != "" {
		ip, err := netip.ParseAddr(*contains)
		if err != nil {
			return cl.usage("--contains %q is not an IP address", *contains)
		}
		f.Contains = ip
	}
	var all []rules.Entry
	total := 0
	for {
		page, t, err := cl.c.Bans(ctx, f)
		if err != nil {
			return cl.fail(err)
		}
		all, total = append(all, page...), t
		f.Offset += len(page)
		if len(page) == 0 || f.Offset >= t {
			break
		}
	}
	if all == nil {
		all = []rules.Entry{}
	}
	if *asJSON {
		return cl.printJSON(EntryList{Items: all, Total: total})
	}
	tw := tabwriter.NewWriter(cl.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tVALUE\tACTION\tORIGIN\tEXPIRES\tREASON\tHITS")
	now := time.Now()
	for _, e := range all {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\n", e.ID, entryValue(e), e.Action, e.Origin,
			expiresIn(e.Expires, now), oneLine(e.Reason, 60), e.Hits)
	}
	tw.Flush()
	if len(all) == 0 {
		fmt.Fprintf(cl.out, "no %s entries\n", f.Kind)
	}
	return ExitOK
}

func (cl *cli) status(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the status as JSON")
	pos, ok := cl.parse(fs, args)
	if !ok {
		return ExitUsage
	}
	if len(pos) != 0 {
		return cl.usage("status takes no arguments")
	}
	v, err := cl.c.StatusView(ctx)
	if err != nil {
		return cl.fail(err)
	}
	if *asJSON {
		return cl.printJSON(v)
	}
	writeStatus(cl.out, v)
	return ExitOK
}

func writeStatus(w io.Writer, v StatusView) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	ready := "ready"
	if !v.Ready {
		ready = "NOT READY"
	}
	b := v.Blocks
	fmt.Fprintf(tw, "version\t%s\n", v.Version)
	fmt.Fprintf(tw, "state\t%s, up %s\n", ready, humanDuration(time.Duration(v.Uptime*float64(time.Second))))
	fmt.Fprintf(tw, "mode\t%s\n", v.Mode)
	src := v.Source
	if len(v.Ifaces) > 0 {
		src += " on " + strings.Join(v.Ifaces, ", ")
	}
	if v.InjectIface != "" {
		src += ", injecting on " + v.InjectIface
	}
	fmt.Fprintf(tw, "source\t%s\n", src)
	fmt.Fprintf(tw, "packets\t%d (kernel drops %d, decode errors %d)\n", v.Capture.Packets, v.Capture.Drops, v.DecodeErrors)
	if c := v.Capture; c.LanePackets > 0 {
		fmt.Fprintf(tw, "lane\t%d frames, %d naps (a worker naps between lane frames while they come at a flood's rate)\n", c.LanePackets, c.LaneNaps)
	}
	fmt.Fprintf(tw, "flows\t%d\n", v.Flows)
	fmt.Fprintf(tw, "bans\t%d\n", v.Bans)
	fmt.Fprintf(tw, "blocks\t%d attempted: %d confirmed, %d failed (success %.1f%%); %d observed\n",
		b.Attempted, b.Confirmed, b.Failed, b.SuccessRate*100, b.Observed)
	fmt.Fprintf(tw, "resets\t%d sent, %d ICMP, %d suppressed, %d send errors\n", b.ResetsSent, b.ICMPSent, b.Suppressed, b.SendErrors)
	if b.Killing > 0 {
		fmt.Fprintf(tw, "killing\tthe live sessions of %d new ban(s), at the injection ceiling's pace\n", b.Killing)
	}
	if b.ReactionCount > 0 || b.ReactionP50 > 0 {
		fmt.Fprintf(tw, "reaction\tp50 %s, p99 %s (of which pickup, trigger to worker: p50 %s, p99 %s)\n",
			latency.String(b.ReactionP50), latency.String(b.ReactionP99), latency.String(b.PickupP50), latency.String(b.PickupP99))
	} else {
		fmt.Fprintf(tw, "reaction\tnone measured yet\n")
	}
	tw.Flush()
}

// entryValue is what the VALUE column shows: the prefix, or an ACL summary.
func entryValue(e rules.Entry) string {
	if e.Kind != rules.KindACL || e.ACL == nil {
		if e.Value.IsValid() && e.Value.IsSingleIP() {
			return e.Value.Addr().String()
		}
		return prefixString(e.Value)
	}
	a := e.ACL
	end := func(p netip.Prefix, ports rules.PortRange) string {
		s := "any"
		if p.IsValid() {
			s = p.String()
		}
		if ps := portsString(ports); ps != "" {
			s += ":" + ps
		}
		return s
	}
	return fmt.Sprintf("%s %s>%s %s", a.Proto, end(a.Src, a.SrcPorts), end(a.Dst, a.DstPorts), a.Direction)
}

// expiresIn renders an expiry as "never", "expired" or "in 59m".
func expiresIn(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := t.Sub(now)
	if d <= 0 {
		return "expired"
	}
	return "in " + humanDuration(d)
}

// humanDuration truncates to the two largest units: 3d4h, 2h5m, 59m, 42s
// (a ban for 1h shows "in 59m" a moment later, never more than is left).
func humanDuration(d time.Duration) string {
	switch {
	case d >= 24*time.Hour:
		days, h := d/(24*time.Hour), (d%(24*time.Hour))/time.Hour
		if h == 0 {
			return fmt.Sprintf("%dd", days)
		}
		return fmt.Sprintf("%dd%dh", days, h)
	case d >= time.Hour:
		h, m := d/time.Hour, (d%time.Hour)/time.Minute
		if m == 0 {
			return fmt.Sprintf("%dh", h)
		}
		return fmt.Sprintf("%dh%dm", h, m)
	case d >= time.Minute:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}

// oneLine keeps a table cell on one line and at most n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
