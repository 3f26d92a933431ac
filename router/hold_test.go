package router

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func waitLen(t *testing.T, q *HoldQueue, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for q.Len() != n {
		if time.Now().After(deadline) {
			t.Fatalf("queue holds %d, want %d", q.Len(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Held requests take their turns in arrival order: what each does between
// Hold and Done (choosing an instance, here appending to out) happens in
// the order they arrived.
func TestHoldOrder(t *testing.T) {
	q := NewHoldQueue(64)
	var mu sync.Mutex
	var out []int
	var wg sync.WaitGroup
	const n = 40
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			turn, _, err := q.Hold(context.Background(), time.Minute)
			if err != nil {
				t.Errorf("hold %d: %v", i, err)
				return
			}
			defer turn.Done()
			mu.Lock()
			out = append(out, i)
			mu.Unlock()
		}()
		waitLen(t, q, i+1)
	}
	if got := q.Release(); got != n {
		t.Fatalf("released %d, want %d", got, n)
	}
	wg.Wait()
	for i, v := range out {
		if v != i {
			t.Fatalf("took turns in order %v, want arrival order", out)
		}
	}
}

// Past its length the request is refused at once; past its wait it ends
// with ErrHoldTimeout; neither hangs.
func TestHoldBounds(t *testing.T) {
	q := NewHoldQueue(2)
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() { _, _, err := q.Hold(context.Background(), 150*time.Millisecond); errs <- err }()
		waitLen(t, q, i+1)
	}
	start := time.Now()
	if _, _, err := q.Hold(context.Background(), time.Minute); !errors.Is(err, ErrHoldFull) || time.Since(start) > 50*time.Millisecond {
		t.Fatalf("third hold: %v after %s, want ErrHoldFull at once", err, time.Since(start))
	}
	for i := 0; i < 2; i++ {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrHoldTimeout) {
				t.Errorf("held past MaxWait: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a held request hung past MaxWait")
		}
	}
	if q.Len() != 0 || q.Release() != 0 {
		t.Errorf("timed-out requests still held")
	}
}

// A client that hangs up leaves the queue; the others still leave in order.
func TestHoldClientHangUp(t *testing.T) {
	q := NewHoldQueue(8)
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error, 1)
	go func() { _, _, err := q.Hold(ctx, time.Minute); gone <- err }()
	waitLen(t, q, 1)
	stay := make(chan error, 1)
	go func() {
		turn, _, err := q.Hold(context.Background(), time.Minute)
		turn.Done()
		stay <- err
	}()
	waitLen(t, q, 2)
	cancel()
	if err := <-gone; !errors.Is(err, context.Canceled) {
		t.Fatalf("hung-up request: %v", err)
	}
	waitLen(t, q, 1)
	if n := q.Release(); n != 1 {
		t.Fatalf("released %d, want the one still waiting", n)
	}
	if err := <-stay; err != nil {
		t.Fatalf("remaining request: %v", err)
	}
}

// Release racing timeouts never strands a request, and a released request
// that gave up at the same moment still takes (and ends) its turn (run
// with -race).
func TestHoldReleaseRace(t *testing.T) {
	for round := 0; round < 50; round++ {
		q := NewHoldQueue(16)
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				turn, _, _ := q.Hold(context.Background(), time.Millisecond)
				turn.Done()
			}()
		}
		time.Sleep(time.Millisecond)
		q.Release()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("a request hung")
		}
	}
}
