package records

import (
	"context"
	"errors"
	"testing"
)

// ListAll sets a corrupt record aside, naming its key and name, and
// returns the others; List (for callers that must see every record)
// fails with the same CorruptError.
func TestListAllSetsCorruptAside(t *testing.T) {
	ctx := context.Background()
	s := Store{KV: NewMemKV()}
	for _, n := range []string{"a", "c"} {
		if err := s.Put(ctx, KindModel, n, &Model{Name: n}, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.KV.CAS(ctx, KindModel.Key("b"), []byte("{"), 0); err != nil {
		t.Fatal(err)
	}
	l, err := ListAll[Model](ctx, s, KindModel)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Records) != 2 || l.Records[0].Name != "a" || l.Records[1].Name != "c" || len(l.Indexes) != 2 {
		t.Fatalf("records %+v", l.Records)
	}
	if len(l.Corrupt) != 1 || l.Corrupt[0].Key != "serai/models/b" || l.Corrupt[0].Name != "b" || !errors.Is(l.Corrupt[0], ErrCorrupt) {
		t.Fatalf("corrupt %+v", l.Corrupt)
	}
	var ce *CorruptError
	if _, _, err := List[Model](ctx, s, KindModel); !errors.As(err, &ce) || ce.Key != "serai/models/b" {
		t.Fatalf("List: %v, want the CorruptError of serai/models/b", err)
	}
	var m Model
	if _, err := s.Get(ctx, KindModel, "b", &m); !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrNotFound) {
		t.Fatalf("Get: %v", err)
	}
}
