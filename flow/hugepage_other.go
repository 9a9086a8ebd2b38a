//go:build !linux

package flow

// hugePages is unused off Linux.
var hugePages = false

// adviseHuge is a no-op off Linux.
func adviseHuge[T any](s []T) {}
