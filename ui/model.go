package ui

import (
	"cmp"
	"context"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"charm.land/bubbles/v2/help"
	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"

	"canopy/flow"
	"canopy/rules"
	"canopy/sensor"
)

// The smallest terminal the dashboard draws in; below it, it says so.
const (
	MinWidth  = 80
	MinHeight = 24
)

// Timeouts for Backend calls, so a wedged daemon shows as an error instead
// of a frozen dashboard.
const (
	snapshotTimeout = 5 * time.Second
	actionTimeout   = 15 * time.Second
	// staleAfter is how long without a fresh snapshot before the header
	// says the numbers are stale.
	staleAfter = 3 * time.Second
	// okStatusFor is how long a success line stays; errors stay until the
	// operator acts.
	okStatusFor = 10 * time.Second
)

// pane is a focusable area.
type pane uint8

const (
	paneTalkers pane = iota
	paneBlocks
	paneBans
	numPanes
)

// statusKind is the tone of the status line.
type statusKind uint8

const (
	statusNone statusKind = iota
	statusBusy
	statusOK
	statusErr
)

// Model is the dashboard's root and only tea.Model. It routes messages to
// plain pane structs, keeps the latest snapshot, and caches the rendered
// frame until something on screen changes.
type Model struct {
	cfg    Config
	ctx    context.Context
	keys   KeyMap
	st     *Styles
	help   help.Model
	now    func() time.Time
	loc    *time.Location
	user   string
	width  int
	height int

	// Data. latest is the newest snapshot; traffic is what the talkers and
	// the header's rates show (frozen while paused).
	latest     sensor.Snapshot
	haveSnap   bool
	traffic    flow.Snapshot
	marks      *ruleIndex
	lastOK     time.Time
	fetchErr   error
	seq        uint64 // last snapshot request issued
	appliedSeq uint64 // newest snapshot request applied
	inflight   int    // snapshot requests not yet answered
	flowsBusy  bool

	// View state.
	paused   bool
	focus    pane
	view     talkerView
	drill    bool
	editing  bool // the filter line has the keyboard
	filterIn field
	dlg      *dialog

	status     string
	statusKind statusKind
	statusAt   time.Time

	talkers talkersPane
	blocks  blocksPane
	bans    bansPane
	flows   flowsPane

	frame    string
	dirty    bool // something on screen changed since frame was built
	noop     bool // the key being handled did nothing
	helpLine string
	helpKey  int // width helpLine was rendered for
}

// New builds the dashboard for cfg. It does no I/O: the first snapshot is
// fetched by the command Init returns. Colours follow NO_COLOR.
func New(cfg Config) *Model {
	if cfg.Backend == nil {
		// Never panic on a missing backend: every call reports it.
		cfg.Backend = noBackend{}
	}
	st := NewStyles(noColor())
	m := &Model{
		cfg:   cfg,
		ctx:   context.Background(),
		keys:  DefaultKeyMap(),
		st:    &st,
		help:  help.New(),
		now:   time.Now,
		loc:   time.Local,
		user:  os.Getenv("USER"),
		dirty: true,
		view:  talkerView{kind: flow.BySrc, window: flow.Win10s, sort: sortBits},
	}
	m.help.Styles = st.Help
	m.talkers.st, m.blocks.st, m.bans.st, m.flows.st = m.st, m.st, m.st, m.st
	m.blocks.loc = m.loc
	m.talkers.SetView(m.view)
	m.talkers.SetFocused(true)
	return m
}

// Init starts the 1 Hz tick and fetches the first snapshot at once.
func (m *Model) Init() tea.Cmd {
	return tea.Batch(m.fetch(), tick())
}

func tick() tea.Cmd {
	return tea.Tick(time.Second, func(t time.Time) tea.Msg { return tickMsg(t) })
}

