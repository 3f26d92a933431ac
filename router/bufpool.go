package router

import "sync"

// bufPool recycles request and copy buffers by size class, so a steady
// stream of invocations allocates no body buffers.
type bufPool struct {
	classes [5]sync.Pool
}

var bufClassSizes = [5]int{4 << 10, 32 << 10, 256 << 10, 2 << 20, 8 << 20}

func (p *bufPool) get(n int) *[]byte {
	for i, size := range bufClassSizes {
		if n <= size {
			if v, ok := p.classes[i].Get().(*[]byte); ok {
				return v
			}
			b := make([]byte, size)
			return &b
		}
	}
	b := make([]byte, n)
	return &b
}

func (p *bufPool) put(b *[]byte) {
	c := cap(*b)
	for i, size := range bufClassSizes {
		if c == size {
			*b = (*b)[:size]
			p.classes[i].Put(b)
			return
		}
	}
}
