package apply

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
)

// flatten turns a wire shape into path → scalar, e.g.
// "ProductionVariants[v1].InitialInstanceCount" → 2. Lists of variants are
// keyed by VariantName (so reordering is no change and a diff names the
// variant); other lists by index. Empty lists and objects vanish, so nil
// and empty compare equal, as they do on the wire (omitempty).
func flatten(v any) map[string]any {
	b, err := json.Marshal(v)
	if err != nil {
		return map[string]any{"": fmt.Sprintf("unencodable: %v", err)}
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var x any
	if err := d.Decode(&x); err != nil {
		return map[string]any{"": fmt.Sprintf("undecodable: %v", err)}
	}
	out := map[string]any{}
	walk("", x, out)
	return out
}

func walk(path string, x any, out map[string]any) {
	switch x := x.(type) {
	case map[string]any:
		for k, v := range x {
			p := k
			if path != "" {
				p = path + "." + k
			}
			walk(p, v, out)
		}
	case []any:
		for i, v := range x {
			key := strconv.Itoa(i)
			if m, ok := v.(map[string]any); ok {
				if n, ok := m["VariantName"].(string); ok {
					key = n
				}
			}
			walk(path+"["+key+"]", v, out)
		}
	case nil:
	default:
		out[path] = x
	}
}

func show(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(v)
}

// Fields renders a wire shape as sorted "path = value" lines, for text
// output of describe commands.
func Fields(v any) []string {
	m := flatten(v)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+" = "+show(m[k]))
	}
	return out
}