// fetch asks the backend for the latest snapshot, off the event loop.
func (m *Model) fetch() tea.Cmd {
	m.seq++
	m.inflight++
	seq, be, ctx := m.seq, m.cfg.Backend, m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
		defer cancel()
		s, err := be.Snapshot(ctx)
		return snapshotMsg{seq: seq, snap: s, err: err}
	}
}

type uiError string

func (e uiError) Error() string { return string(e) }

const errNoBackend uiError = "no backend configured"

// Update handles one message. It never does I/O: Backend calls are
// returned as commands and their answers come back as messages.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tickMsg:
		return m, m.onTick(time.Time(msg))
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.layout()
	case tea.KeyPressMsg:
		prev := m.dirty
		m.dirty, m.noop = true, false
		cmd := m.onKey(msg)
		if m.noop {
			m.dirty = prev // an unbound key changes nothing on screen
		}
		return m, cmd
	case tea.PasteMsg:
		m.dirty = true
		m.onPaste(msg.Content)
	case snapshotMsg:
		m.onSnapshot(msg)
	case banResultMsg:
		return m, m.onBanResult(msg)
	case unbanResultMsg:
		return m, m.onUnbanResult(msg)
	case modeResultMsg:
		return m, m.onModeResult(msg)
	case flowsMsg:
		m.flowsBusy = false
		if m.drill && msg.target == m.flows.target {
			m.flows.SetData(msg.flows, msg.err, m.now())
			m.dirty = true
		}
	}
	return m, nil
}

// onTick re-arms the tick, asks for a snapshot unless one is still on its
// way, refreshes an open drill-down and ages the status line.
func (m *Model) onTick(now time.Time) tea.Cmd {
	cmds := []tea.Cmd{tick()}
	if m.inflight == 0 {
		cmds = append(cmds, m.fetch())
	}
	if m.drill && !m.flowsBusy {
		cmds = append(cmds, m.fetchFlows(m.flows.target))
	}
	if m.statusKind == statusOK && now.Sub(m.statusAt) > okStatusFor {
		m.setStatus(statusNone, "")
	}
	if m.isStale() {
		m.dirty = true // the "no data for Ns" counter moves
	}
	return tea.Batch(cmds...)
}

func (m *Model) isStale() bool {
	return m.fetchErr != nil || (m.haveSnap && m.now().Sub(m.lastOK) > staleAfter)
}

func (m *Model) onSnapshot(msg snapshotMsg) {
	m.inflight = max(0, m.inflight-1)
	if msg.seq <= m.appliedSeq {
		return // an older request answered late
	}
	m.dirty = true
	if msg.err != nil {
		m.fetchErr = msg.err
		return
	}
	m.appliedSeq = msg.seq
	m.fetchErr = nil
	m.lastOK = m.now()
	m.latest = msg.snap
	m.haveSnap = true
	m.apply()
}

// apply hands the latest snapshot to the panes. While paused the talkers
// and the traffic numbers keep the frozen picture; bans and blocks stay
// live so the operator sees the result of what they do.
func (m *Model) apply() {
	now := m.now()
	m.marks = newRuleIndex(m.latest.Rules)
	m.talkers.SetMarks(m.marks)
	m.bans.SetData(m.latest.Rules, now)
	m.blocks.SetData(m.latest.Blocks, m.view.filter)
	if !m.paused {
		m.traffic = m.latest.Traffic
		m.talkers.SetData(m.traffic.Talkers[m.view.kind])
	}
}

// layout sizes the panes for the terminal: header 2 lines, the talkers
// (or a drill-down) take what the live blocks and bans panes leave, then a
// status line and the help.
func (m *Model) layout() {
	m.dirty = true
	w, h := m.width, m.height
	if w < MinWidth || h < MinHeight {
		return
	}
	m.help.SetWidth(w)
	avail := h - m.headerH() - 1 - 1 // status line, help line
	small := max(4, avail/4)
	talkH := avail - 2*small
	m.talkers.SetSize(w, talkH)
	m.flows.SetSize(w, talkH)
	m.blocks.SetSize(w, small)
	m.bans.SetSize(w, small)
	m.helpLine = ""
}

