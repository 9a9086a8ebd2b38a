package api

import "canopy/rules"

// The rule store built in parallel must fit the seam as is, so the daemon
// can pass it without an adapter; this breaks the build if either drifts.
var (
	_ Rules      = (*rules.Store)(nil)
	_ batchAdder = (*rules.Store)(nil)
)
