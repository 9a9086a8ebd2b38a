package main

import "math"

// unconfidence is 1 − the bound's confidence level (95 %): the chance that
// a blocker this good or worse shows as few leaks as the run did.
const unconfidence = 0.05

// blockRateLowerBound is the one-sided 95 % lower confidence bound on a
// blocker's true block rate, given leaks leaked connections of n: the
// exact (Clopper–Pearson) bound, so a claim such as "better than
// 99.99 %" is shown, not just measured once. With no leaks it is
// 0.05^(1/n), which passes 99.99 % from n = 29,956 connections on; with
// 10,000 it is 99.970 %, whatever the run measured.
func blockRateLowerBound(leaks, n int) float64 {
	if n <= 0 || leaks < 0 || leaks > n {
		return math.NaN()
	}
	if leaks == n {
		return 0
	}
	if leaks == 0 {
		return math.Pow(unconfidence, 1/float64(n))
	}
	// The leak rate p whose chance of at most leaks leaks is 5 %:
	// binomCDF falls as p grows, so bisect.
	lo, hi := float64(leaks)/float64(n), 1.0
	for range 100 {
		mid := (lo + hi) / 2
		if binomCDF(leaks, n, mid) > unconfidence {
			lo = mid
		} else {
			hi = mid
		}
	}
	return 1 - hi
}

// binomCDF is P(X ≤ k) for X ~ Binomial(n, p), 0 < p < 1, summed in logs
// so that n in the tens of thousands neither overflows nor underflows.
func binomCDF(k, n int, p float64) float64 {
	lgN, _ := math.Lgamma(float64(n + 1))
	lp, lq := math.Log(p), math.Log1p(-p)
	var sum float64
	for i := 0; i <= k; i++ {
		lgI, _ := math.Lgamma(float64(i + 1))
		lgR, _ := math.Lgamma(float64(n - i + 1))
		sum += math.Exp(lgN - lgI - lgR + float64(i)*lp + float64(n-i)*lq)
	}
	return min(sum, 1)
}