// setFocus moves the keyboard to pane p.
func (m *Model) setFocus(p pane) {
	m.focus = p
	m.talkers.SetFocused(p == paneTalkers && !m.drill)
	m.flows.SetFocused(p == paneTalkers && m.drill)
	m.blocks.SetFocused(p == paneBlocks)
	m.bans.SetFocused(p == paneBans)
}

func (m *Model) setStatus(k statusKind, s string) {
	m.statusKind, m.status, m.statusAt = k, s, m.now()
	m.dirty = true
}

// setView applies a changed talker view (kind, window, sort, units,
// filter) to the panes that show it.
func (m *Model) setView() {
	m.talkers.SetView(m.view)
	m.talkers.SetData(m.traffic.Talkers[m.view.kind])
	m.blocks.SetData(m.latest.Blocks, m.view.filter)
}

func (m *Model) onKey(k tea.KeyPressMsg) tea.Cmd {
	if m.dlg != nil {
		return m.dialogKey(k)
	}
	if m.editing {
		return m.filterKey(k)
	}
	if m.help.ShowAll {
		// The full help is a modal: any key closes it and does nothing
		// else, so a key pressed to dismiss it never acts unseen.
		m.help.ShowAll = false
		return nil
	}
	km := &m.keys
	switch {
	case key.Matches(k, km.Quit):
		if n := activeBans(m.latest.Rules); n > 0 {
			m.dlg = &dialog{kind: dlgQuit, bans: n, attached: m.cfg.Attached}
			return nil
		}
		return tea.Quit
	case key.Matches(k, km.Help):
		m.help.ShowAll = true
	case key.Matches(k, km.NextPane):
		m.setFocus((m.focus + 1) % numPanes)
	case key.Matches(k, km.PrevPane):
		m.setFocus((m.focus + numPanes - 1) % numPanes)
	case key.Matches(k, km.Talkers):
		m.setFocus(paneTalkers)
	case key.Matches(k, km.Blocks):
		m.setFocus(paneBlocks)
	case key.Matches(k, km.Bans):
		m.setFocus(paneBans)
	case key.Matches(k, km.Up):
		m.move(-1)
	case key.Matches(k, km.Down):
		m.move(1)
	case key.Matches(k, km.PageUp):
		m.move(-m.pageSize())
	case key.Matches(k, km.PageDown):
		m.move(m.pageSize())
	case key.Matches(k, km.Top):
		m.move(-1 << 30)
	case key.Matches(k, km.Bottom):
		m.move(1 << 30)
	case key.Matches(k, km.Open):
		return m.openDrill()
	case key.Matches(k, km.Back):
		switch {
		case m.drill:
			m.drill = false
			m.setFocus(paneTalkers)
		case m.view.filter.active():
			m.view.filter = filterSpec{}
			m.filterIn.Set("")
			m.setView()
		default:
			m.setStatus(statusNone, "")
		}
	case key.Matches(k, km.Ban):
		m.openBan()
	case key.Matches(k, km.Unban):
		m.openUnban()
	case key.Matches(k, km.Mode):
		m.openMode()
	case key.Matches(k, km.Filter):
		m.editing = true
		m.filterIn.Set(m.view.filter.raw)
	case key.Matches(k, km.Sort):
		m.view.sort = (m.view.sort + 1) % numSorts
		m.setView()
	case key.Matches(k, km.Window):
		m.view.window = (m.view.window + 1) % flow.NumWindows
		m.setView()
	case key.Matches(k, km.Kind):
		m.view.kind = (m.view.kind + 1) % flow.NumViews
		m.setView()
	case key.Matches(k, km.Units):
		m.view.bytes = !m.view.bytes
		m.setView()
	case key.Matches(k, km.Pause):
		m.paused = !m.paused
		m.talkers.SetPaused(m.paused)
		if !m.paused && m.haveSnap {
			m.apply()
		}
	default:
		m.noop = true
	}
	return nil
}

