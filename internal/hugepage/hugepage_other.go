//go:build !linux

package hugepage

// Advise is a no-op off Linux.
func Advise[T any](s []T) {}

// Collapse is a no-op off Linux.
func Collapse[T any](s []T) {}

// Populate is a no-op off Linux.
func Populate[T any](s []T) {}
