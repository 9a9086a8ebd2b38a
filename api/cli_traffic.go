package api

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"canopy/flow"
	"canopy/internal/si"
)

// The traffic commands: what the sensor sees, for an operator on a shell
// (no dashboard at hand) and for scripts (--json is the API's answer).

func (cl *cli) talkers(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("talkers", flag.ContinueOnError)
	by := fs.String("by", "src", "src, dst, pair, port or srcnet (the sources summed by /24 and /64)")
	window := fs.String("window", "10s", "the averaging window of the rates: 2s, 10s or 40s")
	n := fs.Int("n", 20, "how many rows, largest bits/s first (at most 1000)")
	asJSON := fs.Bool("json", false, "print the API's answer as JSON")
	pos, ok := cl.parse(fs, args)
	if !ok {
		return ExitUsage
	}
	if len(pos) != 0 {
		return cl.usage("talkers takes no arguments; choose the view with --by")
	}
	kind, ok := parseTalkerKind(*by)
	if !ok {
		return cl.usage("--by %q: want src, dst, pair, port or srcnet", *by)
	}
	if _, ok := parseWindow(*window); !ok {
		return cl.usage("--window %q: want 2s, 10s or 40s", *window)
	}
	if *n < 1 || *n > maxTalkers {
		return cl.usage("-n %d: want 1 to %d rows", *n, maxTalkers)
	}
	tk, err := cl.c.Talkers(ctx, kind.String(), *window, *n)
	if err != nil {
		return cl.fail(err)
	}
	if *asJSON {
		return cl.printJSON(tk)
	}
	writeTalkers(cl.out, tk, kind)
	return ExitOK
}

// writeTalkers prints the talkers as a table, its heading saying what the
// numbers are and when the snapshot was taken.
func writeTalkers(w io.Writer, tk Talkers, kind flow.TalkerKind) {
	fmt.Fprintf(w, "top talkers by %s, %s average, at %s\n", tk.By, tk.Window, tk.At.Local().Format("15:04:05"))
	if len(tk.Items) == 0 {
		fmt.Fprintln(w, "no traffic seen")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "#\t%s\tBITS/S\tPKTS/S\tFLOWS\n", talkerColumn[kind])
	var b []byte
	for i, t := range tk.Items {
		b = strconv.AppendInt(b[:0], int64(i+1), 10)
		b = append(b, '\t')
		b = appendTalkerKey(b, kind, t)
		b = append(b, '\t')
		b = si.AppendBitRate(b, t.BitsPerSecond)
		b = append(b, '\t')
		b = si.AppendCount(b, t.PacketsPerSecond)
		b = append(b, '\t')
		b = strconv.AppendInt(b, int64(t.Flows), 10)
		b = append(b, '\n')
		tw.Write(b)
	}
	tw.Flush()
}

// maxTalkers is the most rows GET /v1/talkers answers with.
const maxTalkers = 1000

var talkerColumn = [flow.NumViews]string{
	flow.BySrc:    "SOURCE",
	flow.ByDst:    "DESTINATION",
	flow.ByPair:   "SOURCE → DESTINATION",
	flow.ByPort:   "PORT",
	flow.BySrcNet: "SOURCE NETWORK",
}

// appendTalkerKey appends what identifies the row: an address, a pair, a
// port ("tcp/443") or a network.
func appendTalkerKey(b []byte, kind flow.TalkerKind, t TalkerView) []byte {
	if t.Other {
		return append(b, "(others, beyond the tracking limit)"...)
	}
	switch kind {
	case flow.BySrc:
		return t.Src.AppendTo(b)
	case flow.ByDst:
		return t.Dst.AppendTo(b)
	case flow.ByPair:
		b = t.Src.AppendTo(b)
		b = append(b, " → "...)
		return t.Dst.AppendTo(b)
	case flow.ByPort:
		b = append(b, t.Proto...)
		b = append(b, '/')
		return strconv.AppendUint(b, uint64(t.Port), 10)
	}
	return t.Net.AppendTo(b)
}

func (cl *cli) flows(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("flows", flag.ContinueOnError)
	limit := fs.Int("max", 100, "at most this many flows (at most 10000)")
	asJSON := fs.Bool("json", false, "print the API's answer as JSON")
	pos, ok := cl.parse(fs, args)
	if !ok {
		return ExitUsage
	}
	if len(pos) != 1 {
		return cl.usage("flows takes exactly one IP or CIDR, got %d arguments", len(pos))
	}
	p, err := parsePrefix(pos[0])
	if err != nil {
		return cl.usage("%v", err)
	}
	if *limit < 1 || *limit > maxPage {
		return cl.usage("--max %d: want 1 to %d flows", *limit, maxPage)
	}
	fl, err := cl.c.Flows(ctx, p, *limit)
	if err != nil {
		return cl.fail(err)
	}
	if fl == nil {
		fl = []flow.Info{}
	}
	if *asJSON {
		return cl.printJSON(FlowList{Items: fl})
	}
	writeFlows(cl.out, p, fl, *limit, time.Now())
	return ExitOK
}

// writeFlows prints the live flows of p, the heaviest first, as the
// dashboard's drill-down does.
func writeFlows(w io.Writer, p netip.Prefix, fl []flow.Info, limit int, now time.Time) {
	target := p.String()
	if p.IsSingleIP() {
		target = p.Addr().String()
	}
	switch {
	case len(fl) == 0:
		fmt.Fprintf(w, "no live flows of %s\n", target)
		return
	case len(fl) >= limit:
		fmt.Fprintf(w, "the first %d live flows of %s (--max for more), the heaviest first\n", len(fl), target)
	default:
		fmt.Fprintf(w, "%d live flows of %s, the heaviest first\n", len(fl), target)
	}
	fl = slices.Clone(fl)
	slices.SortStableFunc(fl, func(a, b flow.Info) int {
		if c := cmp.Compare(b.BytesAB+b.BytesBA, a.BytesAB+a.BytesBA); c != 0 {
			return c
		}
		return b.LastSeen.Compare(a.LastSeen)
	})
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROTO\tINITIATOR → RESPONDER\tSTATE\tPKTS →\tPKTS ←\tBYTES →\tBYTES ←\tAGE\tIDLE\tRESET BY CANOPY")
	var b []byte
	for _, f := range fl {
		b = append(b[:0], protoName(f.Proto)...)
		b = append(b, '\t')
		b = appendEndpoint(b, f.A, f.APort)
		b = append(b, " → "...)
		b = appendEndpoint(b, f.B, f.BPort)
		b = append(b, '\t')
		b = append(b, f.State...)
		for _, n := range [...]uint64{f.PktsAB, f.PktsBA} {
			b = append(b, '\t')
			b = strconv.AppendUint(b, n, 10)
		}
		for _, n := range [...]uint64{f.BytesAB, f.BytesBA} {
			b = append(b, '\t')
			b = si.AppendSize(b, n)
		}
		for _, t := range [...]time.Time{f.FirstSeen, f.LastSeen} {
			b = append(b, '\t')
			b = append(b, since(t, now)...)
		}
		if f.Blocked {
			b = append(b, "\tyes\n"...)
		} else {
			b = append(b, "\t-\n"...)
		}
		tw.Write(b)
	}
	tw.Flush()
}

func appendEndpoint(b []byte, a netip.Addr, port uint16) []byte {
	if port == 0 {
		return a.AppendTo(b)
	}
	return netip.AddrPortFrom(a, port).AppendTo(b)
}

// since says how long ago t was ("42s", "3m"), "-" for never.
func since(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return humanDuration(max(0, now.Sub(t)))
}