func (m *Model) pageSize() int { return max(1, m.talkers.bodyHeight()-1) }

// move shifts the selection of the focused pane.
func (m *Model) move(d int) {
	switch {
	case m.focus == paneTalkers && m.drill:
		m.flows.Move(d)
	case m.focus == paneTalkers:
		m.talkers.Move(d)
	case m.focus == paneBlocks:
		m.blocks.Move(d)
	case m.focus == paneBans:
		m.bans.Move(d)
	}
}

// selectedTarget is what b and Enter act on: the drill-down's address or
// network, or the selected talker's.
func (m *Model) selectedTarget() (netip.Prefix, flow.Talker) {
	if m.drill {
		return m.flows.target, flow.Talker{}
	}
	t, ok := m.talkers.Selected()
	if !ok {
		return netip.Prefix{}, t
	}
	return targetOf(m.view.kind, t), t
}

func (m *Model) openDrill() tea.Cmd {
	if m.focus != paneTalkers || m.drill {
		return nil
	}
	target, t := m.selectedTarget()
	if !target.IsValid() {
		m.setStatus(statusErr, "no flows to open: "+noTarget(t))
		return nil
	}
	m.drill = true
	m.flows.Open(target)
	m.setFocus(paneTalkers)
	return m.fetchFlows(target)
}

func (m *Model) fetchFlows(target netip.Prefix) tea.Cmd {
	m.flowsBusy = true
	be, ctx := m.cfg.Backend, m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
		defer cancel()
		fs, err := be.Flows(ctx, target)
		return flowsMsg{target: target, flows: fs, err: err}
	}
}

// openBan opens the ban form for the selected address or network, with
// what the operator should know before confirming.
func (m *Model) openBan() {
	target, t := m.selectedTarget()
	if !target.IsValid() {
		m.setStatus(statusErr, "nothing to ban: "+noTarget(t))
		return
	}
	d := &dialog{kind: dlgBan, target: target}
	d.duration.Set(fmtTTL(m.cfg.banTTL()))
	if !m.drill {
		w := m.view.window
		d.context = append(d.context, "now "+string(appendRate(nil, t.Bits[w], m.view.bytes))+", "+
			string(appendCount(nil, t.Pkts[w]))+" pkts/s ("+w.String()+" avg), "+plural(t.Flows, "flow", "flows"))
	}
	if !target.IsSingleIP() {
		d.context = append(d.context, m.coveredSources(target))
	}
	switch m.marks.markNet(target) {
	case markAllow:
		d.context = append(d.context, targetString(target)+" is ALLOWLISTED: the sensor will refuse this ban")
	case markBan, markObserve:
		if e, ok := m.marks.banForNet(target); ok {
			d.context = append(d.context, "already banned by "+entryValue(&e)+" (#"+strconv.FormatUint(e.ID, 10)+", expires in "+fmtRemaining(e.Expires, m.now())+")")
		}
	}
	if m.latest.Status.Mode == sensor.ModeObserve {
		d.context = append(d.context, "the sensor is in OBSERVE mode: this ban will only log would-block until you switch to enforce (o)")
	}
	m.dlg = d
}

// coveredSources says which of the snapshot's top sources a network ban
// would cover, heaviest first: a network holds more than the attacker the
// operator picked it for.
func (m *Model) coveredSources(n netip.Prefix) string {
	w := m.view.window
	var in []flow.Talker
	for _, t := range m.traffic.Talkers[flow.BySrc] {
		if !t.Other && n.Contains(t.Src) {
			in = append(in, t)
		}
	}
	if len(in) == 0 {
		return "covers none of the top sources"
	}
	slices.SortStableFunc(in, func(a, b flow.Talker) int { return cmp.Compare(b.Bits[w], a.Bits[w]) })
	s := "covers " + plural(len(in), "top source", "top sources") + ": "
	for i, t := range in[:min(3, len(in))] {
		if i > 0 {
			s += ", "
		}
		s += t.Src.String() + " (" + string(appendRate(nil, t.Bits[w], m.view.bytes)) + ")"
	}
	if len(in) > 3 {
		s += ", …"
	}
	return s
}

