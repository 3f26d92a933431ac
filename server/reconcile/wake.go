package reconcile

import (
	"context"
	"errors"
	"fmt"

	"github.com/seraihq/serai/contract"
)

// WakeKV lists and deletes the wake keys routers write (contract.WakeKey).
type WakeKV interface {
	// Wakes returns every wake key with its decoded value; a value that
	// does not decode is returned with a zero Wake so it can be deleted.
	Wakes(ctx context.Context) (map[string]contract.Wake, error)
	DeleteWake(ctx context.Context, key string) error
}

// HandleWakes carries out the routers' wake signals once (scale from zero):
// a variant whose group is at 0 is scaled to 1; a wake key is deleted once
// its variant has a passing instance, or when its job or group is gone, or
// when it does not decode. It scales only from 0, so a stale or repeated
// signal never fights the autoscaler. It returns how many groups it scaled.
func HandleWakes(ctx context.Context, kv WakeKV, nomad Nomad, inst Instances) (int, error) {
	wakes, err := kv.Wakes(ctx)
	if err != nil {
		return 0, err
	}
	scaled := 0
	var errs []error
	for key, w := range wakes {
		if w.Endpoint == "" {
			errs = append(errs, kv.DeleteWake(ctx, key))
			continue
		}
		job := contract.JobID(w.Endpoint, w.Generation)
		h, err := nomad.Health(ctx, job)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n, ok := h.Desired[w.Variant]
		if !h.Exists || !ok {
			errs = append(errs, kv.DeleteWake(ctx, key))
			continue
		}
		passing, err := inst.Passing(ctx, w.Endpoint)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if passing[GV{Generation: w.Generation, Variant: w.Variant}] > 0 {
			errs = append(errs, kv.DeleteWake(ctx, key))
			continue
		}
		if n == 0 {
			if err := nomad.Scale(ctx, job, w.Variant, 1, fmt.Sprintf("scale from zero: requests held by %s", w.Router)); err != nil {
				errs = append(errs, err)
				continue
			}
			scaled++
		}
	}
	return scaled, errors.Join(errs...)
}
