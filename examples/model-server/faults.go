package main

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
)

// Fault injection for demos and end-to-end tests of rollouts, set through
// the model's environment (so a "broken model version" is just another
// model record):
//
//	MODEL_SERVER_PING_STATUS=503     /ping answers this status: a version that never becomes healthy
//	MODEL_SERVER_ERROR_EVERY=N       every Nth invocation answers 500: a version that fails a share of requests
//
// Neither is set in normal use.
type faults struct {
	pingStatus int
	errorEvery uint64
	n          atomic.Uint64
}

func faultsFromEnv() (*faults, error) {
	f := &faults{}
	if s := os.Getenv("MODEL_SERVER_PING_STATUS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 100 || v > 599 {
			return nil, fmt.Errorf("MODEL_SERVER_PING_STATUS=%q: want an HTTP status code", s)
		}
		f.pingStatus = v
	}
	if s := os.Getenv("MODEL_SERVER_ERROR_EVERY"); s != "" {
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil || v == 0 {
			return nil, fmt.Errorf("MODEL_SERVER_ERROR_EVERY=%q: want a positive integer", s)
		}
		f.errorEvery = v
	}
	return f, nil
}

func (f *faults) wrap(next http.Handler) http.Handler {
	if f.pingStatus == 0 && f.errorEvery == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/ping" && f.pingStatus != 0:
			http.Error(w, "injected ping failure", f.pingStatus)
			return
		case r.URL.Path == "/invocations" && f.errorEvery != 0 && f.n.Add(1)%f.errorEvery == 0:
			http.Error(w, "injected model error", http.StatusInternalServerError)
			return
		}
		next.ServeHTTP(w, r)
	})
}
