package router

import "math/rand/v2"

// alias is Vose's alias table: an O(1) weighted choice from one random
// uint64, built once per routing table change. The high 32 bits choose a
// column, the low 32 bits are the coin that decides between the column and
// its alias.
type alias struct {
	n      uint64
	thresh []uint32 // keep column i when coin < thresh[i]
	alias  []int
	// keepAll marks columns whose probability is 1, which a uint32
	// threshold cannot express exactly.
	keepAll []bool
}

// newAlias builds a table over weights. Negative weights count as zero. If
// every weight is zero all columns are equally likely; callers exclude
// zero-weight entries beforehand when that is not wanted.
func newAlias(weights []float64) alias {
	n := len(weights)
	a := alias{n: uint64(n), thresh: make([]uint32, n), alias: make([]int, n), keepAll: make([]bool, n)}
	if n == 0 {
		return a
	}
	var sum float64
	for _, w := range weights {
		if w > 0 {
			sum += w
		}
	}
	p := make([]float64, n)
	for i, w := range weights {
		switch {
		case sum == 0:
			p[i] = 1
		case w > 0:
			p[i] = w / sum * float64(n)
		}
	}
	small := make([]int, 0, n)
	large := make([]int, 0, n)
	for i, v := range p {
		if v < 1 {
			small = append(small, i)
		} else {
			large = append(large, i)
		}
	}
	for len(small) > 0 && len(large) > 0 {
		s := small[len(small)-1]
		small = small[:len(small)-1]
		l := large[len(large)-1]
		large = large[:len(large)-1]
		a.thresh[s] = uint32(p[s] * (1 << 32))
		a.alias[s] = l
		p[l] = p[l] + p[s] - 1
		if p[l] < 1 {
			small = append(small, l)
		} else {
			large = append(large, l)
		}
	}
	// Leftovers are 1 up to rounding.
	for _, i := range large {
		a.keepAll[i] = true
		a.alias[i] = i
	}
	for _, i := range small {
		a.keepAll[i] = true
		a.alias[i] = i
	}
	return a
}

// pick returns a column index. The table must not be empty.
func (a *alias) pick() int {
	if a.n == 1 {
		return 0
	}
	return a.pickWith(rand.Uint64())
}

func (a *alias) pickWith(u uint64) int {
	col := int(((u >> 32) * a.n) >> 32)
	if a.keepAll[col] || uint32(u) < a.thresh[col] {
		return col
	}
	return a.alias[col]
}