// openUnban asks before removing the selected ban: the bans pane's
// selection, or the ban covering the selected talker.
func (m *Model) openUnban() {
	var e rules.Entry
	var ok bool
	if m.focus == paneBans {
		e, ok = m.bans.Selected()
	} else if target, _ := m.selectedTarget(); target.IsValid() {
		e, ok = m.marks.banForNet(target)
	}
	switch {
	case !ok:
		m.setStatus(statusErr, "nothing to unban: select a ban in the bans pane (3) or a BAN talker")
	case e.Kind != rules.KindBan || e.Origin == rules.OriginSystem:
		// Only bans are lifted from here: an allowlist entry protects
		// something, an ACL is policy, and both deserve more than one key.
		m.setStatus(statusErr, string(e.Kind)+" and system entries are managed in the config or the API, not from the dashboard")
	default:
		m.dlg = &dialog{kind: dlgUnban, entry: e}
	}
}

func (m *Model) openMode() {
	if !m.haveSnap {
		m.setStatus(statusErr, "mode unknown until the first snapshot arrives")
		return
	}
	to := sensor.ModeObserve
	if m.latest.Status.Mode == sensor.ModeObserve {
		to = sensor.ModeEnforce
	}
	m.dlg = &dialog{kind: dlgMode, mode: to, bans: activeBans(m.latest.Rules)}
}

// dialogKey routes a key to the open dialog. Esc always cancels.
func (m *Model) dialogKey(k tea.KeyPressMsg) tea.Cmd {
	d := m.dlg
	km := &m.keys
	if k.String() == "esc" || k.String() == "ctrl+c" && d.kind != dlgQuit {
		m.dlg = nil
		return nil
	}
	if k.IsRepeat {
		// A held key (reported by terminals with the kitty keyboard
		// protocol) was pressed before the question was asked: it never
		// answers it.
		m.noop = true
		return nil
	}
	if d.kind != dlgBan {
		switch {
		case key.Matches(k, km.Confirm), d.kind == dlgQuit && k.String() == "ctrl+c":
			m.dlg = nil
			return m.confirm(d)
		case key.Matches(k, km.Cancel):
			m.dlg = nil
		}
		return nil
	}
	// Ban form.
	switch {
	case k.String() == "enter", d.focus == focusReview && k.String() == "y":
		return m.confirmBan(d)
	case d.focus == focusReview && k.String() == "n":
		m.dlg = nil
	case key.Matches(k, km.NextField):
		d.focus = (d.focus + 1) % numFormFocus
	case key.Matches(k, km.PrevField):
		d.focus = (d.focus + numFormFocus - 1) % numFormFocus
	case d.focus == focusDuration:
		d.duration.key(k)
		d.err = ""
	case d.focus == focusReason:
		d.reason.key(k)
	case d.focus == focusReview && k.Text != "":
		// Typing in review mode starts editing the reason: a stray letter
		// never bans anything.
		d.focus = focusReason
		d.reason.key(k)
	}
	return nil
}

func (m *Model) confirmBan(d *dialog) tea.Cmd {
	ttl, err := parseTTL(strings.TrimSpace(d.duration.String()))
	if err != nil {
		d.err = err.Error()
		d.focus = focusDuration
		return nil
	}
	m.dlg = nil
	target, reason := d.target, strings.TrimSpace(d.reason.String())
	m.setStatus(statusBusy, "banning "+targetString(target)+" for "+fmtTTL(ttl)+"…")
	req := rules.Request{
		Kind:        rules.KindBan,
		Value:       targetString(target),
		TTL:         ttl,
		Action:      rules.ActionBlock,
		Reason:      reason,
		Origin:      rules.OriginTUI,
		RequestedBy: m.user,
	}
	be, ctx := m.cfg.Backend, m.ctx
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(ctx, actionTimeout)
		defer cancel()
		e, err := be.Ban(ctx, req)
		return banResultMsg{target: target, ttl: ttl, entry: e, err: err}
	}
}

