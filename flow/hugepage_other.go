//go:build !linux

package flow

// adviseHuge is a no-op off Linux.
func adviseHuge[T any](s []T) {}
