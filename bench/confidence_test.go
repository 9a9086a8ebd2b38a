package main

import (
	"math"
	"testing"
)

func TestBlockRateLowerBound(t *testing.T) {
	for _, tc := range []struct {
		leaks, n int
		want     float64 // 0 leaks: the closed form; else 1 − scipy.stats.beta.ppf(0.95, leaks+1, n−leaks)
		tol      float64
	}{
		{0, 10000, 0.999700, 1e-6},
		{0, 30000, 0.999900, 1e-6},
		{1, 100, 0.9534402, 1e-6},
		{5, 10000, 0.9989490, 1e-6},
		{17, 10000, 0.9974512, 1e-6},
		{91, 10000, 0.9891769, 1e-6},
		{356, 10000, 0.9612002, 1e-6},
	} {
		if got := blockRateLowerBound(tc.leaks, tc.n); math.Abs(got-tc.want) > tc.tol {
			t.Errorf("blockRateLowerBound(%d, %d) = %.6f, want %.6f", tc.leaks, tc.n, got, tc.want)
		}
	}
	// Exactly the 5 % point: at the bound's leak rate, at most leaks
	// leaks happen with a chance of 5 %.
	for _, c := range [][2]int{{3, 1000}, {91, 10000}, {20, 30000}} {
		p := 1 - blockRateLowerBound(c[0], c[1])
		if got := binomCDF(c[0], c[1], p); math.Abs(got-0.05) > 1e-9 {
			t.Errorf("P(X ≤ %d; n=%d, p=%.6g) = %.9f, want 0.05", c[0], c[1], p, got)
		}
	}
	if !math.IsNaN(blockRateLowerBound(1, 0)) || blockRateLowerBound(5, 5) != 0 {
		t.Error("degenerate inputs")
	}
	// Never above the measured rate.
	for leaks := range 50 {
		if lb, rate := blockRateLowerBound(leaks, 2000), 1-float64(leaks)/2000; lb > rate {
			t.Errorf("%d of 2000: bound %.6f above the measured %.6f", leaks, lb, rate)
		}
	}
}
