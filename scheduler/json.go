package scheduler

import (
	"encoding/json"
	"fmt"

	"github.com/hashicorp/nomad/api"
)

// MarshalJob renders a job as `nomad job run -json` reads it:
// {"Job": {...}}, indented, with a trailing newline.
func MarshalJob(job *api.Job) ([]byte, error) {
	b, err := json.MarshalIndent(struct{ Job *api.Job }{job}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("marshal job %s: %w", deref(job.ID), err)
	}
	return append(b, '\n'), nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