// confirm runs the action a yes/no dialog asked about.
func (m *Model) confirm(d *dialog) tea.Cmd {
	be, ctx := m.cfg.Backend, m.ctx
	switch d.kind {
	case dlgQuit:
		return tea.Quit
	case dlgUnban:
		e := d.entry
		m.setStatus(statusBusy, "removing "+string(e.Kind)+" "+entryValue(&e)+"…")
		reason := "removed from the dashboard"
		if m.user != "" {
			reason += " by " + m.user
		}
		return func() tea.Msg {
			ctx, cancel := context.WithTimeout(ctx, actionTimeout)
			defer cancel()
			_, err := be.Unban(ctx, e.ID, reason)
			return unbanResultMsg{target: e, err: err}
		}
	case dlgMode:
		to := d.mode
		m.setStatus(statusBusy, "switching to "+strings.ToUpper(string(to))+"…")
		return func() tea.Msg {
			ctx, cancel := context.WithTimeout(ctx, actionTimeout)
			defer cancel()
			return modeResultMsg{mode: to, err: be.SetMode(ctx, to)}
		}
	}
	return nil
}

func (m *Model) onBanResult(r banResultMsg) tea.Cmd {
	if r.err != nil {
		m.setStatus(statusErr, "ban "+targetString(r.target)+": "+r.err.Error())
		return nil
	}
	s := "banned " + targetString(r.target)
	if r.ttl > 0 {
		s += " for " + fmtTTL(r.ttl)
	} else {
		s += " with no expiry"
	}
	m.setStatus(statusOK, s)
	return m.fetch()
}

func (m *Model) onUnbanResult(r unbanResultMsg) tea.Cmd {
	if r.err != nil {
		m.setStatus(statusErr, "unban "+entryValue(&r.target)+": "+r.err.Error())
		return nil
	}
	m.setStatus(statusOK, "removed "+string(r.target.Kind)+" "+entryValue(&r.target))
	return m.fetch()
}

func (m *Model) onModeResult(r modeResultMsg) tea.Cmd {
	if r.err != nil {
		m.setStatus(statusErr, "switch to "+string(r.mode)+": "+r.err.Error())
		return nil
	}
	if r.mode == sensor.ModeObserve {
		m.setStatus(statusOK, "now OBSERVE: resets are not being sent")
	} else {
		m.setStatus(statusOK, "now ENFORCE: resets are being sent")
	}
	return m.fetch()
}

// filterKey edits the filter line; the filter applies as it is typed.
func (m *Model) filterKey(k tea.KeyPressMsg) tea.Cmd {
	switch k.String() {
	case "ctrl+c":
		// Leave the filter as typed and handle ctrl+c as quit.
		m.editing = false
		return m.onKey(k)
	case "enter":
		m.editing = false
	case "esc":
		m.editing = false
		m.filterIn.Set("")
		m.view.filter = filterSpec{}
		m.setView()
	default:
		if !m.filterIn.key(k) {
			m.noop = true
			return nil
		}
		m.view.filter = parseFilter(m.filterIn.String())
		m.setView()
	}
	return nil
}

func (m *Model) onPaste(s string) {
	switch {
	case m.dlg != nil && m.dlg.kind == dlgBan && m.dlg.focus == focusDuration:
		m.dlg.duration.paste(s)
	case m.dlg != nil && m.dlg.kind == dlgBan:
		m.dlg.focus = focusReason
		m.dlg.reason.paste(s)
	case m.editing:
		m.filterIn.paste(strings.TrimSpace(s))
		m.view.filter = parseFilter(m.filterIn.String())
		m.setView()
	}
}
