package smapi

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// MarshalJSON writes epoch seconds with millisecond precision, as
// SageMaker does; the zero time is written as 0.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("0"), nil
	}
	return []byte(fmt.Sprintf("%.3f", float64(t.UnixMilli())/1000)), nil
}

// UnmarshalJSON reads epoch seconds (a number).
func (t *Time) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("timestamp must be epoch seconds: %w", err)
	}
	if f == 0 {
		t.Time = time.Time{}
		return nil
	}
	if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1e11 {
		return fmt.Errorf("timestamp %v out of range", f)
	}
	sec, frac := math.Modf(f)
	t.Time = time.Unix(int64(sec), int64(math.Round(frac*1e3))*int64(time.Millisecond)).UTC()
	return nil
}

// NewTime wraps t.
func NewTime(t time.Time) Time { return Time{t} }
