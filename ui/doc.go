// Package ui is canopy's interactive dashboard: a Bubble Tea v2 program that
// shows the sensor's top talkers, the live blocks feed and the bans in force,
// and lets the operator ban, unban, pause and switch modes with confirmed,
// one-key actions.
//
// The dashboard only ever reads immutable snapshots through a [Backend]
// (the in-process sensor or a daemon's HTTP API). It pulls: one fetch per
// second in a tea.Cmd, never two at once, and a late answer older than one
// already shown is dropped, so the latest snapshot always wins. Nothing
// pushes into the program (no p.Send), so a slow terminal can never slow
// capture or blocking; at worst the dashboard skips a second. Every
// action (ban, unban, mode, flows) also runs in a tea.Cmd and comes back as a
// message; Update does no I/O. The root [Model] is the only tea.Model; the
// panes are plain structs with SetSize/SetData/View methods, all styles live
// in styles.go and all key bindings in keys.go.
package ui
