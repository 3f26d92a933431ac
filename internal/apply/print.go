package apply

import (
	"fmt"
	"io"
	"strings"
	"time"
)

var marks = map[Action]string{Create: "+", Update: "~", Unchanged: "=", InProgress: "…", Conflict: "!"}

// Write prints the plan for a person: one line per object with what apply
// would do, the endpoint's config diff or the conflict's reason and diff
// under it, and a count.
func (p *Plan) Write(w io.Writer) error {
	var b strings.Builder
	n := map[Action]int{}
	for _, c := range p.Changes {
		n[c.Action]++
		fmt.Fprintf(&b, "%s %s %q: %s", marks[c.Action], c.Kind, c.Name, c.Action)
		if c.Action == Update {
			fmt.Fprintf(&b, " (UpdateEndpoint, blue/green: endpoint_config %q → %q)", c.FromConfig, c.ToConfig)
		}
		if c.Action == Create && c.Kind == KindEndpoint {
			fmt.Fprintf(&b, " (endpoint_config %q)", c.ToConfig)
		}
		b.WriteString("\n")
		if c.Reason != "" {
			fmt.Fprintf(&b, "    %s\n", c.Reason)
		}
		for i, d := range c.Diff {
			if c.Action == Update && i == 0 {
				continue // the from → to line, said above
			}
			fmt.Fprintf(&b, "    %s\n", d)
		}
	}
	fmt.Fprintf(&b, "\nPlan: %d to create, %d to update, %d unchanged", n[Create], n[Update], n[Unchanged])
	if n[InProgress] > 0 {
		fmt.Fprintf(&b, ", %d in progress", n[InProgress])
	}
	if n[Conflict] > 0 {
		fmt.Fprintf(&b, ", %d conflict(s): apply would change nothing and fail", n[Conflict])
	}
	b.WriteString(".\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteSnapshot prints one progress report: the endpoint, the time since
// the watch began, and the rendered state indented under it.
func WriteSnapshot(w io.Writer, s Snapshot) error {
	lines := strings.Split(s.Text, "\n")
	var b strings.Builder
	fmt.Fprintf(&b, "%s [%s] %s\n", s.Endpoint, s.Elapsed.Round(time.Second), lines[0])
	for _, l := range lines[1:] {
		fmt.Fprintf(&b, "    %s\n", strings.TrimLeft(l, " "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
