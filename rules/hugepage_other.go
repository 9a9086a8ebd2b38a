//go:build !linux

package rules

func adviseHuge[T any](s []T) {}
